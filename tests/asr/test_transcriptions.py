"""/v1/audio/transcriptions on a tiny SenseVoiceSmall loaded through the real path, against funasr."""

from __future__ import annotations

import concurrent.futures
import io
import json
import re
from pathlib import Path

import numpy as np
import openai
import pytest
from audio_files import encode
from conftest import live_server

from server.asr.audio import SAMPLE_RATE, decode_audio
from server.asr.model import AsrItem

MODEL = "FunAudioLLM/SenseVoiceSmall"
DATA = Path(__file__).parents[1] / "data"
SPEECH = (DATA / "speech_pauses.flac").read_bytes()
PAUSES = json.loads((DATA / "speech_pauses.json").read_text())["pauses"]
TAG = re.compile(r"<\|[^|]*\|>")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return decode_audio(SPEECH, max_seconds=60)


@pytest.fixture(scope="module")
def first_sentence(speech) -> np.ndarray:
    return speech[: int(PAUSES[0][1] * SAMPLE_RATE)]  # up to the end of the first pause


@pytest.fixture(scope="module")
def reference(sensevoice_dir):
    from funasr import AutoModel

    return AutoModel(model=str(sensevoice_dir), disable_update=True, device="cpu", ncpu=2, disable_pbar=True)


@pytest.fixture(scope="module")
def server(sensevoice_dir):
    with live_server(asr_model=str(sensevoice_dir), api_keys=["sk-test"]) as srv:
        yield srv


def wav(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    return encode(samples[None, :], rate, "wav_s16")


def transcribe(srv, data: bytes, status: int = 200, filename: str = "clip.wav", **fields) -> dict | str:
    with srv.client(headers={"Authorization": "Bearer sk-test"}) as client:
        response = client.post("/v1/audio/transcriptions", files={"file": (filename, data)},
                               data={"model": MODEL, **fields})
    assert response.status_code == status, response.text
    if fields.get("response_format") in ("text", "srt", "vtt"):
        return response.text
    return response.json()


def reference_text(reference, audio: np.ndarray, language: str, use_itn: bool) -> str:
    raw = reference.generate(input=audio, language=language, use_itn=use_itn, disable_pbar=True)[0]["text"]
    return TAG.sub("", raw).strip()


# ---- fidelity -------------------------------------------------------------------------------------


@pytest.mark.parametrize("language, use_itn", [("auto", True), ("en", True), ("en", False), ("zh", True)])
def test_text_equals_funasr_generate_on_an_unsplit_clip(server, reference, first_sentence, language, use_itn):
    audio = decode_audio(wav(first_sentence), max_seconds=60)  # what the server will see
    got = transcribe(server, wav(first_sentence), language=language, use_itn=str(use_itn).lower())
    assert got["text"] == reference_text(reference, audio, language, use_itn)
    assert got["text"]  # not trivially empty


def test_a_clip_transcribes_the_same_alone_and_batched(server, first_sentence, speech):
    probe = wav(first_sentence)
    alone = transcribe(server, probe)["text"]
    rng = np.random.default_rng(5)
    spans = [sorted(pair) for pair in rng.uniform(0, 10, size=(12, 2))]
    others = [wav(speech[int(a * SAMPLE_RATE): int(b * SAMPLE_RATE)]) for a, b in spans if b - a > 0.8]

    def one_client(i: int) -> str:
        transcribe(server, others[i % len(others)])
        return transcribe(server, probe)["text"]

    batcher = server.runtime.served["asr"].batcher
    before = batcher.stats.batches
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one_client, range(16)))
    assert batcher.stats.batches - before < 32  # clips of different requests shared forward passes
    assert results == [alone] * 16


