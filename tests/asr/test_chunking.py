"""OpenAI's chunking_strategy on /v1/audio/transcriptions: the field as the openai SDK and curl send
it, and what it changes, on speech_pauses.flac (three sentences, 1.5 s of silence between them)."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from conftest import live_server
from starlette.datastructures import FormData

from server.asr.audio import SAMPLE_RATE, decode_audio
from server.asr.chunking import chunking_of
from server.asr.vad import AUTO, server_vad, split_on_pauses
from server.errors import InvalidRequest

MODEL = "FunAudioLLM/SenseVoiceSmall"
DATA = Path(__file__).parents[1] / "data"
SPEECH = (DATA / "speech_pauses.flac").read_bytes()
META = json.loads((DATA / "speech_pauses.json").read_text())
SLACK = 0.1  # s: the VAD's 32 ms frames and silero's own 30 ms padding


@pytest.fixture(scope="module")
def audio():
    return decode_audio(SPEECH, max_seconds=60)


# --- the field -------------------------------------------------------------------------------------------


def test_absent_or_auto_is_the_server_s_own_chunking():
    assert chunking_of(FormData()) == AUTO
    assert chunking_of(FormData([("chunking_strategy", "auto")])) == AUTO


def test_server_vad_as_the_sdk_s_parts_or_as_json_with_openai_s_defaults():
    parts = FormData([("chunking_strategy[type]", "server_vad"), ("chunking_strategy[silence_duration_ms]", "500")])
    assert chunking_of(parts) == server_vad(0.5, 300, 500)
    whole = FormData([("chunking_strategy", json.dumps({"type": "server_vad", "threshold": 0.7}))])
    assert chunking_of(whole) == server_vad(0.7, 300, 200)


@pytest.mark.parametrize("items", [
    [("chunking_strategy", "fixed")],
    [("chunking_strategy", '{"type": "fixed"}')],
    [("chunking_strategy", "[1, 2]")],
    [("chunking_strategy[type]", "server_vad"), ("chunking_strategy[threshold]", "1.5")],
    [("chunking_strategy[type]", "server_vad"), ("chunking_strategy[silence_duration_ms]", "-1")],
    [("chunking_strategy[type]", "server_vad"), ("chunking_strategy[silence_ms]", "200")],
    [("chunking_strategy[threshold]", "0.5")],
    [("chunking_strategy", "auto"), ("chunking_strategy[type]", "server_vad")],
])
def test_a_bad_chunking_strategy_is_a_400_naming_the_field(items):
    with pytest.raises(InvalidRequest) as err:
        chunking_of(FormData(items))
    assert err.value.param == "chunking_strategy" and err.value.status == 400
    assert err.value.message.startswith("chunking_strategy")


# --- what it changes -------------------------------------------------------------------------------------


def test_silence_duration_decides_which_pauses_end_a_segment(audio):
    assert len(split_on_pauses(audio, max_segment_s=60)) == 3  # the server's own: 1.5 s pauses cut
    assert len(split_on_pauses(audio, max_segment_s=60, chunking=server_vad(0.5, 300, 200))) == 3
    (one,) = split_on_pauses(audio, max_segment_s=60, chunking=server_vad(0.5, 300, 2000))
    assert one.start <= META["speech"][0][0] and one.end >= META["speech"][-1][1] - SLACK


def test_prefix_padding_reaches_back_before_the_speech(audio):
    for prefix_ms in (0, 600):
        segments = split_on_pauses(audio, max_segment_s=60, chunking=server_vad(0.5, prefix_ms, 200))
        for segment, (start, _) in zip(segments, META["speech"], strict=True):
            assert segment.start == pytest.approx(max(0.0, start - prefix_ms / 1000), abs=SLACK)


def test_a_higher_threshold_hears_less_speech(audio):
    def heard(threshold: float) -> float:
        return sum(s.end - s.start for s in split_on_pauses(audio, chunking=server_vad(threshold, 0, 200)))

    assert heard(0.9) <= heard(0.1)


# --- through the openai SDK ------------------------------------------------------------------------------


def test_the_openai_sdk_sends_it_and_the_segments_follow(sensevoice_dir):
    with live_server(asr_model=str(sensevoice_dir)) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)

        def segments(**fields):
            return client.audio.transcriptions.create(model=MODEL, file=("a.flac", SPEECH),
                                                      response_format="verbose_json", **fields).segments

        whole = segments()  # a 10 s clip fits one segment: transcribed whole, as funasr would
        assert len(whole) == 1
        assert [(s.start, s.end, s.text) for s in segments(chunking_strategy="auto")] == \
            [(s.start, s.end, s.text) for s in whole]
        cut = segments(chunking_strategy={"type": "server_vad", "silence_duration_ms": 200})
        assert len(cut) == 3
        for (left, right), (a, b) in zip(zip(cut, cut[1:]), META["pauses"]):
            assert a <= left.end <= b and a <= right.start <= b
        assert len(segments(chunking_strategy={"type": "server_vad", "silence_duration_ms": 2000})) == 1
        with pytest.raises(openai.BadRequestError) as err:
            segments(chunking_strategy={"type": "server_vad", "threshold": 2})
        assert err.value.body["param"] == "chunking_strategy"
