"""verbose_json and json exactly as OpenAI's schema, read by the official SDK in strict mode, with
every Whisper field holding an honest value for SenseVoice: checked here against the model's own
posteriors, computed independently by funasr's generate()."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import openai
import pytest
import torch
from audio_files import encode
from conftest import live_server

from server.asr.audio import SAMPLE_RATE, decode_audio

MODEL = "FunAudioLLM/SenseVoiceSmall"
DATA = Path(__file__).parents[1] / "data"
SPEECH = (DATA / "speech_pauses.flac").read_bytes()
PAUSES = json.loads((DATA / "speech_pauses.json").read_text())["pauses"]


@pytest.fixture(scope="module")
def server(sensevoice_dir):
    with live_server(asr_model=str(sensevoice_dir), asr_max_segment_seconds=4) as srv:
        yield srv


@pytest.fixture(scope="module")
def strict(server) -> openai.OpenAI:
    """The SDK validating every answer against its types: a missing or mistyped field raises."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-local", max_retries=0,
                         _strict_response_validation=True)


@pytest.fixture(scope="module")
def clip() -> bytes:
    speech = decode_audio(SPEECH, max_seconds=60)
    return encode(speech[None, : int(PAUSES[0][0] * SAMPLE_RATE)], SAMPLE_RATE, "wav_s16")  # one segment


def test_the_strict_sdk_reads_verbose_json_with_segments_and_words(strict):
    got = strict.audio.transcriptions.create(model=MODEL, file=("a.flac", SPEECH), response_format="verbose_json",
                                             timestamp_granularities=["word", "segment"])
    assert len(got.segments) == 3 and got.words and got.text
    assert got.usage.type == "duration" and got.usage.seconds == pytest.approx(got.duration)
    assert got.language in ("english", "chinese", "cantonese", "japanese", "korean")
    for i, seg in enumerate(got.segments):
        assert seg.id == i and seg.seek == round(seg.start * 100) and seg.temperature == 0.0
        assert -30 < seg.avg_logprob <= 0 and 0 <= seg.no_speech_prob <= 1
        data = seg.text.encode()
        assert seg.compression_ratio == pytest.approx(len(data) / len(zlib.compress(data)))
        extra = seg.model_extra  # SenseVoice's tags stay, as extensions
        assert extra["language"] and extra["emotion"] and extra["event"]
    words_only = strict.audio.transcriptions.create(model=MODEL, file=("a.flac", SPEECH),
                                                    response_format="verbose_json", timestamp_granularities=["word"])
    assert words_only.words == got.words


def test_the_strict_sdk_reads_json_with_duration_usage(strict, clip):
    got = strict.audio.transcriptions.create(model=MODEL, file=("a.wav", clip))
    assert got.text and got.usage.type == "duration"
    assert got.usage.seconds == pytest.approx(PAUSES[0][0], abs=0.01)


def test_segment_tokens_and_confidence_come_from_the_models_posteriors(server, sensevoice_dir, clip, monkeypatch):
    """avg_logprob and no_speech_prob against the log-posteriors funasr's own generate() computes
    (its ctc.log_softmax, captured), read independently of the server's code."""
    from funasr import AutoModel

    with server.client() as client:
        got = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", clip)},
                          data={"model": MODEL, "response_format": "verbose_json"}).json()
    [segment] = got["segments"]

    reference = AutoModel(model=str(sensevoice_dir), disable_update=True, device="cpu", ncpu=2, disable_pbar=True)
    captured = []
    log_softmax = reference.model.ctc.log_softmax
    monkeypatch.setattr(reference.model.ctc, "log_softmax",
                        lambda x: (captured.append(log_softmax(x)), captured[-1])[1])
    text = reference.generate(input=decode_audio(clip, max_seconds=60), language="auto", use_itn=True)[0]["text"]
    posteriors = captured[0][0]  # (frames, vocabulary) of the one clip
    tokenizer = reference.kwargs["tokenizer"]
    path = posteriors.argmax(dim=-1)
    runs, counts = torch.unique_consecutive(path, return_counts=True)
    firsts = (counts.cumsum(0) - counts).tolist()
    emitted = [(token, frame) for token, frame in zip(runs.tolist(), firsts) if token != reference.model.blank_id]
    spoken = [(token, frame) for token, frame in emitted if not tokenizer.sp.id_to_piece(token).startswith("<|")]
    assert len(spoken) > 5 and len(emitted) == len(spoken) + 4

    assert segment["tokens"] == [token for token, _ in spoken]
    assert tokenizer.decode(segment["tokens"]).strip() == segment["text"] == text.split("|>")[-1].strip()
    expected = sum(posteriors[frame, token].item() for token, frame in spoken) / len(spoken)
    assert segment["avg_logprob"] == pytest.approx(expected, abs=1e-4)
    nospeech = tokenizer.sp.piece_to_id("<|nospeech|>")
    assert segment["no_speech_prob"] == pytest.approx(posteriors[0, nospeech].exp().item(), abs=1e-5)


def test_results_do_not_depend_on_what_they_were_batched_with(server, clip):
    """Each field of a segment is computed from its own rows alone."""
    import concurrent.futures

    def verbose(data: bytes) -> dict:
        with server.client() as client:
            return client.post("/v1/audio/transcriptions", files={"file": ("a.wav", data)},
                               data={"model": MODEL, "response_format": "verbose_json",
                                     "timestamp_granularities[]": "word"}).json()

    alone = verbose(clip)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(verbose, [clip, SPEECH, clip, SPEECH]))
    assert together[0] == together[2] == alone


def test_tags_in_another_order_fill_the_same_fields(server, clip, monkeypatch):
    """A model that emits its tags in another order: each is still read by what it is."""
    def verbose() -> list[dict]:
        with server.client() as client:
            return client.post("/v1/audio/transcriptions", files={"file": ("a.wav", clip)},
                               data={"model": MODEL, "response_format": "verbose_json"}).json()["segments"]

    before = verbose()
    tokenizer = server.runtime.served["asr"].service.model.tokenizer
    decode = tokenizer.decode

    def reordered(ids, **kw) -> str:  # <|lang|><|emo|><|event|><|itn|>text -> <|event|><|itn|><|emo|><|lang|>text
        raw = decode(ids)
        tags = raw[: raw.index("|>", raw.index("<|withitn|>")) + 2].split("|>")[:-1]
        return "".join(f"{t}|>" for t in (tags[2], tags[3], tags[1], tags[0])) + raw.split("<|withitn|>")[1]

    monkeypatch.setattr(tokenizer, "decode", reordered)
    after = verbose()
    assert not after[0]["text"].startswith("<|")
    assert [(s["language"], s["emotion"], s["event"], s["text"]) for s in after] == [
        (s["language"], s["emotion"], s["event"], s["text"]) for s in before]
