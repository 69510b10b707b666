"""The bge-m3 adapter on its own: reduced precision on CPU, and per-item outputs in a mixed batch."""

from __future__ import annotations

import numpy as np
import torch

from server.embedding.model import BgeM3, EmbedItem

TEXTS = ["The giant panda is a bear.", "你好，世界", " ".join(["bamboo forest"] * 30)]


def test_bfloat16_on_cpu_runs_our_own_forward_close_to_float32(bge_m3_dir):
    fp32 = BgeM3(bge_m3_dir, torch.device("cpu"), torch.float32)
    bf16 = BgeM3(bge_m3_dir, torch.device("cpu"), torch.bfloat16)
    assert next(bf16.model.parameters()).dtype == torch.bfloat16  # not cast back to float32
    items = [EmbedItem(ids) for ids in fp32.tokenize(TEXTS)]
    for a, b in zip(fp32.run_batch(items), bf16.run_batch(items)):
        assert b.dense.dtype == np.float32
        assert float(a.dense @ b.dense) > 0.99  # unit vectors: cosine similarity
        assert not np.array_equal(a.dense, b.dense)  # really computed in bfloat16


def test_sparse_and_colbert_only_for_the_items_that_ask(bge_m3_dir):
    model = BgeM3(bge_m3_dir, torch.device("cpu"), torch.float32)
    ids = model.tokenize(TEXTS)
    plain, sparse, colbert = model.run_batch(
        [EmbedItem(ids[0]), EmbedItem(ids[1], sparse=True), EmbedItem(ids[2], colbert=True)]
    )
    assert plain.sparse is None and plain.colbert is None
    assert sparse.sparse is not None and sparse.colbert is None
    assert colbert.colbert.shape == (len(ids[2]) - 1, model.dim) and colbert.sparse is None
    assert model.max_tokens == 8192
