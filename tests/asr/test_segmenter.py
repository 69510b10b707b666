"""StreamingSegmenter: split_on_pauses over audio fed in pieces gives the very segments it gives
over the whole audio, whatever the pieces, and hands each out before the audio ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.asr.audio import SAMPLE_RATE as SR
from server.asr.audio import decode_audio
from server.asr.segmenter import StreamingSegmenter
from server.asr.vad import AUTO, _idle_models, server_vad, split_on_pauses

SPEECH = decode_audio((Path(__file__).parents[1] / "data" / "speech_pauses.flac").read_bytes(), max_seconds=60)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), np.float32)


CASES = {
    # three sentences, 1.5 s pauses
    "pauses": SPEECH,
    # digital silence between (the VAD skips it: several audible stretches), short and long
    "stretches": np.concatenate([SPEECH, _silence(0.7), SPEECH[: 4 * SR], _silence(2), SPEECH]),
    # one audible stretch throughout, with pauses of every length
    "noisy": np.concatenate([SPEECH, SPEECH[: int(3.4 * SR)], SPEECH]) + np.random.default_rng(0).normal(
        0, 0.003, 2 * len(SPEECH) + int(3.4 * SR)).astype(np.float32),
    # no pause at all: one long region, cut at its quietest points
    "unbroken": np.concatenate([SPEECH[int(0.5 * SR): int(3.3 * SR)]] * 4),
}
CHUNKINGS = {"auto": AUTO, "server_vad": server_vad(0.5, 300, 200), "short_silence": server_vad(0.3, 600, 40)}


def whole(audio: np.ndarray, max_segment_s: float, chunking) -> list[tuple[int, int]]:
    return [(round(s.start * SR), round(s.end * SR))
            for s in split_on_pauses(audio, max_segment_s=max_segment_s, chunking=chunking)]


def streamed(audio: np.ndarray, max_segment_s: float, chunking, piece: int) -> tuple[list[tuple[int, int]], list[int]]:
    """The segments, and for each how much audio had been fed when it was handed out."""
    segmenter = StreamingSegmenter(max_segment_s=max_segment_s, chunking=chunking)
    segments, fed_when = [], []
    for start in range(0, len(audio), piece):
        for segment in segmenter.feed(audio[start: start + piece]):
            segments.append(segment)
            fed_when.append(min(start + piece, len(audio)))
    for segment in segmenter.finish():
        segments.append(segment)
        fed_when.append(len(audio))
    return segments, fed_when


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("chunking", CHUNKINGS)
@pytest.mark.parametrize("max_segment_s", [30, 2])
def test_the_segments_are_split_on_pauses_over_the_whole_audio(case, chunking, max_segment_s):
    audio = CASES[case]
    expected = whole(audio, max_segment_s, CHUNKINGS[chunking])
    assert expected
    for piece in (777, SR, 5 * SR + 1):  # a VAD window and a half, a second, more than a pause
        assert streamed(audio, max_segment_s, CHUNKINGS[chunking], piece)[0] == expected, piece


def test_each_segment_is_handed_out_as_soon_as_what_follows_it_is_read():
    audio = CASES["stretches"]
    segments, fed_when = streamed(audio, 30, AUTO, SR)
    assert len(segments) == 7
    # The first sentence ends at 3.3 s; the next starts at 4.8 s: the first is out once that start
    # is read and decided (a second or so later), long before the audio's 27 s end.
    assert fed_when[0] <= 7 * SR
    assert all(when < len(audio) for when in fed_when[:-1])
    for (_, end), when in zip(segments, fed_when):
        assert when - end <= 4 * SR  # never held back long past its own end


def test_the_vad_model_goes_back_to_the_pool_also_when_abandoned():
    before = len(_idle_models)
    segmenter = StreamingSegmenter(max_segment_s=30)
    segmenter.feed(SPEECH[: 2 * SR])
    assert len(_idle_models) <= before  # borrowed while the stretch is read
    segmenter.close()
    assert len(_idle_models) >= 1 and len(_idle_models) >= before
