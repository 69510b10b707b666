"""The bfloat16 path on CPU (server/compute/cpu_bf16.py) and reduced precision in the adapters.

The packed layers reimplement the encoders' forward passes, so they are checked against the
originals in float32 (where they must agree to rounding), and in bfloat16 against float32 with the
fidelity the --dtype bfloat16 documentation promises, on the tiny random-weight models.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from server.embedding.model import BgeM3, EmbedItem
from server.compute import cpu_bf16
from server.compute.cpu_bf16 import (
    PackedLinear,
    SanmEncoder,
    XlmrEncoder,
    fast_path,
)
from server.compute.xlmr_common import pad_right
from server.reranker import model as reranker
from server.reranker.model import BgeReranker
from server.asr import model as sensevoice
from server.asr.audio import decode_audio
from server.asr.ctc import CtcBestPath
from server.asr.model import AsrItem, SenseVoice

CPU = torch.device("cpu")
TEXTS = ["The giant panda is a bear.", "你好，世界", " ".join(["bamboo forest"] * 30), "a"]
needs_bf16 = pytest.mark.skipif(not fast_path(CPU, torch.bfloat16), reason="oneDNN has no bfloat16 on this CPU")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from pathlib import Path

    return decode_audio((Path(__file__).parents[1] / "data/speech_pauses.flac").read_bytes(), max_seconds=60)


def test_fast_path_only_for_bfloat16_on_cpu():
    assert not fast_path(CPU, torch.float32)
    assert not fast_path(torch.device("cuda"), torch.bfloat16)
    assert not fast_path(torch.device("cuda"), torch.float16)
    assert fast_path(CPU, torch.bfloat16) == torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=needs_bf16)])
@pytest.mark.parametrize("act", ["none", "gelu", "relu"])
def test_packed_linear_is_linear_plus_activation(dtype, act):
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(48, 40)
    x = torch.randn(2, 5, 48, generator=g)
    residual = torch.randn(2, 5, 40, generator=g)
    packed = PackedLinear.of(linear, act=act, dtype=dtype)
    with torch.no_grad():
        expected = {"none": lambda y: y, "gelu": F.gelu, "relu": F.relu}[act](linear(x))
        got = packed(x.to(dtype)).float()
        added = packed(x.to(dtype), residual=residual.to(dtype)).float() if act == "none" else None
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    assert got.shape == (2, 5, 40) and torch.allclose(got, expected, atol=tol, rtol=tol)
    if added is not None:
        assert torch.allclose(added, linear(x).detach() + residual, atol=tol, rtol=tol)


def _xlmr_batch(model):
    return pad_right(model.tokenize(TEXTS), model.tokenizer.pad_token_id, CPU)


def test_xlmr_encoder_in_float32_is_the_transformers_forward(bge_m3_dir):
    """The packed layers compute what XLMRobertaModel computes (positions, padding, layers)."""
    model = BgeM3(bge_m3_dir, CPU, torch.float32)
    features = _xlmr_batch(model)
    hf = model.model.model
    with torch.inference_mode():
        expected = hf(**features, return_dict=True).last_hidden_state
        got = XlmrEncoder(hf, torch.float32)(**features).last_hidden_state
    real = features["attention_mask"].bool()
    assert got.dtype == torch.float32
    assert torch.allclose(got[real], expected[real], atol=1e-4, rtol=1e-4)


def test_xlmr_encoder_refuses_what_it_does_not_compute(bge_m3_dir):
    model = BgeM3(bge_m3_dir, CPU, torch.float32)
    encoder = XlmrEncoder(model.model.model, torch.float32)
    features = _xlmr_batch(model)
    with pytest.raises(ValueError, match="output_attentions"):
        encoder(**features, output_attentions=True)
    encoder(**features, output_attentions=False, token_type_ids=None)  # what HF heads pass


@needs_bf16
def test_bge_m3_bfloat16_keeps_float32_fidelity(bge_m3_dir):
    fp32 = BgeM3(bge_m3_dir, CPU, torch.float32)
    bf16 = BgeM3(bge_m3_dir, CPU, torch.bfloat16)
    assert isinstance(bf16.model.model, XlmrEncoder)
    assert bf16.dim == fp32.dim and bf16.max_tokens == fp32.max_tokens
    items = [EmbedItem(ids, sparse=True, colbert=True) for ids in fp32.tokenize(TEXTS)]
    for a, b in zip(fp32.run_batch(items), bf16.run_batch(items)):
        assert b.dense.dtype == np.float32 and b.colbert.dtype == np.float32
        assert float(a.dense @ b.dense) > 0.9999  # the documented bar is 0.999
        assert float((a.colbert * b.colbert).sum(1).min()) > 0.999
        assert set(a.sparse) == set(b.sparse)
        assert max(abs(a.sparse[k] - b.sparse[k]) for k in a.sparse) < 0.02


@needs_bf16
def test_reranker_bfloat16_scores_close_to_float32(reranker_dir):
    fp32 = BgeReranker(reranker_dir, CPU, torch.float32)
    bf16 = BgeReranker(reranker_dir, CPU, torch.bfloat16)
    assert isinstance(bf16.model.roberta, XlmrEncoder)
    assert bf16.model.classifier.out_proj.weight.dtype == torch.float32  # the head stays float32
    assert bf16.max_tokens == fp32.max_tokens
    query = fp32.tokenize(["what is a panda?"])[0]
    pairs = [fp32.pair(query, doc) for doc in fp32.tokenize(TEXTS)]
    a, b = fp32.run_batch(pairs), bf16.run_batch(pairs)
    assert all(isinstance(x, float) for x in b)
    assert max(abs(x - y) for x, y in zip(a, b)) < 0.02


def test_sanm_encoder_in_float32_is_funasrs_forward(sensevoice_dir, speech):
    """The packed SANM layers compute what funasr's SenseVoiceEncoderSmall computes."""
    from funasr.utils.load_utils import extract_fbank

    model = SenseVoice(sensevoice_dir, CPU, torch.float32)
    waves = [torch.from_numpy(speech[:16000 * 2].copy()), torch.from_numpy(speech[16000:16000 * 4].copy())]
    feats, lengths = extract_fbank(waves, data_type="sound", frontend=model.frontend)
    with torch.inference_mode():
        expected, expected_lengths = model.model.encoder(feats.clone(), lengths)
        got, got_lengths = SanmEncoder(model.model.encoder, torch.float32)(feats.clone(), lengths)
    assert torch.equal(got_lengths, expected_lengths.int())
    for row, n in enumerate(lengths.tolist()):
        assert torch.allclose(got[row, :n], expected[row, :n], atol=1e-3, rtol=1e-3)


