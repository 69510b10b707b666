"""On a CUDA GPU, in float16 (bfloat16 where said), at tiny size: the adapters and the server
against CPU float32 references, out-of-memory splitting on a real CUDA OOM, and SenseVoice's frame
counts in a bfloat16 batch. Skipped without CUDA (tests/conftest.py: they run with
TEST_DEVICE=cuda, as scripts/gpu_check.sh runs them).

Tolerances, float16 against float32 on the same weights. float16 keeps 11 significant bits (a
relative rounding of 2^-11 ~ 5e-4 per operation); products accumulate in float32 on tensor cores,
so a tiny model's outputs land within ~1e-3 relative of float32:

* dense vectors: cosine >= 0.999 (about 30x the error expected); ColBERT vectors, one per token,
  cosine >= 0.995 each (single tokens carry more rounding than the pooled <s> vector);
* sparse weights: the same token ids wherever float32 gives a weight above 0.01 (a weight at the
  ReLU's edge may appear or vanish), and max |diff| <= 0.02 (weights are ~0.5-1.5: ~2% of them);
* reranker: |sigmoid score diff| <= 0.02 and |logit diff| <= 0.1 (the tiny reranker's logits
  span several units; 0.1 is ~50x float16's rounding of a logit of that size);
* transcripts: the rich tags (language, emotion, event) equal, and the texts of at least 3 of 4
  clips equal: the tiny SenseVoice's random-weight text tokens sit on near-ties, which
  server/asr/ctc.py scores again in float32, so a flip stays possible but rare.

Each check also runs on the CPU in float16 (``check_*(torch.device("cpu"))``), which is how these
tolerances were tried before any GPU ran them.
"""

from __future__ import annotations

import asyncio
import gc
import os

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu

CPU = torch.device("cpu")
_name = os.environ.get("TEST_DEVICE", "cuda")
CUDA = torch.device(_name if _name.startswith("cuda") else "cuda")
TEXTS = ["The giant panda is a bear native to south central China.", "大熊猫是一种熊。", "hello world",
         "Search engine query document answer question model server text vector " * 12,
         "こんにちは世界。今日はいい天気ですね。", "0123456789 .,;:!?'\"()[]{}"]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def check_bge_m3(model_dir, device: torch.device) -> None:
    from server.embedding.model import BgeM3, EmbedItem

    ref = BgeM3(model_dir, CPU, torch.float32)
    low = BgeM3(model_dir, device, torch.float16)
    items = [EmbedItem(ids, sparse=True, colbert=True) for ids in ref.tokenize(TEXTS)]
    expected, got = ref.run_batch(items), low.run_batch(items)
    for text, a, b in zip(TEXTS, expected, got):
        assert not isinstance(b, BaseException), (text, b)
        assert _cos(a.dense, b.dense).min() >= 0.999, text
        assert _cos(a.colbert, b.colbert).min() >= 0.995, text
        assert {k for k, w in a.sparse.items() if w > 0.01} <= set(b.sparse), text
        assert max(abs(a.sparse.get(k, 0.0) - b.sparse.get(k, 0.0)) for k in {*a.sparse, *b.sparse}) <= 0.02, text


def check_reranker(model_dir, device: torch.device) -> None:
    from server.reranker.model import BgeReranker

    ref = BgeReranker(model_dir, CPU, torch.float32)
    low = BgeReranker(model_dir, device, torch.float16)
    query = ref.tokenize(["where do giant pandas live"])[0]
    pairs = [ref.pair(query, doc) for doc in ref.tokenize(TEXTS)]
    expected, got = ref.run_batch(pairs), low.run_batch(pairs)
    for a, b in zip(expected, got):
        assert not isinstance(b, BaseException), b
        assert abs(a - b) <= 0.1
        assert abs(1 / (1 + np.exp(-a)) - 1 / (1 + np.exp(-b))) <= 0.02


