"""scripts/benchlib/flops.py: the FLOPs it counts from a model directory's architecture are the FLOPs torch's
own counter (torch.utils.flop_counter.FlopCounterMode) measures on the real adapters' forward passes
over the tiny models, for padded and unpadded rows, on the CPU in float32.

Both sides count the same operations: matrix products (mm, addmm, bmm, attention, convolution) at 2
FLOPs per multiply-add, nothing element-wise. Deliberate differences, all on the measuring side:

* FlopCounterMode has no formula for the CPU's fused attention kernel
  (``aten._scaled_dot_product_flash_attention_for_cpu``, what ``scaled_dot_product_attention``
  decomposes into on CPU), so it would count XLM-R's attention as 0. The counter here is given
  torch's own attention formula (``flop_counter.sdpa_flop_count``, the one it uses for the CUDA
  kernels) for that op.
* SenseVoice's audio front end (fbank's mel filterbank is a matmul) is computed before counting, as
  the server computes it during request preparation (AsrItem.features), outside the forward pass.

Tolerance: none beyond floating point (relative 1e-9): the count is exact on clips of whole 10 ms
frames (on others, one LFR frame more in one case of six; checked separately).
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import torch
from benchlib import flops
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

CPU = torch.device("cpu")
EXACT = 1e-9  # relative tolerance of every agreement below


def _sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


# What CPU attention runs as: scaled_dot_product_attention decomposes into this kernel (FlopCounterMode
# decomposes ops it has no formula for, and counts the ones it has).
ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa}


def measured(fn) -> float:
    """FLOPs torch's counter sees while ``fn()`` runs (attention on CPU included, see above)."""
    with FlopCounterMode(display=False, custom_mapping=ATTENTION) as counter:
        fn()
    return float(counter.get_total_flops())


def measured_real(run_batch, items) -> float:
    """Unpadded: each row in a forward pass of its own."""
    return sum(measured(lambda item=item: run_batch([item])) for item in items)


def text_rows(lengths: list[int], seed: int = 0) -> list[list[int]]:
    """Token ids <s> ... </s> of these lengths (random ordinary ids of the tiny vocabulary)."""
    rng = random.Random(seed)
    return [[0] + [rng.randrange(5, 1000) for _ in range(n - 2)] + [2] for n in lengths]


LENGTHS = [5, 17, 40, 64]  # rows of different lengths: padding to 64 changes the count


@pytest.fixture(scope="module")
def bge_m3(bge_m3_dir):
    from server.embedding.model import BgeM3

    return BgeM3(bge_m3_dir, CPU, torch.float32)


@pytest.fixture(scope="module")
def reranker(reranker_dir):
    from server.reranker.model import BgeReranker

    return BgeReranker(reranker_dir, CPU, torch.float32)


@pytest.fixture(scope="module")
def sensevoice(sensevoice_dir):
    from server.asr.model import SenseVoice

    return SenseVoice(sensevoice_dir, CPU, torch.float32)


def asr_items(model, seconds: list[float]):
    from server.asr.model import AsrItem

    clips = [np.random.default_rng(i).standard_normal(round(s * 16000)).astype(np.float32) * 0.1
             for i, s in enumerate(seconds)]
    return [model.with_features(AsrItem(c)) for c in clips]  # front end outside the count


@pytest.mark.parametrize("heads", [{}, {"sparse": True, "colbert": True}], ids=["dense", "all-heads"])
def test_embedding_flops_match_torchs_count(bge_m3, bge_m3_dir, heads):
    from server.embedding.model import EmbedItem

    items = [EmbedItem(ids, **heads) for ids in text_rows(LENGTHS)]
    costs = [bge_m3.cost(it) for it in items]
    assert costs == LENGTHS
    padded = flops.forward_flops("embedding", bge_m3_dir, [max(costs)] * len(costs), **heads)
    assert measured(lambda: bge_m3.run_batch(items)) == pytest.approx(padded, rel=EXACT)
    real = flops.forward_flops("embedding", bge_m3_dir, costs, **heads)
    assert measured_real(bge_m3.run_batch, items) == pytest.approx(real, rel=EXACT)
    assert real < padded


