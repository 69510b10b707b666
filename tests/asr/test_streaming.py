"""stream=true: OpenAI's transcript events, one delta per segment as soon as it and those before it
are done, read by the official SDK in strict mode; errors after the start as an error event; a
client that leaves mid-stream stops the rest of its work."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest
from conftest import assert_error_shape, live_server

MODEL = "FunAudioLLM/SenseVoiceSmall"
SPEECH = (Path(__file__).parents[1] / "data" / "speech_pauses.flac").read_bytes()  # 3 segments at 4 s


@pytest.fixture(scope="module")
def server(sensevoice_dir):
    # One segment per forward pass, so a test can hold the passes after the first.
    with live_server(asr_model=str(sensevoice_dir), asr_max_segment_seconds=4, max_batch_size=1) as srv:
        yield srv


@pytest.fixture(scope="module")
def strict(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-local", max_retries=0,
                         _strict_response_validation=True)


def whole(server, **fields) -> dict:
    with server.client() as client:
        response = client.post("/v1/audio/transcriptions", files={"file": ("a.flac", SPEECH)},
                               data={"model": MODEL, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def events(lines: Iterator[str]) -> Iterator[dict]:
    for line in lines:
        if line.startswith("data: "):
            yield json.loads(line.removeprefix("data: "))


@contextmanager
def held_after_first_pass(server, fail: bool = False, free_passes: int = 1) -> Iterator[dict]:
    """The model's forward passes after the first (``free_passes``) wait until ``release`` is set
    or the block exits (or raise, with ``fail``); yields the count of passes and ``release``."""
    batcher = server.runtime.served["asr"].batcher
    original, release = batcher.run_batch, threading.Event()
    seen = {"passes": 0, "release": release}

    def run_batch(items):
        seen["passes"] += 1
        if seen["passes"] > free_passes:
            if fail:
                raise RuntimeError("the model failed")
            release.wait(30)
        return original(items)

    batcher.run_batch = run_batch
    try:
        yield seen
    finally:
        release.set()
        time.sleep(0.2)  # the held pass finishes on the worker thread
        batcher.run_batch = original


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("response_format", ["json", "text"])
def test_the_strict_sdk_reads_one_delta_per_segment_then_done(server, strict, response_format):
    stream = strict.audio.transcriptions.create(model=MODEL, file=("a.flac", SPEECH), stream=True,
                                                response_format=response_format)
    got = list(stream)
    deltas, done = got[:-1], got[-1]
    verbose = whole(server, response_format="verbose_json")
    assert len(verbose["segments"]) == 3 and [e.type for e in deltas] == ["transcript.text.delta"] * 3
    assert done.type == "transcript.text.done"
    assert "".join(e.delta for e in deltas) == done.text == whole(server)["text"] == verbose["text"]
    assert [e.delta.strip() for e in deltas] == [s["text"] for s in verbose["segments"]]
    usage = done.usage
    assert usage.type == "tokens" and usage.total_tokens == usage.input_tokens + usage.output_tokens
    details = usage.input_token_details
    assert details.text_tokens == 3 * 4 and details.audio_tokens + details.text_tokens == usage.input_tokens
    seconds = sum(s["end"] - s["start"] for s in verbose["segments"])
    assert details.audio_tokens * 0.06 == pytest.approx(seconds, abs=0.2)  # 60 ms audio frames


def metric(server, series: str) -> float:
    with server.client() as client:
        text = client.get("/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(series))


def test_streamed_and_whole_transcriptions_count_the_same_tokens_in_the_metrics(strict, server):
    """Token accounting is one place for every route: a streamed transcript adds to the token
    counters what its usage event says, and the same clip answered whole adds as much again."""
    inputs = 'inference_input_tokens_total{model="FunAudioLLM/SenseVoiceSmall"}'
    outputs = 'inference_output_tokens_total{model="FunAudioLLM/SenseVoiceSmall"}'
    before = metric(server, inputs), metric(server, outputs)
    usage = list(strict.audio.transcriptions.create(model=MODEL, file=("a.flac", SPEECH), stream=True))[-1].usage
    after_stream = metric(server, inputs), metric(server, outputs)
    whole(server)
    after_whole = metric(server, inputs), metric(server, outputs)
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert (after_stream[0] - before[0], after_stream[1] - before[1]) == (usage.input_tokens, usage.output_tokens)
    assert (after_whole[0] - after_stream[0], after_whole[1] - after_stream[1]) == (usage.input_tokens,
                                                                                      usage.output_tokens)


def test_the_first_delta_comes_while_later_segments_are_still_queued(server):
    with held_after_first_pass(server) as seen, server.client() as client:
        with client.stream("POST", "/v1/audio/transcriptions", files={"file": ("a.flac", SPEECH)},
                           data={"model": MODEL, "stream": "true"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            received = events(response.iter_lines())
            first = next(received)
            assert first["type"] == "transcript.text.delta"
            assert wait_for(lambda: seen["passes"] == 2)  # the second segment's pass is held
            seen["release"].set()
            rest = list(received)
    assert [e["type"] for e in rest] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    assert first["delta"] + "".join(e["delta"] for e in rest[:-1]) == rest[-1]["text"] == whole(server)["text"]


def test_a_client_that_leaves_mid_stream_drops_its_queued_segments(server):
    stats = server.runtime.served["asr"].batcher.stats
    dropped, computed = stats.dropped, stats.computed
    with held_after_first_pass(server) as seen:
        with server.client() as client:
            with client.stream("POST", "/v1/audio/transcriptions", files={"file": ("a.flac", SPEECH)},
                               data={"model": MODEL, "stream": "true"}) as response:
                assert next(events(response.iter_lines()))["type"] == "transcript.text.delta"
        # The connection is closed after the first segment: what is queued is dropped, and the
        # rest of the upload is not read on.
        assert wait_for(lambda: stats.dropped > dropped), "the queued segment was not dropped"
    time.sleep(0.5)
    assert seen["passes"] <= 2 and stats.computed - computed <= 2  # never the third segment


def test_a_client_that_leaves_before_the_first_delta_drops_its_queued_segments(server):
    stats = server.runtime.served["asr"].batcher.stats
    dropped = stats.dropped
    with held_after_first_pass(server, free_passes=0) as seen:
        with server.client() as client:
            with client.stream("POST", "/v1/audio/transcriptions", files={"file": ("a.flac", SPEECH)},
                               data={"model": MODEL, "stream": "true"}) as response:
                assert response.status_code == 200  # headers only: the first segment's pass is held
                assert wait_for(lambda: seen["passes"] == 1)
        # What was queued is dropped; the rest of the upload is not read on.
        assert wait_for(lambda: stats.dropped > dropped), "the queued segments were not dropped"
    time.sleep(0.5)
    assert seen["passes"] == 1


def test_a_failure_after_the_stream_started_is_an_error_event(server, strict):
    with held_after_first_pass(server, fail=True), server.client() as client:
        with client.stream("POST", "/v1/audio/transcriptions", files={"file": ("a.flac", SPEECH)},
                           data={"model": MODEL, "stream": "true"}) as response:
            got = list(events(response.iter_lines()))
    assert [e["type"] for e in got] == ["transcript.text.delta", "error"]
    assert got[1]["error"] == {"message": "Internal server error.", "type": "server_error", "param": None,
                               "code": "internal_error"}
    with held_after_first_pass(server, fail=True):
        stream = strict.audio.transcriptions.create(model=MODEL, file=("a.flac", SPEECH), stream=True)
        assert next(stream).type == "transcript.text.delta"
        with pytest.raises(openai.APIError, match="Internal server error"):
            next(stream)


def test_the_request_timeout_mid_stream_is_an_error_event(server):
    with held_after_first_pass(server), server.client() as client:
        with client.stream("POST", "/v1/audio/transcriptions", files={"file": ("a.flac", SPEECH)},
                           data={"model": MODEL, "stream": "true"}, headers={"X-Request-Timeout": "1"}) as response:
            got = list(events(response.iter_lines()))
    assert [e["type"] for e in got] == ["transcript.text.delta", "error"]
    assert got[1]["error"]["code"] == "timeout" and got[1]["error"]["type"] == "server_error"


@pytest.mark.parametrize("response_format", ["srt", "vtt", "verbose_json"])
def test_stream_with_a_whole_document_format_is_a_clear_400(server, response_format):
    with server.client() as client:
        response = client.post("/v1/audio/transcriptions", files={"file": ("a.flac", SPEECH)},
                               data={"model": MODEL, "stream": "true", "response_format": response_format})
    error = assert_error_shape(response, 400, "unsupported_value")
    assert error["param"] == "response_format" and "json or text" in error["message"]


def test_bad_audio_with_stream_is_still_a_plain_400(server):
    with server.client() as client:
        response = client.post("/v1/audio/transcriptions", files={"file": ("a.mp3", b"not audio" * 100)},
                               data={"model": MODEL, "stream": "true"})
    assert assert_error_shape(response, 400, "invalid_audio")["param"] == "file"