def _speech_clips() -> list[np.ndarray]:
    from pathlib import Path

    from server.asr.audio import decode_audio

    data = Path(__file__).resolve().parents[1] / "data" / "speech_pauses.flac"
    speech = decode_audio(data.read_bytes(), max_seconds=60)
    rng = np.random.default_rng(0)
    return [speech[s: s + int(sec * 16000)] for s, sec in
            ((int(rng.integers(0, len(speech) // 2)), sec) for sec in (3.0, 6.5, 9.0, 12.0))]


def check_sensevoice(model_dir, device: torch.device) -> None:
    from server.asr.model import AsrItem, SenseVoice

    ref = SenseVoice(model_dir, CPU, torch.float32)
    low = SenseVoice(model_dir, device, torch.float16)
    items = [AsrItem(clip, language=lang) for clip, lang in zip(_speech_clips(), ["auto", "en", "zh", "auto"])]
    expected, got = ref.run_batch(items), low.run_batch(items)
    assert not any(isinstance(b, BaseException) for b in got), got
    for a, b in zip(expected, got):
        assert (a.language, a.emotion, a.event) == (b.language, b.emotion, b.event)
        assert a.encoder_frames == b.encoder_frames
    assert sum(a.text == b.text for a, b in zip(expected, got)) >= 3, [(a.text, b.text) for a, b in zip(expected, got)]


def check_long_bfloat16_segment_batched_as_alone(model_dir, device: torch.device) -> None:
    """A 16 s segment (past 256 encoder frames, the last integer bfloat16 holds exactly) beside a
    20 s one: its frame count and text are what it gets alone."""
    from server.asr.model import AsrItem, SenseVoice

    sv = SenseVoice(model_dir, device, torch.bfloat16)
    noise = np.random.default_rng(0).standard_normal(16000 * 20).astype(np.float32) * 0.1
    segment, longer = AsrItem(noise[: 16000 * 16]), AsrItem(noise)
    alone = sv.run_batch([segment])[0]
    batched = sv.run_batch([segment, longer])[0]
    assert alone.encoder_frames > 256
    assert batched.encoder_frames == alone.encoder_frames
    assert batched.raw == alone.raw


def test_bge_m3_float16_on_cuda_matches_cpu_float32(bge_m3_dir):
    check_bge_m3(bge_m3_dir, CUDA)


def test_reranker_float16_on_cuda_matches_cpu_float32(reranker_dir):
    check_reranker(reranker_dir, CUDA)


def test_sensevoice_float16_on_cuda_matches_cpu_float32(sensevoice_dir):
    check_sensevoice(sensevoice_dir, CUDA)


def test_bfloat16_sensevoice_on_cuda_decodes_a_long_segment_batched_as_alone(sensevoice_dir):
    check_long_bfloat16_segment_batched_as_alone(sensevoice_dir, CUDA)


def test_server_on_cuda_in_float16_answers_as_cpu_float32(bge_m3_dir, reranker_dir):
    from server.embedding.model import BgeM3, EmbedItem
    from server.reranker.model import BgeReranker
    from tests.conftest import live_server

    embedder, reranker = BgeM3(bge_m3_dir, CPU, torch.float32), BgeReranker(reranker_dir, CPU, torch.float32)
    dense = np.array([r.dense for r in embedder.run_batch([EmbedItem(ids) for ids in embedder.tokenize(TEXTS)])])
    query = reranker.tokenize(["panda"])[0]
    logits = reranker.run_batch([reranker.pair(query, doc) for doc in reranker.tokenize(TEXTS)])
    with live_server(embedding_model=str(bge_m3_dir), reranker_model=str(reranker_dir), device=str(CUDA),
                     dtype="float16") as srv, srv.client() as http:
        assert srv.runtime.served["embedding"].service.model.device == CUDA
        body = http.post("/v1/embeddings", json={"model": "bge-m3", "input": TEXTS})
        assert body.status_code == 200, body.text
        got = np.array([d["embedding"] for d in sorted(body.json()["data"], key=lambda d: d["index"])])
        assert _cos(dense, got).min() >= 0.999
        rerank = http.post("/v1/rerank", json={"model": "bge-reranker-v2-m3", "query": "panda", "documents": TEXTS,
                                               "top_n": len(TEXTS)})
        assert rerank.status_code == 200, rerank.text
    for result in rerank.json()["results"]:
        assert abs(result["relevance_score"] - 1 / (1 + np.exp(-logits[result["index"]]))) <= 0.02


def test_cuda_out_of_memory_splits_the_batch_instead_of_failing(tmp_path_factory):
    """A real CUDA OOM: a ballast tensor leaves free about a quarter of what a pass of 32 rows of
    8,192 tokens needs, so the Batcher's pass fails and is halved until it fits; every item
    completes, with the vectors the pass gives without memory pressure. The model is 256 wide
    (~40 MB of activations a row, ~1.3 GB a pass) so that what is left free stays far above the
    allocator's granularity."""
    from server.embedding.model import BgeM3, EmbedItem
    from server.engine.batching import Batcher, model_thread
    from server.compute.tiny_xlmr import build_tiny_bge_m3

    bge_m3_dir = build_tiny_bge_m3(tmp_path_factory.mktemp("models") / "bge-m3-256", hidden_size=256,
                                   intermediate_size=1024, num_attention_heads=4, initializer_range=0.02)

    # The model's own worker thread, as the server has it: its cuBLAS handle and workspace exist
    # before the ballast goes in (a new thread would need them inside the little memory left).
    worker = model_thread("bge-m3")
    model = worker.submit(BgeM3, bge_m3_dir, CUDA, torch.float16).result()
    worker.submit(model.warm_up).result()
    rng = np.random.default_rng(0)
    items = [EmbedItem(model.wrap_ids(rng.integers(5, 1000, 8190).tolist())) for _ in range(32)]
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(CUDA)
    before = torch.cuda.memory_allocated(CUDA)
    unpressed = worker.submit(model.run_batch, items).result()
    need = torch.cuda.max_memory_allocated(CUDA) - before
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(CUDA)
    ballast = torch.empty(max(0, free - need // 4), dtype=torch.uint8, device=CUDA)

    async def go():
        b = Batcher(name="bge-m3", run_batch=model.run_batch, max_batch_cost=10_000_000, max_batch_size=64,
                    max_queue=64, executor=worker)
        b.start()
        try:
            return await asyncio.gather(*b.submit([(it, model.cost(it)) for it in items])), b.stats
        finally:
            await b.close()

    try:
        results, stats = asyncio.run(go())
    finally:
        del ballast
        torch.cuda.empty_cache()
    assert stats.oom_splits >= 1, (need, free)
    assert stats.failed == 0
    for a, b in zip(unpressed, results):
        assert _cos(a.dense, b.dense).min() >= 0.999