def test_features_are_computed_before_the_queue_and_change_nothing(server, first_sentence, speech):
    """Request preparation computes each segment's front-end features (off the model's worker
    thread); the adapter's results are the same as when it computes them itself."""
    model = server.runtime.served["asr"].service.model
    items = [AsrItem(first_sentence), AsrItem(speech[SAMPLE_RATE: 5 * SAMPLE_RATE], language="en", use_itn=False)]
    prepared = [model.with_features(item) for item in items]
    assert model.run_batch(prepared) == model.run_batch(items)

    batcher = server.runtime.served["asr"].batcher
    original, seen = batcher.run_batch, []
    batcher.run_batch = lambda batch: (seen.extend(item.features is not None for item in batch), original(batch))[1]
    try:
        transcribe(server, wav(first_sentence))
        longer = np.tile(speech, -(-35 * SAMPLE_RATE // len(speech)))  # over 30 s: cut at its pauses
        transcribe(server, wav(longer))
    finally:
        batcher.run_batch = original
    assert len(seen) > 2 and all(seen)


# ---- formats --------------------------------------------------------------------------------------

LOSSLESS = ["wav_s16", "wav_s24", "wav_f32", "flac"]
LOSSY = ["mp3", "m4a_aac", "ogg_vorbis", "ogg_opus", "webm_opus"]


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_formats_give_the_same_text_as_the_wav(server, first_sentence, name):
    want = transcribe(server, wav(first_sentence))["text"]
    assert transcribe(server, encode(first_sentence[None, :], SAMPLE_RATE, name), filename=f"a.{name}")["text"] == want


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_formats_decode_and_transcribe_what_the_codec_delivers(server, reference, first_sentence, name):
    # A random-weight model turns the codec's small changes into other words, so the check is
    # fidelity on the decoded audio: the server's text equals funasr's on the same samples.
    data = encode(first_sentence[None, :], SAMPLE_RATE, name)
    audio = decode_audio(data, max_seconds=60)
    assert abs(len(audio) / SAMPLE_RATE - len(first_sentence) / SAMPLE_RATE) < 0.1
    assert transcribe(server, data)["text"] == reference_text(reference, audio, "auto", True)


@pytest.mark.parametrize("rate", [44100, 48000])
def test_stereo_at_cd_and_video_rates(server, reference, first_sentence, rate):
    upsampled = np.interp(np.arange(0, len(first_sentence), SAMPLE_RATE / rate), np.arange(len(first_sentence)),
                          first_sentence).astype(np.float32)
    data = encode(np.stack([upsampled, upsampled]), rate, "wav_s16")
    audio = decode_audio(data, max_seconds=60)
    assert abs(len(audio) - len(first_sentence)) < SAMPLE_RATE * 0.01
    assert transcribe(server, data)["text"] == reference_text(reference, audio, "auto", True)


# ---- long audio -----------------------------------------------------------------------------------


def test_long_audio_is_cut_inside_the_pauses(sensevoice_dir, speech):
    with live_server(asr_model=str(sensevoice_dir), asr_max_segment_seconds=4) as srv:
        with srv.client() as client:
            got = client.post("/v1/audio/transcriptions", files={"file": ("a.flac", SPEECH)},
                              data={"model": "SenseVoiceSmall", "response_format": "verbose_json"}).json()
    segments = got["segments"]
    assert len(segments) == 3 and [s["id"] for s in segments] == [0, 1, 2]
    for (left, right), (a, b) in zip(zip(segments, segments[1:]), PAUSES):
        assert a <= left["end"] <= b and a <= right["start"] <= b
    assert all(s["end"] - s["start"] <= 4 for s in segments)
    assert got["duration"] == pytest.approx(len(speech) / SAMPLE_RATE, abs=0.01)
    assert got["text"] == " ".join(s["text"] for s in segments if s["text"]) or any(
        s["language"] in ("zh", "yue", "ja") for s in segments)
    for s in segments:
        assert s["emotion"] and s["event"] and s["language"]
        assert "<|" not in s["text"]


def test_silence_is_200_with_empty_text(server):
    silence = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    assert transcribe(server, wav(silence)) == {"text": "", "usage": {"type": "duration", "seconds": 3.0}}
    verbose = transcribe(server, wav(silence), response_format="verbose_json")
    assert verbose["segments"] == [] and verbose["duration"] == pytest.approx(3.0)
    assert verbose["language"] == "unknown"  # nothing said, none requested: never an empty string
    assert transcribe(server, wav(silence), response_format="verbose_json", language="ja")["language"] == "japanese"


def test_sound_without_speech_is_empty_and_digital_silence_never_queued(server):
    """A short clip is queued while the VAD runs alongside; when the VAD finds no speech the queued
    item is dropped or its result ignored. Digital silence is not even queued."""
    stats = server.app.state.runtime.served["asr"].batcher.stats
    rng = np.random.default_rng(3)
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    for clip in (0.02 * rng.standard_normal(2 * SAMPLE_RATE), 0.1 * np.sin(2 * np.pi * 440 * t)):
        verbose = transcribe(server, wav(clip.astype(np.float32)), response_format="verbose_json")
        assert verbose["text"] == "" and verbose["segments"] == []
    submitted = stats.submitted
    assert transcribe(server, wav(np.zeros(SAMPLE_RATE, dtype=np.float32)))["text"] == ""
    assert stats.submitted == submitted


# ---- response formats, through the official client -------------------------------------------------


def test_openai_client_every_response_format(server, first_sentence):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-test", max_retries=0)
    data = wav(first_sentence)
    plain = client.audio.transcriptions.create(model=MODEL, file=("a.wav", data))
    text = client.audio.transcriptions.create(model=MODEL, file=("a.wav", data), response_format="text")
    srt = client.audio.transcriptions.create(model=MODEL, file=("a.wav", data), response_format="srt")
    vtt = client.audio.transcriptions.create(model=MODEL, file=("a.wav", data), response_format="vtt")
    verbose = client.audio.transcriptions.create(
        model=MODEL, file=("a.wav", data), response_format="verbose_json", timestamp_granularities=["segment"],
        language="en", prompt="ignored", temperature=0.0,
    )
    assert plain.text and text.strip() == plain.text
    assert re.match(r"1\n00:00:00,000 --> 00:00:0\d,\d{3}\n", srt) and plain.text in srt
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ") and plain.text in vtt
    assert verbose.duration == pytest.approx(len(first_sentence) / SAMPLE_RATE, abs=0.01)
    assert verbose.segments[0].start == 0 and verbose.segments[0].text == verbose.text
    assert verbose.language == "english"  # forced language, named as OpenAI names it


def test_priority_is_a_form_field_the_openai_client_sends_through_extra_body(server, first_sentence):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-test", max_retries=0)
    data = wav(first_sentence)
    texts = {p: client.audio.transcriptions.create(model=MODEL, file=("a.wav", data), extra_body={"priority": p}).text
             for p in ("interactive", "background")}
    assert texts["interactive"] == texts["background"] == transcribe(server, data)["text"]
    with server.client() as http:
        metrics = http.get("/metrics").text
    for p in ("interactive", "background"):  # the priority reached the batcher
        assert f'inference_queue_wait_seconds_count{{model="{MODEL}",priority="{p}",tenant="key-1"}} 1.0' in metrics
    transcribe(server, data, status=400, priority="urgent")


# ---- bad input ------------------------------------------------------------------------------------


def test_bad_audio_is_a_clear_400(server, speech):
    mp3 = encode(speech[None, : 2 * SAMPLE_RATE], SAMPLE_RATE, "mp3")
    cases = {
        "random": np.random.default_rng(1).bytes(20000),
        "text": b"this is a text file, not audio\n" * 20,
        "empty": b"",
        "truncated_mp3": mp3[:300],
    }
    for name, data in cases.items():
        error = transcribe(server, data, status=400, filename=f"{name}.mp3")["error"]
        assert error["param"] == "file" and error["code"] == "invalid_audio", name


@pytest.mark.parametrize(
    "fields, param",
    [({"model": None}, "model"), ({"language": "fr"}, "language"), ({"response_format": "xml"}, "response_format"),
     ({"timestamp_granularities[]": "character"}, "timestamp_granularities[]")],
)
def test_bad_fields_are_400(server, first_sentence, fields, param):
    data = {"model": MODEL, **fields}
    data = {k: v for k, v in data.items() if v is not None}
    with server.client(headers={"Authorization": "Bearer sk-test"}) as client:
        response = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav(first_sentence))}, data=data)
        missing_file = client.post("/v1/audio/transcriptions", data={"model": MODEL})
    assert response.status_code == 400 and response.json()["error"]["param"].split(".")[0] == param
    assert missing_file.status_code == 400 and missing_file.json()["error"]["param"] == "file"


def test_unknown_model_is_404(server, first_sentence):
    error = transcribe(server, wav(first_sentence), status=404, model="whisper-1")["error"]
    assert error["code"] == "model_not_found"
    assert transcribe(server, wav(first_sentence), model="iic/SenseVoiceSmall")["text"]


def test_size_and_duration_caps(sensevoice_dir, speech):
    with live_server(asr_model=str(sensevoice_dir), asr_max_upload_bytes=len(SPEECH) + 1000, asr_max_audio_seconds=5) as srv:
        with srv.client() as client:
            big = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", io.BytesIO(bytes(len(SPEECH) + 100_000)))},
                              data={"model": MODEL})
            long = client.post("/v1/audio/transcriptions", files={"file": ("a.flac", SPEECH)},  # 10 s
                               data={"model": MODEL})
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
    assert long.status_code == 400 and long.json()["error"]["code"] == "audio_too_long"