def test_reranker_flops_match_torchs_count(reranker, reranker_dir):
    pairs = text_rows(LENGTHS, seed=1)
    costs = [reranker.cost(p) for p in pairs]
    padded = flops.forward_flops("reranker", reranker_dir, [max(costs)] * len(costs))
    assert measured(lambda: reranker.run_batch(pairs)) == pytest.approx(padded, rel=EXACT)
    real = flops.forward_flops("reranker", reranker_dir, costs)
    assert measured_real(reranker.run_batch, pairs) == pytest.approx(real, rel=EXACT)


def test_asr_flops_match_torchs_count(sensevoice, sensevoice_dir):
    items = asr_items(sensevoice, [0.5, 1.0, 2.5, 4.0])
    costs = [sensevoice.cost(it) for it in items]
    # The encoder's frames: the LFR features and the 4 query frames.
    assert [flops.encoder_frames(c, sensevoice_dir) for c in costs] == [it.features.shape[0] + 4 for it in items]
    padded = flops.forward_flops("asr", sensevoice_dir, [max(costs)] * len(costs))
    assert measured(lambda: sensevoice.run_batch(items)) == pytest.approx(padded, rel=EXACT)
    real = flops.forward_flops("asr", sensevoice_dir, costs)
    assert measured_real(sensevoice.run_batch, items) == pytest.approx(real, rel=EXACT)


def test_asr_frames_of_clips_not_whole_10ms_frames(sensevoice, sensevoice_dir):
    # 1.045 s: cost 104 (10 ms frames), 103 fbank frames where 104 x 10 ms would have 102, which
    # LFR (ceil of / 6) makes 18 frames rather than 17: the count is one frame short at most.
    seconds = [1.045, 1.0405, 2.0199]
    for item in asr_items(sensevoice, seconds):
        got, actual = flops.encoder_frames(sensevoice.cost(item), sensevoice_dir), item.features.shape[0] + 4
        assert actual - 1 <= got <= actual


@pytest.mark.parametrize("kind", ["embedding", "reranker", "asr"])
def test_every_part_of_the_count_is_checked(kind, bge_m3, reranker, sensevoice, bge_m3_dir, reranker_dir,
                                            sensevoice_dir):
    """Leaving out any part (attention, the heads, the FSMN) would
    break the agreement above: each part is far larger than its tolerance, on padded and real rows."""
    model_dir = {"embedding": bge_m3_dir, "reranker": reranker_dir, "asr": sensevoice_dir}[kind]
    costs = ([sensevoice.cost(it) for it in asr_items(sensevoice, [0.5, 1.0, 2.5, 4.0])] if kind == "asr"
             else LENGTHS)
    for rows in (costs, [max(costs)] * len(costs)):
        terms = flops.flop_terms(kind, model_dir, rows, sparse=kind == "embedding", colbert=kind == "embedding")
        total = sum(terms.values())
        for name, value in terms.items():
            if kind != "asr" and name == "fsmn":
                continue
            assert value > 1e3 * EXACT * total, (kind, name, terms)
        # The bge-m3 pooler alone (2 H^2 a row, on the tiny model ~0.1% of a pass) is caught too.
        if kind == "embedding":
            pooler = total - flops.forward_flops(kind, model_dir, rows, sparse=True, colbert=True, pooler=False)
            assert pooler > 1e3 * EXACT * total


def test_counts_scale_with_the_architecture(tmp_path, bge_m3_dir):
    """Read from the directory's config: more layers, more FLOPs, in proportion for the layers."""
    import json
    import shutil

    deeper = tmp_path / "deeper"
    shutil.copytree(bge_m3_dir, deeper)
    config = json.loads((deeper / "config.json").read_text())
    config["num_hidden_layers"] *= 2
    (deeper / "config.json").write_text(json.dumps(config))
    base = flops.flop_terms("embedding", bge_m3_dir, LENGTHS)
    double = flops.flop_terms("embedding", deeper, LENGTHS)
    assert double["linear"] == 2 * base["linear"] and double["attention"] == 2 * base["attention"]
    assert double["head"] == base["head"]
    with pytest.raises(ValueError):
        flops.forward_flops("vision", bge_m3_dir, LENGTHS)


def test_matmul_peak_is_measured_and_bounded():
    started = time.perf_counter()
    peak = flops.matmul_peak_flops(torch.float32, CPU, size=256, seconds=0.3)
    assert 1e8 < peak < 1e15  # a CPU does more than 0.1 GFLOP/s in float32, and less than a PFLOP/s
    assert time.perf_counter() - started < 3
