"""The tiny bge-m3 / bge-reranker-v2-m3 builders: tokenizer, build cache, and loading by FlagEmbedding."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, XLMRobertaTokenizerFast

from server.compute.tiny_xlmr import (
    build_tiny_bge_m3,
    build_tiny_reranker,
    build_xlmr_tokenizer,
)

HIDDEN = 32  # the default tiny hidden size


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory):
    return build_tiny_bge_m3(tmp_path_factory.mktemp("bge-m3"))


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory):
    return build_tiny_reranker(tmp_path_factory.mktemp("reranker"))


@pytest.fixture(scope="module")
def tok(m3_dir):
    return AutoTokenizer.from_pretrained(str(m3_dir))


def _files(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# --- tokenizer ------------------------------------------------------------------------


def test_auto_tokenizer_is_xlmr_fast(tok):
    assert isinstance(tok, XLMRobertaTokenizerFast)
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == len(tok) - 1
    assert tok.model_max_length == 8192


def test_single_text_is_wrapped_in_bos_eos(tok):
    ids = tok("hello world").input_ids
    assert ids[0] == 0 and ids[-1] == 2
    assert tok.convert_ids_to_tokens(ids) == ["<s>", "▁hello", "▁world", "</s>"]


def test_pair_uses_xlmr_template(tok):
    a, b = tok("what is a panda?").input_ids, tok("The giant panda is a bear.").input_ids
    pair = tok("what is a panda?", "The giant panda is a bear.").input_ids
    # <s> A </s></s> B </s>, i.e. XLM-R's template, not BERT's [CLS] A [SEP] B [SEP]
    assert pair == a + [2] + b[1:]


def test_batch_padding_uses_pad_id_1(tok):
    enc = tok(["hi", "a much longer sentence about the giant panda"], padding=True)
    short_ids, short_mask = enc.input_ids[0], enc.attention_mask[0]
    n = sum(short_mask)
    assert short_ids[n - 1] == 2 and n < len(short_ids)
    assert set(short_ids[n:]) == {1} and set(short_mask[n:]) == {0}
    assert all(enc.attention_mask[1])


@pytest.mark.parametrize("text", ["你好世界", "大熊猫是一种生活在中国的熊。", "こんにちは世界", "안녕하세요 세계"])
def test_cjk_text_is_known(tok, text):
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids and tok.unk_token_id not in ids
    assert tok.decode(ids) == text


def test_tokenizer_is_reproducible(tmp_path, m3_dir):
    build_xlmr_tokenizer(tmp_path)
    assert (tmp_path / "tokenizer.json").read_bytes() == (m3_dir / "tokenizer.json").read_bytes()


# --- building -------------------------------------------------------------------------


def test_layouts(m3_dir, reranker_dir):
    tokenizer_files = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    assert {"config.json", "model.safetensors", "colbert_linear.pt", "sparse_linear.pt"} | tokenizer_files <= set(
        _files(m3_dir)
    )
    assert {"config.json", "model.safetensors"} | tokenizer_files <= set(_files(reranker_dir))
    m3_cfg = json.loads((m3_dir / "config.json").read_text())
    rr_cfg = json.loads((reranker_dir / "config.json").read_text())
    assert m3_cfg["architectures"] == ["XLMRobertaModel"]
    assert rr_cfg["architectures"] == ["XLMRobertaForSequenceClassification"] and len(rr_cfg["id2label"]) == 1
    for cfg in (m3_cfg, rr_cfg):
        assert cfg["max_position_embeddings"] == 8194 and cfg["type_vocab_size"] == 1
        assert cfg["vocab_size"] == len(AutoTokenizer.from_pretrained(str(m3_dir)))


def test_second_build_is_a_no_op(m3_dir):
    before = {p.name: p.stat().st_mtime_ns for p in m3_dir.iterdir()}
    assert build_tiny_bge_m3(m3_dir) == m3_dir
    assert {p.name: p.stat().st_mtime_ns for p in m3_dir.iterdir()} == before


def test_builds_are_deterministic(tmp_path, m3_dir):
    again = build_tiny_bge_m3(tmp_path / "same")
    assert _files(again) == _files(m3_dir)
    other = _files(build_tiny_bge_m3(tmp_path / "other", seed=1))
    assert other["model.safetensors"] != _files(m3_dir)["model.safetensors"]


def test_incomplete_or_different_build_is_redone(tmp_path):
    target = build_tiny_reranker(tmp_path)
    (target / ".complete").unlink()
    (target / "model.safetensors").write_bytes(b"half-written")
    build_tiny_reranker(target)
    assert (target / "model.safetensors").read_bytes() != b"half-written"
    # Other overrides into the same directory are not served from the old build.
    build_tiny_reranker(target, hidden_size=64)
    assert json.loads((target / "config.json").read_text())["hidden_size"] == 64


# --- loading with FlagEmbedding -------------------------------------------------------


def test_bge_m3_loads_in_flagembedding(m3_dir, tok):
    from FlagEmbedding import BGEM3FlagModel

    model = BGEM3FlagModel(str(m3_dir), use_fp16=False, devices="cpu")
    # The heads come from our files, not from a fresh random init.
    colbert = torch.load(m3_dir / "colbert_linear.pt", weights_only=True)
    sparse = torch.load(m3_dir / "sparse_linear.pt", weights_only=True)
    assert torch.equal(model.model.colbert_linear.weight, colbert["weight"])
    assert torch.equal(model.model.sparse_linear.bias, sparse["bias"])

    texts = ["hello world", "你好世界", "The giant panda is a bear that lives in China."]
    out = model.encode(texts, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    dense = out["dense_vecs"]
    assert dense.shape == (len(texts), HIDDEN)
    np.testing.assert_allclose(np.linalg.norm(dense, axis=1), 1.0, rtol=1e-5)
    for text, weights, colbert_vecs in zip(texts, out["lexical_weights"], out["colbert_vecs"]):
        assert weights and all(w > 0 for w in weights.values())
        n_tokens = len(tok(text).input_ids)
        assert colbert_vecs.shape == (n_tokens - 1, HIDDEN)
    # Random, but not degenerate: different texts get different vectors.
    assert (dense @ dense.T)[np.triu_indices(len(texts), 1)].max() < 0.99


def test_reranker_loads_in_flagembedding(reranker_dir):
    from FlagEmbedding import FlagReranker

    reranker = FlagReranker(str(reranker_dir), use_fp16=False, devices="cpu")
    passages = ["The giant panda is a bear.", "你好世界", "12345"]
    scores = reranker.compute_score([["what is a panda?", p] for p in passages], normalize=True)
    assert len(scores) == len(passages) and all(0 < s < 1 for s in scores)
    assert max(scores) - min(scores) > 1e-3  # different pairs, different scores
