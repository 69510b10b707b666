"""server.asr.vad.split_on_pauses on real (synthesised) speech with known pauses.

tests/data/speech_pauses.flac holds three espeak-ng sentences with 1.5 s of silence between them;
speech_pauses.json says where each sentence and pause lies (scripts/make_test_audio.py made both).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import in_new_thread

from server.asr.audio import SAMPLE_RATE, decode_audio
from server.asr.vad import (
    Segment,
    borrowed_model,
    _mono_tensor,
    _windows_to_find_speech,
    has_speech,
    plan_segments,
    split_on_pauses,
)

DATA = Path(__file__).parents[1] / "data"
THREADS_AT_START = torch.get_num_threads()  # read before silero_vad is first imported
SLACK = 0.1  # s: the VAD's 32 ms frames and silero's own 30 ms padding


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, dict]:
    audio = decode_audio((DATA / "speech_pauses.flac").read_bytes(), max_seconds=60)
    meta = json.loads((DATA / "speech_pauses.json").read_text())
    assert len(audio) / SAMPLE_RATE == pytest.approx(meta["duration"], abs=0.001)
    return audio, meta


def assert_well_formed(segments: list[Segment], duration: float, max_segment_s: float) -> None:
    assert segments == sorted(segments, key=lambda s: s.start)
    for seg in segments:
        assert 0 <= seg.start < seg.end <= duration + 1e-9
        assert seg.end - seg.start <= max_segment_s + 1e-9
    for a, b in zip(segments, segments[1:]):
        assert a.end <= b.start  # never overlapping


def in_pause(t: float, pause: list[float]) -> bool:
    return pause[0] <= t <= pause[1]


def test_one_segment_per_sentence_cut_inside_the_pauses(clip):
    audio, meta = clip
    segments = split_on_pauses(audio, max_segment_s=60)
    assert len(segments) == 3
    assert_well_formed(segments, meta["duration"], 60)
    for seg, (start, end) in zip(segments, meta["speech"]):
        assert seg.start <= start + SLACK and seg.end >= end - SLACK  # the sentence is inside
        assert seg.start >= start - 0.2 - SLACK and seg.end <= end + 0.2 + SLACK  # padded <= 0.2 s
    for a, b, pause in zip(segments, segments[1:], meta["pauses"]):
        assert in_pause(a.end, pause) and in_pause(b.start, pause)


def test_short_pause_limit_still_splits_at_pauses_with_noise(clip):
    # Low background noise (-50 dBFS) in the pauses is not speech.
    audio, meta = clip
    noisy = audio + 0.003 * np.random.default_rng(0).standard_normal(len(audio)).astype(np.float32)
    segments = split_on_pauses(noisy, max_segment_s=5)
    assert len(segments) == 3
    for a, b, pause in zip(segments, segments[1:], meta["pauses"]):
        assert in_pause(a.end, pause) and in_pause(b.start, pause)


@pytest.mark.parametrize("max_segment_s", [1.0, 2.0, 3.0])
def test_segments_never_exceed_the_limit_and_cover_the_speech(clip, max_segment_s):
    audio, meta = clip
    segments = split_on_pauses(audio, max_segment_s=max_segment_s)
    assert_well_formed(segments, meta["duration"], max_segment_s)
    covered = np.zeros(len(audio), bool)
    for seg in segments:
        covered[round(seg.start * SAMPLE_RATE): round(seg.end * SAMPLE_RATE)] = True
    for start, end in meta["speech"]:
        inner = covered[round((start + SLACK) * SAMPLE_RATE): round((end - SLACK) * SAMPLE_RATE)]
        assert inner.all()  # no speech left out: the pieces of a cut sentence touch
    for pause in meta["pauses"]:
        middle = (pause[0] + pause[1]) / 2
        assert not any(seg.start < middle < seg.end for seg in segments)  # never merged across a pause
    # The sentences last 2.8, 1.9 and 1.5 s: a 1 s limit cuts each of them.
    assert len(segments) >= (3 if max_segment_s >= 3 else 5 if max_segment_s == 2 else 8)


def test_long_continuous_speech_is_hard_cut(clip):
    audio, meta = clip
    # The three sentences back to back, three times: 20 s of speech with no pause longer than
    # espeak's gaps between words.
    speech = [audio[round(s * SAMPLE_RATE): round(e * SAMPLE_RATE)] for s, e in meta["speech"]]
    tiled = np.concatenate(speech * 3)
    duration = len(tiled) / SAMPLE_RATE
    segments = split_on_pauses(tiled, max_segment_s=5)
    assert_well_formed(segments, duration, 5)
    assert len(segments) >= int(np.ceil(duration / 5))
    assert segments[0].start <= SLACK and segments[-1].end >= duration - SLACK
    gaps = sum(b.start - a.end for a, b in zip(segments, segments[1:]))
    assert gaps <= 0.5  # covers the stretch, pieces touch


def test_silence_and_noise_have_no_speech():
    rng = np.random.default_rng(0)
    assert split_on_pauses(np.zeros(5 * SAMPLE_RATE, np.float32)) == []
    assert split_on_pauses((0.003 * rng.standard_normal(5 * SAMPLE_RATE)).astype(np.float32)) == []
    assert split_on_pauses((0.05 * rng.standard_normal(5 * SAMPLE_RATE)).astype(np.float32)) == []
    assert split_on_pauses(np.zeros(0, np.float32)) == []
    assert split_on_pauses(np.zeros(100, np.float32)) == []  # shorter than one VAD frame


def test_a_short_clip_with_speech_gives_segments(clip):
    audio, meta = clip
    start, end = meta["speech"][1]
    piece = audio[round((start - 0.5) * SAMPLE_RATE): round((end + 0.5) * SAMPLE_RATE)]
    segments = split_on_pauses(piece, max_segment_s=30)
    assert len(segments) == 1
    assert segments[0].start < 0.5 + SLACK and segments[0].end > len(piece) / SAMPLE_RATE - 0.5 - SLACK


def _odd_clips(audio: np.ndarray, meta: dict) -> list[np.ndarray]:
    """Pieces of the speech clip and made-up sounds where deciding early could go wrong: speech that
    starts late, blips shorter than silero's 250 ms minimum, blips that end right at one of the
    windows (8, 16, 32, 64... x 32 ms) where has_speech looks for a settled region, noise and tones."""
    rng = np.random.default_rng(7)
    clips = [audio, np.zeros(SAMPLE_RATE, np.float32)]
    for _ in range(12):  # random pieces, 0.3-6 s, from anywhere in the clip
        length = int(rng.uniform(0.3, 6) * SAMPLE_RATE)
        start = int(rng.integers(0, len(audio) - length))
        clips.append(audio[start: start + length])
    first_start, first_end = meta["speech"][0]
    word = audio[round(first_start * SAMPLE_RATE): round(first_end * SAMPLE_RATE)]
    for blip_s in (0.1, 0.2, 0.26, 0.4, 1.0):
        for ends_at in (0.512, 1.024, 1.1, 2.048, 4.096):  # seconds: at and near the check points
            piece = 0.003 * rng.standard_normal(5 * SAMPLE_RATE).astype(np.float32)
            n = int(blip_s * SAMPLE_RATE)
            end = int(ends_at * SAMPLE_RATE)
            piece[max(0, end - n): end] += word[:n][-(end - max(0, end - n)):]
            clips.append(piece)
    # A blip still "open" at a check point, which a pause then ends short of 250 ms: silero drops
    # it, and a decision taken on the open region would be wrong (found by search over these shapes).
    for blip_s, before_check_s in ((0.24, 0.096), (0.26, 0.032), (0.26, 0.064), (0.3, 0.064)):
        piece = np.zeros(3 * SAMPLE_RATE, np.float32)
        n, end = int(blip_s * SAMPLE_RATE), int((1.024 - before_check_s) * SAMPLE_RATE)
        piece[end - n: end] = word[12000: 12000 + n]
        clips.append(piece)
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    clips += [(0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
              (0.05 * rng.standard_normal(4 * SAMPLE_RATE)).astype(np.float32)]
    return clips


def test_has_speech_agrees_with_split_on_pauses(clip):
    audio, meta = clip
    clips = _odd_clips(audio, meta)
    answers = [(has_speech(c), bool(split_on_pauses(c, max_segment_s=30))) for c in clips]
    assert [quick for quick, _ in answers] == [full for _, full in answers]
    assert 5 < sum(full for _, full in answers) < len(clips) - 5  # both kinds of answer were tested


def test_has_speech_decides_from_the_start_of_speech(clip):
    audio, meta = clip
    first_start, _ = meta["speech"][0]
    with borrowed_model() as model:
        windows = _windows_to_find_speech(_mono_tensor(audio, SAMPLE_RATE), model, SAMPLE_RATE)
    all_windows = -(-len(audio) // 512)
    assert windows is not None and windows < all_windows / 2
    assert windows * 512 / SAMPLE_RATE > first_start  # it did read up to the speech


def test_deterministic_and_thread_safe(clip):
    audio, _ = clip
    expected = {m: split_on_pauses(audio, max_segment_s=m) for m in (60, 2)}
    with ThreadPoolExecutor(8) as pool:
        jobs = [(m, pool.submit(split_on_pauses, audio, max_segment_s=m)) for _ in range(4) for m in (60, 2)]
        for m, job in jobs:
            assert job.result() == expected[m]


def test_leaves_torch_thread_settings_alone(clip):
    # silero_vad's import sets torch to 1 thread, and the VAD runs on 1 thread; neither may leak
    # into the rest of the process: not the caller's thread, not threads started later or meanwhile.
    audio, _ = clip
    split_on_pauses(audio[: 2 * SAMPLE_RATE])
    assert torch.get_num_threads() == THREADS_AT_START  # this thread imported silero_vad (or now did)
    default = in_new_thread(torch.get_num_threads)

    def worker():
        before = torch.get_num_threads()
        split_on_pauses(audio[: 2 * SAMPLE_RATE])
        return before, torch.get_num_threads()

    assert in_new_thread(worker) == (default, default)
    assert in_new_thread(torch.get_num_threads) == default
    assert torch.get_num_threads() == THREADS_AT_START


def test_rejects_unsupported_rates():
    with pytest.raises(ValueError):
        split_on_pauses(np.zeros(44100, np.float32), sample_rate=44100)


# --- the planning step on its own (sample indices, no model) ------------------------------------

SR = 1000  # samples per second, to keep the numbers readable


def test_plan_merges_short_gaps_but_not_long_ones():
    audio = np.zeros(30 * SR, np.float32)
    regions = [(1000, 3000), (3500, 5000), (7000, 9000)]  # gaps of 0.5 s and 2 s
    assert plan_segments(regions, audio, max_len=30 * SR, sample_rate=SR) == [(800, 5200), (6800, 9200)]


def test_plan_does_not_merge_past_the_limit():
    audio = np.zeros(30 * SR, np.float32)
    regions = [(1000, 3000), (3500, 5000)]
    out = plan_segments(regions, audio, max_len=3 * SR, sample_rate=SR)
    assert len(out) == 2 and all(e - s <= 3 * SR for s, e in out)
    assert out[0][1] <= out[1][0]  # the 0.5 s gap is shared, not overlapped


def test_plan_pads_at_most_half_of_each_gap_and_within_the_audio():
    audio = np.zeros(10 * SR, np.float32)
    out = plan_segments([(50, 2000), (3100, 9950)], audio, max_len=10 * SR, sample_rate=SR)
    # 0.05 s of room before the first: all of it; the 1.1 s gap (too long to merge): 0.2 s each side;
    # 0.05 s after the last: all of it.
    assert out == [(0, 2200), (2900, 10000)]


def test_plan_cuts_long_speech_at_its_quietest_point():
    t = np.arange(20 * SR) / SR
    audio = (0.5 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
    audio[8500:8520] = 0  # a quiet 20 ms, 0.5 s before the 9 s limit
    out = plan_segments([(0, 20 * SR)], audio, max_len=9 * SR, sample_rate=SR)
    assert 8500 <= out[0][1] <= 8520  # cut in the quiet frame, not at the limit
    assert all(e - s <= 9 * SR for s, e in out)
    assert out[0][0] == 0 and out[-1][1] == 20 * SR
    assert all(a[1] == b[0] for a, b in zip(out, out[1:]))  # pieces touch: nothing lost


def test_plan_cuts_within_the_limit_without_a_quiet_point():
    audio = np.full(25 * SR, 0.5, np.float32)
    out = plan_segments([(0, 25 * SR)], audio, max_len=10 * SR, sample_rate=SR)
    assert all(8 * SR <= e - s <= 10 * SR for s, e in out[:-1])  # cut in the last 2 s before the limit
    assert out[0][0] == 0 and out[-1][1] == 25 * SR
    assert all(a[1] == b[0] for a, b in zip(out, out[1:]))
