"""Word timestamps: the alignment on constructed CTC paths, against funasr's own SenseVoice
timestamps (``output_timestamp``), and on the committed speech recording through the server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from audio_files import encode
from conftest import live_server

from server.asr.audio import SAMPLE_RATE, decode_audio
from server.asr.words import align_words, group_words, piece_text, token_times

DATA = Path(__file__).parents[1] / "data"
SPEECH = (DATA / "speech_pauses.flac").read_bytes()
PAUSES = json.loads((DATA / "speech_pauses.json").read_text())["pauses"]


# ---- which pieces make a word -----------------------------------------------------------------------


def words_of(pieces: list[str]) -> list[str]:
    return [piece_text([pieces[i] for i in word]) for word in group_words(pieces)]


@pytest.mark.parametrize("pieces, words", [
    (["▁the", "▁qu", "ick", ",", "▁fox", "."], ["the", "quick,", "fox."]),  # joined at ▁, punctuation kept
    (["▁안녕", "하세요", "▁세계"], ["안녕하세요", "세계"]),  # Korean is written with spaces
    (["你", "好", "，", "世界", "。"], ["你", "好，", "世界。"]),  # Chinese: one token a word
    (["これ", "は", "ペン", "です"], ["これ", "は", "ペン", "です"]),  # Japanese likewise
    (["我", "用", "▁i", "Phone", "很", "好"], ["我", "用", "iPhone", "很", "好"]),  # mixed scripts
    (["好", "hello", "world"], ["好", "helloworld"]),  # no ▁ after Chinese: still a new word
    (["▁", "1", "2", "3", "▁dogs"], ["123", "dogs"]),  # a lone ▁ opens the word that follows
    (["▁", "你"], ["你"]),  # ... or nothing, and is dropped
    (["▁caf", "<0xC3>", "<0xA9>", "▁ok"], ["café", "ok"]),  # byte-fallback pieces
])
def test_words_are_what_the_language_writes_as_one(pieces, words):
    times = [(i * 0.1, i * 0.1 + 0.05) for i in range(len(pieces))]
    assert [w.word for w in align_words(pieces, times)] == words


def test_token_times_follow_the_ctc_runs_after_the_query_frames():
    # Runs [first, end) of encoder frames; frames 0-3 are the query frames, then 60 ms each.
    frames = [(4, 5), (6, 8), (1, 2), (14, 16)]
    times = token_times(frames, 10, offset=1.0, duration=0.55)
    assert times[0] == (1.0, 1.03)  # first speech frame: from the segment's start (max(-30, 0) ms)
    assert times[1] == (1.09, 1.21)  # 2 * 60 - 30 to 4 * 60 - 30 ms
    assert times[2] == (1.0, 1.0)  # emitted on a query frame: at the start
    assert times[3] == (1.55, 1.55)  # past the audio: clipped to its end (550 ms < 10 * 60 - 30)
    words = align_words(["▁a", "b", "▁c", "▁d"], times)
    assert [(w.word, w.start, w.end) for w in words] == [("ab", 1.0, 1.21), ("c", 1.0, 1.0), ("d", 1.55, 1.55)]


# ---- the adapter on constructed CTC paths -------------------------------------------------------------


@pytest.fixture(scope="module")
def sensevoice(sensevoice_dir):
    from server.asr.model import SenseVoice

    return SenseVoice(sensevoice_dir, torch.device("cpu"), torch.float32)


def test_the_adapter_reads_tokens_frames_and_posteriors_off_the_path(sensevoice):
    sp = sensevoice.tokenizer.sp
    blank = sensevoice.model.blank_id
    tag = {name: sp.piece_to_id(f"<|{name}|>") for name in ("en", "NEUTRAL", "Speech", "withitn")}
    a, b, c = (next(i for i in range(3, 500) if test(sp.id_to_piece(i)))
               for test in (lambda p: p.startswith("▁"), lambda p: p.isascii() and p.isalpha(), lambda p: "天" in p))
    # Tags on the query frames, in an unusual order (event before emotion), then text runs.
    path = [tag["en"], tag["Speech"], tag["NEUTRAL"], tag["withitn"], blank, blank, a, a, blank, b, c, c, c, blank, a]
    hidden = torch.randn(len(path), sensevoice.model.ctc.ctc_lo.in_features, generator=torch.Generator().manual_seed(0))
    result = sensevoice._decode(hidden, torch.tensor(path))
    assert (result.language, result.emotion, result.event) == ("en", "NEUTRAL", "Speech")
    assert result.tokens == (a, b, c, a) and result.pieces == tuple(sp.id_to_piece([a, b, c, a]))
    assert result.frames == ((6, 8), (9, 10), (10, 13), (14, 15))
    assert result.emitted == 8 and result.encoder_frames == len(path)
    with torch.no_grad():
        posteriors = torch.log_softmax(sensevoice.model.ctc.ctc_lo(hidden), dim=-1)
    expected = [posteriors[frame, token].item() for frame, token in ((6, a), (9, b), (10, c), (14, a))]
    assert result.logprobs == pytest.approx(expected, abs=1e-5)
    assert result.avg_logprob == pytest.approx(sum(expected) / 4, abs=1e-5)
    assert result.no_speech_prob == pytest.approx(posteriors[0, sp.piece_to_id("<|nospeech|>")].exp().item(), rel=1e-4)
    assert result.text == sensevoice.tokenizer.decode([a, b, c, a]).strip()


# ---- against funasr's own timestamps, and on the recording through the server ---------------------------


@pytest.fixture(scope="module")
def reference(sensevoice_dir):
    from funasr import AutoModel

    return AutoModel(model=str(sensevoice_dir), disable_update=True, device="cpu", ncpu=2, disable_pbar=True)


@pytest.fixture(scope="module")
def server(sensevoice_dir):
    with live_server(asr_model=str(sensevoice_dir), asr_max_segment_seconds=4) as srv:
        yield srv


def verbose(srv, data: bytes, **fields) -> dict:
    with srv.client() as client:
        response = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", data)},
                               data={"model": "SenseVoiceSmall", "response_format": "verbose_json",
                                     "timestamp_granularities[]": ["word", "segment"], **fields})
    assert response.status_code == 200, response.text
    return response.json()


def funasr_token_times(reference, audio: np.ndarray, monkeypatch) -> list[tuple[str, float, float]]:
    """funasr's SenseVoice timestamps (generate(output_timestamp=True)) per token, before its own
    word merging. funasr re-encodes the decoded text to find the tokens it aligns, which can split
    it differently from what the model emitted; here it is handed the emitted tokens, so both sides
    time the same tokens."""
    from funasr.tokenizer.sentencepiece_tokenizer import SentencepiecesTokenizer as Tokenizer

    decoded, raw = [], []
    decode = Tokenizer.decode  # generate() works on a copy of the tokenizer: patch its class
    monkeypatch.setattr(Tokenizer, "decode", lambda self, ids, **kw: (decoded.append(list(ids)), decode(self, ids))[1])
    monkeypatch.setattr(Tokenizer, "text2tokens", lambda self, text: self.sp.id_to_piece(decoded[-1]))
    monkeypatch.setattr(Tokenizer, "tokens2ids", lambda self, pieces: [[i] for i in decoded[-1][4:]])
    model = reference.model
    post = model.post
    monkeypatch.setattr(model, "post", lambda stamps: (raw.extend(map(tuple, stamps)), post(stamps))[1])
    reference.generate(input=audio, language="auto", use_itn=True, output_timestamp=True)
    return raw


def test_word_times_equal_funasrs_timestamps_for_the_same_tokens(server, reference, monkeypatch):
    speech = decode_audio(SPEECH, max_seconds=60)
    clip = speech[: int(PAUSES[0][0] * SAMPLE_RATE)]  # under 4 s: the clip whole, as funasr sees it
    data = encode(clip[None, :], SAMPLE_RATE, "wav_s16")
    audio = decode_audio(data, max_seconds=60)
    got = verbose(server, data)
    assert len(got["segments"]) == 1 and got["words"]
    tokens = funasr_token_times(reference, audio, monkeypatch)
    duration = len(audio) / SAMPLE_RATE
    expected = [{"word": piece_text([tokens[i][0] for i in word]), "start": tokens[word[0]][1],
                 "end": min(tokens[word[-1]][2], duration)}
                for word in group_words([t[0] for t in tokens])]
    assert got["words"] == [w for w in expected if w["word"]]


def test_words_on_the_recording_are_in_order_inside_their_segments(server):
    got = verbose(server, SPEECH)
    segments, words = got["segments"], got["words"]
    assert len(segments) == 3 and len(words) > 10
    previous_end = 0.0
    for word in words:
        assert word["word"] and word["word"] == word["word"].strip()
        assert previous_end <= word["start"] <= word["end"] <= got["duration"]
        assert any(s["start"] <= word["start"] and word["end"] <= s["end"] for s in segments)
        previous_end = word["end"]
    # The words partition each segment's text.
    joined = "".join(w["word"] for w in words).replace(" ", "")
    assert joined == "".join(s["text"] for s in segments).replace(" ", "")
    # Only asked for: no words without the granularity.
    with server.client() as client:
        plain = client.post("/v1/audio/transcriptions", files={"file": ("a.flac", SPEECH)},
                            data={"model": "SenseVoiceSmall", "response_format": "verbose_json"}).json()
    assert "words" not in plain and plain["segments"] == segments