@needs_bf16
def test_sensevoice_bfloat16_runs_packed_and_decodes_tags(sensevoice_dir, speech):
    fp32 = SenseVoice(sensevoice_dir, CPU, torch.float32)
    bf16 = SenseVoice(sensevoice_dir, CPU, torch.bfloat16)
    assert bf16.fast and isinstance(bf16.model.encoder, SanmEncoder)
    items = [AsrItem(speech[:16000 * 3]), AsrItem(speech[16000:16000 * 6], language="en", use_itn=False)]
    for a, b in zip(fp32.run_batch(items), bf16.run_batch(items)):
        assert (a.language, a.emotion, a.event) == (b.language, b.emotion, b.event)
    assert bf16.run_batch(items[1:])[0].language == "en"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sensevoice_reduced_precision_without_the_packed_layers(sensevoice_dir, speech, monkeypatch, dtype):
    """The eager half-precision path (CUDA's float16, a CPU without oneDNN bfloat16): funasr's
    float32 padding mask used to turn the FSMN's input float32 and crash its half-precision weight."""
    monkeypatch.setattr(sensevoice, "fast_path", lambda device, dtype: False)
    model = SenseVoice(sensevoice_dir, CPU, dtype)
    assert not model.fast and next(model.model.encoder.parameters()).dtype == dtype
    results = model.run_batch([AsrItem(speech[:16000 * 2]), AsrItem(speech[:16000 * 5], language="en")])
    assert all(r.raw.startswith("<|") for r in results)


def test_bfloat16_without_the_packed_layers_still_loads(bge_m3_dir, reranker_dir, monkeypatch):
    from server.embedding import model as bge_m3

    monkeypatch.setattr(bge_m3, "fast_path", lambda device, dtype: False)
    monkeypatch.setattr(reranker, "fast_path", lambda device, dtype: False)
    embed = BgeM3(bge_m3_dir, CPU, torch.bfloat16)
    assert not isinstance(embed.model.model, XlmrEncoder)
    assert embed.run_batch([EmbedItem(embed.tokenize(["panda"])[0])])[0].dense.dtype == np.float32
    rerank = BgeReranker(reranker_dir, CPU, torch.bfloat16)
    assert not isinstance(rerank.model.roberta, XlmrEncoder)
    assert isinstance(rerank.run_batch([rerank.pair([5, 6], [7])])[0], float)


@needs_bf16
def test_ctc_best_path_rescores_close_frames_in_float32():
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(64, 500)
    h = torch.randn(3, 40, 64, generator=g)
    with torch.no_grad():
        logits = head(h)
        exact = logits.argmax(-1)
        assert torch.equal(CtcBestPath(head, margin=float("inf"))(h), exact)  # every frame rescored
        top = logits.topk(2, dim=-1).values
        clear = (top[..., 0] - top[..., 1]) > 0.5  # far beyond a bfloat16 logit's error
        got = CtcBestPath(head)(h)
    assert torch.equal(got[clear], exact[clear])
    assert CtcBestPath(head, dtype=torch.float32)(h).equal(exact)


def test_key_padding_mask():
    assert cpu_bf16.key_padding_mask(torch.ones(2, 3, dtype=torch.long), torch.bfloat16) is None
    mask = cpu_bf16.key_padding_mask(torch.tensor([[1, 1, 0], [1, 1, 1]]), torch.bfloat16)
    assert mask.shape == (2, 1, 1, 3) and mask.dtype == torch.bfloat16
    assert mask[0, 0, 0].tolist() == [0, 0, float("-inf")] and mask[1].eq(0).all()
