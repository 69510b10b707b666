"""An upload is read, scanned for speech and queued as a pipeline: each segment goes on the batcher
as soon as the voice detection has closed it, while the rest of the file is still decoded and
scanned. The answer is the whole-file path's, to the segment; the first streamed text comes
before the decoding ends; a limit found mid-file is the stream's error event."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from audio_files import encode
from conftest import live_server

from server.asr.audio import SAMPLE_RATE as SR
from server.asr.audio import AudioReader, decode_audio
from server.asr.vad import split_on_pauses

MODEL = "FunAudioLLM/SenseVoiceSmall"
SPEECH = decode_audio((Path(__file__).parents[1] / "data" / "speech_pauses.flac").read_bytes(), max_seconds=60)
# 31 s, one audible stretch (a little noise throughout): longer than a segment, so it is read on
# in steps rather than transcribed whole.
LONG = np.clip(np.concatenate([SPEECH] * 3) + np.random.default_rng(3).normal(0, 0.002, 3 * len(SPEECH)),
               -1, 1).astype(np.float32)
LONG_WAV = encode(LONG[None, :], SR, "wav_s16")
# 103 s: long enough that its reading goes on after the first segments are queued.
LONGER_WAV = encode(np.concatenate([LONG] * 3 + [SPEECH])[None, :], SR, "wav_s16")


@pytest.fixture(scope="module")
def server(sensevoice_dir):
    with live_server(asr_model=str(sensevoice_dir)) as srv:
        yield srv


def post(srv, data: bytes, **fields):
    with srv.client() as client:
        return client.post("/v1/audio/transcriptions", files={"file": ("a.wav", data)}, data={"model": MODEL, **fields})


def deltas_and_done(srv, data: bytes, on_event=None) -> list[dict]:
    got = []
    with srv.client() as client:
        with client.stream("POST", "/v1/audio/transcriptions", files={"file": ("a.wav", data)},
                           data={"model": MODEL, "stream": "true"}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    got.append(json.loads(line.removeprefix("data: ")))
                    if on_event:
                        on_event(got[-1])
    return got


def test_the_answer_is_the_whole_file_path_s_segment_for_segment(server):
    audio = decode_audio(LONG_WAV, max_seconds=3600)
    expected = split_on_pauses(audio, max_segment_s=30)
    assert len(expected) >= 5
    got = post(server, LONG_WAV, response_format="verbose_json").json()
    assert [(s["start"], s["end"]) for s in got["segments"]] == [(round(s.start, 3), round(s.end, 3)) for s in expected]
    # Each segment's text is that audio's alone, as a clip transcribed whole.
    for segment, span in zip(got["segments"], expected):
        clip = audio[round(span.start * SR): round(span.end * SR)]
        assert segment["text"] == post(server, encode(clip[None, :], SR, "wav_s16")).json()["text"]
    streamed = deltas_and_done(server, LONG_WAV)
    assert streamed[-1]["type"] == "transcript.text.done" and streamed[-1]["text"] == got["text"]
    assert len(streamed) == 1 + sum(1 for s in got["segments"])


def test_the_first_text_comes_before_the_decoding_ends(server, monkeypatch):
    """A slow source: each read of the upload takes a while; the first delta still arrives before
    its last read."""
    read = AudioReader.read
    times: dict[str, float] = {}
    lock = threading.Lock()

    def slow_read(self, samples):
        out = read(self, samples)
        time.sleep(0.4)
        if self.done:
            with lock:
                times.setdefault("decoded", time.monotonic())
        return out

    def on_event(event):
        if event["type"] == "transcript.text.delta":
            times.setdefault("first_delta", time.monotonic())

    monkeypatch.setattr(AudioReader, "read", slow_read)
    events = deltas_and_done(server, LONGER_WAV, on_event)
    assert events[-1]["type"] == "transcript.text.done"
    assert times["first_delta"] < times["decoded"]


def test_a_limit_passed_mid_file_is_the_stream_s_error_event(sensevoice_dir):
    # The first 4 s decode and start the stream; the limit is passed at 20 s, while reading on.
    with live_server(asr_model=str(sensevoice_dir), asr_max_segment_seconds=4, asr_max_audio_seconds=20) as srv:
        events = deltas_and_done(srv, LONG_WAV)
        assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "audio_too_long"
        assert all(e["type"] == "transcript.text.delta" for e in events[:-1])
        whole = post(srv, LONG_WAV)
        assert whole.status_code == 400 and whole.json()["error"]["code"] == "audio_too_long"
        # Nothing is left behind: the same server answers the next upload in full.
        assert post(srv, encode(SPEECH[None, :], SR, "wav_s16")).status_code == 200
        assert srv.runtime.served["asr"].service.uploads.held_seconds == 0

