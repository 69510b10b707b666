"""The tiny SenseVoiceSmall: real layout, loaded offline by funasr's AutoModel, rich tags out."""

from __future__ import annotations

import json
import re
import socket
import wave

import numpy as np
import pytest
import torch
import yaml

from server.asr.tiny import BPE_FILE, build_tiny_sensevoice

LANG = ["zh", "en", "yue", "ja", "ko", "nospeech"]
EMO = ["HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED", "EMO_UNKNOWN"]
EVENT = ["Speech", "BGM", "Laughter", "Applause", "Cry", "Sneeze", "Breath", "Cough", "Event_UNK"]
ITN = ["withitn", "woitn"]
TAGS = re.compile("".join(rf"<\|({'|'.join(group)})\|>" for group in (LANG, EMO, EVENT, ITN)))


def tags(text: str) -> tuple[str, str, str, str]:
    m = TAGS.match(text)
    assert m, f"no language/emotion/event/itn tags at the start of {text!r}"
    return m.groups()


@pytest.fixture(scope="module")
def sv_dir(tmp_path_factory):
    return build_tiny_sensevoice(tmp_path_factory.mktemp("sensevoice") / "SenseVoiceSmall")


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * 16000)) / 16000
    x = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1234 * t) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def load(path, **kw):
    """AutoModel as the server uses it, with every way out to the network blocked and recorded."""
    from funasr import AutoModel
    from funasr.download import download_model_from_hub as hub
    from funasr.utils import version_checker

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("network is off in this test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        mp.setattr(hub, "get_or_download_model_dir", refuse)
        mp.setattr(hub, "get_or_download_model_dir_hf", refuse)
        mp.setattr(version_checker, "get_pypi_version", refuse)
        model = AutoModel(model=str(path), disable_update=True, device="cpu", ncpu=1, disable_pbar=True, **kw)
    assert calls == []
    return model


@pytest.fixture(scope="module")
def sv(sv_dir):
    return load(sv_dir)


def test_files_are_laid_out_like_the_real_repo(sv_dir):
    names = {p.name for p in sv_dir.iterdir()}
    assert {"config.yaml", "configuration.json", "model.pt", "am.mvn", BPE_FILE, ".complete"} <= names
    cfg = yaml.safe_load((sv_dir / "config.yaml").read_text())
    assert (cfg["model"], cfg["encoder"], cfg["frontend"], cfg["tokenizer"]) == (
        "SenseVoiceSmall", "SenseVoiceEncoderSmall", "WavFrontend", "SentencepiecesTokenizer")
    fe = cfg["frontend_conf"]
    assert (fe["fs"], fe["window"], fe["n_mels"], fe["frame_length"], fe["frame_shift"]) == (16000, "hamming", 80, 25, 10)
    assert (fe["lfr_m"], fe["lfr_n"], fe["dither"]) == (7, 6, 0.0)
    metas = json.loads((sv_dir / "configuration.json").read_text())["file_path_metas"]
    assert metas["tokenizer_conf"]["bpemodel"] == BPE_FILE and metas["frontend_conf"]["cmvn_file"] == "am.mvn"
    assert all((sv_dir / f).is_file() for f in (metas["init_param"], metas["config"]))


def test_cmvn_parses_to_sane_values(sv_dir):
    from funasr.frontends.wav_frontend import load_cmvn

    cmvn = load_cmvn(str(sv_dir / "am.mvn"))
    assert cmvn.shape == (2, 560)
    assert (cmvn[0] < -5).all() and ((cmvn[1] > 0.1) & (cmvn[1] < 0.3)).all()


def test_automodel_loads_every_weight_and_the_tokenizer_matches_funasr_ids(sv, sv_dir):
    assert sv.kwargs["frontend"].cmvn_file == str(sv_dir / "am.mvn")
    assert sv.kwargs["frontend"].dither == 0.0
    saved = torch.load(sv_dir / "model.pt")
    loaded = sv.model.state_dict()
    assert saved.keys() == loaded.keys()  # funasr silently skips mismatched shapes, so compare all
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    tok, model = sv.kwargs["tokenizer"], sv.model
    assert tok.get_vocab_size() == model.vocab_size == model.ctc.ctc_lo.out_features == 25055
    # The ids SenseVoiceSmall hard-codes for training and ban_emo_unk name the right tags.
    for token_id, row in {**model.lid_int_dict, **model.textnorm_int_dict}.items():
        name = next(k for k, v in {**model.lid_dict, **model.textnorm_dict}.items() if v == row)
        assert tok.decode([token_id]) == f"<|{name}|>"
    assert [tok.decode([i]) for i in model.emo_dict.values()] == [f"<|{e}|>" for e in ("EMO_UNKNOWN", "HAPPY", "SAD", "ANGRY", "NEUTRAL")]
    # Re-encoding decoded text gives the 4 tags first; funasr's timestamp code relies on it.
    assert tok.text2tokens("<|en|><|NEUTRAL|><|Speech|><|woitn|>hello world")[:4] == ["<|en|>", "<|NEUTRAL|>", "<|Speech|>", "<|woitn|>"]


def test_generate_starts_with_the_four_tags_and_is_deterministic(sv, clip):
    first = sv.generate(input=clip, language="auto", use_itn=True)[0]["text"]
    assert tags(first)[3] == "withitn"
    assert sv.generate(input=clip, language="auto", use_itn=True)[0]["text"] == first
    assert tags(sv.generate(input=clip, language="auto", use_itn=False)[0]["text"])[3] == "woitn"


@pytest.mark.parametrize("language", LANG)
def test_the_requested_language_is_echoed(sv, clip, language):
    # Not forced by funasr's code: the trained model learned it (the query is the true language in
    # 80% of training), and the tiny model reproduces it.
    assert tags(sv.generate(input=clip, language=language, use_itn=False)[0]["text"])[0] == language


def test_batches_wav_files_ban_emo_unk_and_timestamps_work(sv, clip, tmp_path):
    single = [sv.generate(input=c, language="en")[0]["text"] for c in (clip, clip[:8000], clip[:3000])]
    batch = [r["text"] for r in sv.generate(input=[clip, clip[:8000], clip[:3000]], language="en", batch_size=3)]
    assert [tags(t) for t in batch] == [tags(t) for t in single]
    wav = tmp_path / "clip.wav"
    with wave.open(str(wav), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000)
        f.writeframes((clip * 32767).astype(np.int16).tobytes())
    tags(sv.generate(input=str(wav))[0]["text"])
    assert tags(sv.generate(input=clip, ban_emo_unk=True)[0]["text"])[1] != "EMO_UNKNOWN"
    res = sv.generate(input=clip, use_itn=True, output_timestamp=True)[0]
    tags(res["text"])
    assert ("timestamp" in res) == bool(TAGS.sub("", res["text"], count=1))  # none for tags only


@pytest.mark.parametrize("hub", ["ms", "hf"])
def test_a_local_directory_never_touches_the_hub(sv_dir, clip, hub):
    tags(load(sv_dir, hub=hub).generate(input=clip)[0]["text"])


def test_builds_are_idempotent_and_deterministic(sv_dir, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in sv_dir.iterdir()}
    assert build_tiny_sensevoice(sv_dir) == sv_dir
    assert {p.name: p.stat().st_mtime_ns for p in sv_dir.iterdir()} == before
    again = build_tiny_sensevoice(tmp_path / "again", seed=0)
    for name in ("model.pt", BPE_FILE, "config.yaml", "am.mvn"):
        assert (again / name).read_bytes() == (sv_dir / name).read_bytes()
    rng = torch.get_rng_state()
    other = build_tiny_sensevoice(tmp_path / "again", seed=1, output_size=48)  # a different build: redone
    assert torch.equal(torch.get_rng_state(), rng)
    assert (other / "model.pt").read_bytes() != (sv_dir / "model.pt").read_bytes()
    assert yaml.safe_load((other / "config.yaml").read_text())["encoder_conf"]["output_size"] == 48
