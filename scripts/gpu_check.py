"""One-shot check of the server on a CUDA GPU, in float16: fidelity, speed, out-of-memory, memory.

Run by scripts/gpu_check.sh on a GPU host (or by hand), from the repository root:

    python scripts/gpu_check.py OUT_DIR [--size full|tiny] [--device cuda|cpu]

For each model (bge-m3, bge-reranker-v2-m3, SenseVoiceSmall), random weights of the named size
(full: XLM-R large, 24 x 1024, for both text models, SenseVoiceSmall's real encoder; built once and
cached under --cache), the reduced dtype (float16 on CUDA; bfloat16 on CPU, where the server refuses
float16: the CPU run is a dry run of this script, not a measurement) against float32, it measures:

1. fidelity of the reduced dtype against float32, same weights, same device, through the server's
   adapters (scripts/benchlib/dtype_cases.py): dense and ColBERT cosine, sparse weights (max |diff|,
   same keys), reranker logit and score max |diff|, transcripts equal (tests/data's speech);
2. the adapter alone at the GPU batch budget (16,384 padded tokens: 32 rows of 512; SenseVoice:
   240 s of audio, 8 segments of 30 s): tokens (audio seconds) per second, achieved TFLOP/s
   (scripts/benchlib/flops.py) and its share of the measured float16 matmul peak and of the datasheet's;
3. peak GPU memory with all three models loaded and 8,192-token inputs at the budget, and which
   attention kernel runs;
4. out of memory: the server (in this process, so that a ballast tensor can leave it little free
   memory) with a batch budget far past the card's memory (--max-batch-tokens 10,000,000) must
   split a pass that does not fit, not fail its requests: oom_splits and failures;
5. the server end to end (its own process, --device cuda --dtype float16, 64 concurrent clients,
   scripts/bench.py's load driver and workloads) against the offline references on the same GPU
   (BGEM3FlagModel.encode, FlagReranker.compute_score, funasr AutoModel.generate), and a lone
   request against its forward pass.

Every step is bounded in time; a failing step records its error in the JSON and the next one runs.
OUT_DIR/gpu_check.json is rewritten after every step, so a run cut short keeps what it measured.
Estimates at full size on an H100 (first run; a second run on the same machine skips the model
builds) are in each step's ``budget`` below: about 5 minutes in all.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import io
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import (
    dtype_cases,
    inputs,
    metrics,
    models,
    our_server,
    tables,
    throughput_systems,
    throughput_workloads,
)
from benchlib.endpoint import Endpoint
from benchlib.throughput import measure as measure_workload

from server.config import Settings
from server.engine.runtime import named
from server.families import FAMILIES

KINDS = ("embedding", "reranker", "asr")
SAMPLE_RATE = 16000
# Datasheet dense (no sparsity) float16/bfloat16 tensor-core peaks, FLOP/s.
DATASHEET = [("H200", 989.4e12), ("H100 PCIe", 756.0e12), ("H100 NVL", 835.0e12), ("H100", 989.4e12),
             ("A100", 312.0e12), ("L40S", 362.05e12), ("L4", 121.0e12)]
STEP_BUDGET_S = {  # full size on an H100; each step stops starting new work past its budget
    "environment": 10,  # matmul peak: ~3 s
    "build": 120,  # first run ~60 s (random init + save of 2 x 1.2 GB + 0.9 GB); then ~0 s (cached)
    "fidelity": 60,  # 6 adapter loads ~25 s, 64 texts / 64 pairs / 16 clips in both dtypes ~10 s
    "throughput": 40,  # ~5 s a model at most
    "memory": 30,  # three passes at the budget with 8,192-token rows, one profiled pass: ~10 s
    "oom": 60,  # in-process server start ~10 s, 32 x 8,192 tokens through halvings: ~10-20 s
    "server": 180,  # one server with all three models (~30 s start), per model: offline ~10-20 s,
    #                 closed loop <= --max-seconds (15 s), lone requests ~2 s: ~130 s
}


# ---- bookkeeping ------------------------------------------------------------------------------------


class Check:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "steps": {}}
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.dtype = torch.float16 if self.cuda else torch.bfloat16
        self.dtype_name = str(self.dtype).removeprefix("torch.")
        self.dirs: dict[str, Path] = {}
        self.low: dict[str, object] = {}  # the reduced-dtype adapters, kept for the later steps
        self.settings = Settings()

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.started)

    def step(self, name: str, fn) -> None:
        budget = STEP_BUDGET_S.get(name, 60) * (self.args.budget_s / 330)
        entry: dict = {"budget_s": round(budget, 1)}
        self.report["steps"][name] = entry
        if self.left() <= 5:
            entry["skipped"] = "the run's time budget (--budget-s) is spent"
            print(f"\n## {name}: skipped (time budget spent)", flush=True)
            self.save()
            return
        print(f"\n## {name}", flush=True)
        started = time.monotonic()
        deadline = started + min(budget, self.left())
        try:
            entry["result"] = fn(deadline)
        except BaseException as err:
            if isinstance(err, KeyboardInterrupt):
                raise
            entry["error"] = f"{type(err).__name__}: {err}"
            entry["traceback"] = traceback.format_exc()[-4000:]
            print(f"  FAILED: {entry['error']}\n{entry['traceback']}", flush=True)
        entry["seconds"] = round(time.monotonic() - started, 1)
        if self.cuda:
            entry["cuda max allocated GiB"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)
        print(f"  ({entry['seconds']} s)", flush=True)
        self.save()

    def save(self) -> None:
        self.report["seconds"] = round(time.monotonic() - self.started, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=2, default=_jsonable))

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


def table(rows: list[dict]) -> str:
    return tables.markdown(rows) if rows else "(nothing)"


def load(kind: str, path: Path, device: torch.device, dtype: torch.dtype):
    """The adapter exactly as server.engine.runtime.build makes it (without the batcher)."""
    model = named(FAMILIES[kind].adapter)(path, device, dtype)
    model.warm_up()
    return model


def free() -> None:
    """Collect what the caller dropped and hand cached device memory back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed_median(fn, sync, deadline: float, repeats: int, warm: int = 2) -> tuple[float, int]:
    """Median seconds of ``fn()`` over up to ``repeats`` runs after ``warm`` warm-ups, stopping at
    ``deadline`` (at least one timed run)."""
    for _ in range(warm):
        fn()
    sync()
    samples: list[float] = []
    while not samples or (len(samples) < repeats and time.monotonic() < deadline):
        t = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples), len(samples)


# ---- steps ------------------------------------------------------------------------------------------


def environment(c: Check, deadline: float) -> dict:
    import importlib.metadata as md

    import FlagEmbedding  # noqa: F401

    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(c.device),
           "dtype": c.dtype_name, "cpu threads": torch.get_num_threads()}
    for dist in ("transformers", "tokenizers", "huggingface_hub", "FlagEmbedding", "funasr", "av", "silero-vad",
                 "fastapi", "numpy", "accelerate", "peft"):
        try:
            env[dist] = md.version(dist)
        except md.PackageNotFoundError:
            env[dist] = None
    env["sdpa enabled"] = {"flash": torch.backends.cuda.flash_sdp_enabled(),
                           "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                           "math": torch.backends.cuda.math_sdp_enabled(),
                           "cudnn": getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: None)()}
    if c.cuda:
        p = torch.cuda.get_device_properties(c.device)
        env.update({"gpu": p.name, "capability": f"{p.major}.{p.minor}", "SMs": p.multi_processor_count,
                    "memory GiB": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda})
        env["datasheet dense fp16 TFLOP/s"] = next((v / 1e12 for k, v in DATASHEET if k in p.name), None)
    try:
        from benchlib.flops import matmul_peak_flops

        seconds = 2.0 if c.cuda else 0.5
        env["matmul peak TFLOP/s"] = matmul_peak_flops(c.dtype, c.device, seconds=seconds) / 1e12
        env["matmul peak dtype"] = c.dtype_name
    except ImportError as err:
        env["matmul peak TFLOP/s"] = None
        env["matmul peak error"] = f"scripts/benchlib/flops.py: {err}"
    c.report["environment"] = env
    print(json.dumps(env, indent=1), flush=True)
    return env


def build_models(c: Check, deadline: float) -> dict:
    out = {}
    for kind in KINDS:
        t = time.perf_counter()
        c.dirs[kind] = models.build(kind, c.args.size, Path(c.args.cache) / c.args.size)
        out[kind] = {"dir": str(c.dirs[kind]), "seconds": round(time.perf_counter() - t, 1)}
        print(f"  {kind}: {out[kind]}", flush=True)
    return out


def _items_of(case, budget: int, max_size: int) -> tuple[list, list[list]]:
    batches = dtype_cases.batches_of(case.items, case.cost, budget, max_size)
    return case.items, batches


def fidelity(c: Check, deadline: float) -> dict:
    """Reduced dtype against float32 on the same weights and device, on scripts/benchlib/dtype_cases.py's
    workloads batched as the server batches them at this device's budget."""
    n = {"embedding": 64, "reranker": 64, "asr": 16}
    results, rows = {}, []
    for kind in KINDS:
        if time.monotonic() > deadline:
            results[kind] = {"skipped": "step budget spent"}
            continue
        try:
            ref = load(kind, c.dirs[kind], c.device, torch.float32)
            case = dtype_cases.CASES[kind](ref, n[kind], c.settings)
            budget = int(c.settings.asr_max_batch_seconds * 100) if kind == "asr" else c.settings.batch_tokens(c.device.type)
            items, batches = _items_of(case, budget, c.settings.max_batch_size)
            ref_out = {id(i): o for b in batches for i, o in zip(b, ref.run_batch(b))}
            del ref
            free()
            low = load(kind, c.dirs[kind], c.device, c.dtype)
            low_out = {id(i): o for b in batches for i, o in zip(b, low.run_batch(b))}
            c.low[kind] = low
            pairs = [(ref_out[id(i)], low_out[id(i)]) for i in items]
            failed = sum(isinstance(b, BaseException) for _, b in pairs)
            ok = [(a, b) for a, b in pairs if not isinstance(a, BaseException) and not isinstance(b, BaseException)]
            figures = case.compare([a for a, _ in ok], [b for _, b in ok]) if ok else {}
            figures = {"items": len(items), "batches": len(batches), "non-finite in reduced dtype": failed, **figures}
            if kind == "embedding":
                figures["sparse same keys"] = statistics.fmean(set(a.sparse) == set(b.sparse) for a, b in ok)
            if kind == "asr":
                figures["texts equal"] = f"{sum(a.text == b.text for a, b in ok)} of {len(ok)}"
            results[kind] = figures
            rows.append({"model": kind, **{k: v for k, v in figures.items() if k != "items"}})
        except Exception as err:  # noqa: BLE001
            results[kind] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
            print(f"  {kind} FAILED: {results[kind]['error']}", flush=True)
    for row in rows:
        print(f"\n{table([row])}", flush=True)
    return results


def _speech(seconds: float, seed: int) -> np.ndarray:
    return inputs.speech_clip(seconds, seed).astype(np.float32)


def _budget_batch(c: Check, kind: str, model, row_tokens: int, rows: int):
    """A batch at the budget: ``rows`` rows of ``row_tokens`` tokens (text models), or of 30 s
    segments with their features computed as request preparation computes them (SenseVoice)."""
    from server.embeddings.model import EmbedItem
    from server.transcription.model import AsrItem

    rng = np.random.default_rng(0)
    if kind == "asr":
        return [model.with_features(AsrItem(_speech(30.0, 10 + i))) for i in range(rows)]
    specials = {model.tokenizer.pad_token_id, model.tokenizer.bos_token_id, model.tokenizer.eos_token_id,
                model.tokenizer.unk_token_id}
    vocab = [i for i in range(len(model.tokenizer)) if i not in specials]
    if kind == "embedding":
        return [EmbedItem(model.wrap_ids(rng.choice(vocab, row_tokens - 2).tolist())) for _ in range(rows)]
    query = rng.choice(vocab, 16).tolist()
    return [model.pair(query, rng.choice(vocab, row_tokens - 16 - model.pair_overhead).tolist()) for _ in range(rows)]


def throughput(c: Check, deadline: float) -> dict:
    from benchlib.flops import forward_flops

    env = c.report.get("environment", {})
    peak = env.get("matmul peak TFLOP/s")
    sheet = env.get("datasheet dense fp16 TFLOP/s")
    budget = c.settings.batch_tokens(c.device.type)
    results, rows = {}, []
    for kind in KINDS:
        model = c.low.get(kind)
        if model is None or time.monotonic() > deadline:
            results[kind] = {"skipped": "no reduced-dtype adapter (fidelity failed)" if model is None else "step budget"}
            continue
        if kind == "asr":
            n, row = 8, 3000  # 8 x 30 s = 240 s, asr_max_batch_seconds
            batch = _budget_batch(c, kind, model, 0, n)
            costs = [model.cost(i) for i in batch]
            unit, units = "audio s", sum(len(i.audio) for i in batch) / SAMPLE_RATE
        else:
            row = 512
            n = budget // row
            batch = _budget_batch(c, kind, model, row, n)
            costs = [model.cost(i) for i in batch]
            unit, units = "tokens", float(sum(costs))
        kind_deadline = time.monotonic() + (deadline - time.monotonic()) / (len(KINDS) - KINDS.index(kind))
        seconds, repeats = timed_median(lambda m=model, b=batch: m.run_batch(b), c.sync, kind_deadline, repeats=20)
        flops = forward_flops(kind, c.dirs[kind], [max(costs)] * len(costs))
        achieved = flops / seconds / 1e12
        figures = {"rows": n, "row cost": max(costs), "padded cost": n * max(costs), "pass ms": 1000 * seconds,
                   "repeats": repeats, f"{unit}/s": units / seconds, "TFLOP/s": achieved,
                   "share of measured matmul peak": achieved / peak if peak else None,
                   "share of datasheet peak": achieved / sheet if sheet else None}
        results[kind] = figures
        rows.append({"model": kind, **figures})
    print(table(rows), flush=True)
    if peak or sheet:
        print(f"\nmatmul peak measured {peak and round(peak, 1)} TFLOP/s ({c.dtype_name}), datasheet dense {sheet} TFLOP/s")
    return results


def memory(c: Check, deadline: float) -> dict:
    """All three reduced-dtype models loaded; one pass each at the budget with the longest inputs:
    8,192-token rows for the text models (2 rows = 16,384 padded tokens), 8 x 30 s of audio."""
    out: dict = {}
    loaded = {k: m for k, m in c.low.items() if m is not None}
    out["models loaded"] = sorted(loaded)
    out["attention"] = {}
    if "embedding" in loaded:
        out["attention"]["bge-m3 _attn_implementation"] = loaded["embedding"].model.model.config._attn_implementation
    if "reranker" in loaded:
        out["attention"]["reranker _attn_implementation"] = loaded["reranker"].model.config._attn_implementation
    out["attention"]["sdpa enabled"] = c.report.get("environment", {}).get("sdpa enabled")
    if c.cuda:
        gc.collect()
        torch.cuda.empty_cache()
        out["allocated GiB with models loaded"] = torch.cuda.memory_allocated(c.device) / 2**30
    long_rows = 8192 if c.cuda else 1024  # a CPU dry run at tiny size: shorter rows, same code
    budget = c.settings.batch_tokens(c.device.type)
    for kind, model in loaded.items():
        if time.monotonic() > deadline:
            break
        if kind == "asr":
            batch = _budget_batch(c, kind, model, 0, 8)
        else:
            batch = _budget_batch(c, kind, model, long_rows, max(1, budget // long_rows))
            if kind == "embedding":
                batch = [dataclasses.replace(i, sparse=True, colbert=True) for i in batch]
        if c.cuda:
            torch.cuda.reset_peak_memory_stats(c.device)
            before = torch.cuda.memory_allocated(c.device)
        t = time.perf_counter()
        results = model.run_batch(batch)
        c.sync()
        entry = {"rows": len(batch), "row cost": max(model.cost(i) for i in batch), "seconds": time.perf_counter() - t,
                 "failed items": sum(isinstance(r, BaseException) for r in results)}
        if c.cuda:
            entry["peak allocated GiB"] = torch.cuda.max_memory_allocated(c.device) / 2**30
            entry["peak over loaded GiB"] = (torch.cuda.max_memory_allocated(c.device) - before) / 2**30
            entry["reserved GiB"] = torch.cuda.memory_reserved(c.device) / 2**30
        out[kind] = entry
    if c.cuda:
        out["max reserved GiB (process, all steps so far)"] = torch.cuda.max_memory_reserved(c.device) / 2**30
    out["sdpa kernels seen"] = _attention_kernels(c, loaded.get("embedding"))
    print(json.dumps(out, indent=1, default=_jsonable), flush=True)
    return out


def _attention_kernels(c: Check, model) -> list[str] | None:
    """Names of the device kernels of one bge-m3 pass over 2 x 512 tokens that look like attention."""
    if model is None or not c.cuda:
        return None
    from torch.profiler import ProfilerActivity, profile

    batch = _budget_batch(c, "embedding", model, 512, 2)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        model.run_batch(batch)
        c.sync()
    names = {e.key for e in prof.key_averages()}
    words = ("flash", "fmha", "attention", "attn", "efficient", "softmax", "sdpa", "cutlass")
    return sorted(n[:120] for n in names if any(w in n.lower() for w in words))


def out_of_memory(c: Check, deadline: float) -> dict:
    """A server in this process (serve_in_thread) with --max-batch-tokens 10,000,000 and
    --max-batch-size 64, one request of ``rows`` inputs of 8,192 tokens (one request: its items
    batch freely under fair scheduling). On CUDA a ballast tensor leaves free about a quarter of
    what the whole pass needs (measured by the memory step), so the first passes fail with a real
    CUDA out-of-memory error and must be halved. Expected: oom_splits >= 1, no failed item, 200."""
    import httpx

    from server.background import free_port, serve_in_thread

    rows = 32 if c.cuda else 4
    tokens = 8192 if c.cuda else 2048
    settings = Settings(embedding_model=str(c.dirs["embedding"]), reranker_model="none", asr_model="none",
                        host="127.0.0.1", port=free_port(), log_level="warning", device=str(c.device),
                        dtype=c.dtype_name, max_batch_tokens=10_000_000, max_batch_size=64, max_pass_seconds=0,
                        offline=True)
    out: dict = {"rows": rows, "tokens per row": tokens}
    ballast = None
    with serve_in_thread(settings) as srv:
        batcher = srv.runtime.served["embedding"].batcher
        if c.cuda:
            per_row = None
            mem = c.report["steps"].get("memory", {}).get("result", {}).get("embedding", {})
            if mem.get("peak over loaded GiB") and mem.get("rows"):
                per_row = mem["peak over loaded GiB"] * 2**30 / mem["rows"] * tokens / mem.get("row cost", tokens)
            per_row = per_row or 400 * 2**20  # ~0.4 GiB a 8,192-token row of XLM-R large in float16
            gc.collect()
            torch.cuda.empty_cache()
            free_bytes, _ = torch.cuda.mem_get_info(c.device)
            leave = int(per_row * rows / 4)
            out.update({"free GiB before ballast": free_bytes / 2**30, "estimated GiB a row": per_row / 2**30,
                        "left free GiB": leave / 2**30})
            if free_bytes > leave:
                ballast = torch.empty(free_bytes - leave, dtype=torch.uint8, device=c.device)
        rng = np.random.default_rng(1)
        body = {"model": "bge-m3", "input": [rng.integers(5, 1000, tokens - 2).tolist() for _ in range(rows)]}
        before = dataclasses.replace(batcher.stats)
        t = time.perf_counter()
        with httpx.Client(base_url=srv.url, timeout=max(30.0, deadline - time.monotonic())) as http:
            response = http.post("/v1/embeddings", json=body)
        out["seconds"] = time.perf_counter() - t
        after = batcher.stats
        out.update({"status": response.status_code, "oom_splits": after.oom_splits - before.oom_splits,
                    "failed items": after.failed - before.failed, "passes": after.batches - before.batches,
                    "computed": after.computed - before.computed})
        if response.status_code != 200:
            out["body"] = response.text[:500]
        else:
            out["vectors"] = len(response.json()["data"])
        del ballast  # before the server stops: its drain must not run short of memory
    gc.collect()
    if c.cuda:
        torch.cuda.empty_cache()
    out["verdict"] = ("ok" if out["status"] == 200 and out["failed items"] == 0 and (out["oom_splits"] > 0 or not c.cuda)
                      else "FAILED")
    print(json.dumps(out, indent=1, default=_jsonable), flush=True)
    return out


# ---- the server against the offline references ---------------------------------------------------------


def _workloads(c: Check) -> dict:
    """scripts/bench.py's workloads, with 64 clients: embedding "mixed lengths", reranker "first 512
    tokens" (the pairs FlagReranker scores too), SenseVoice "10 s clips"."""
    tiny = c.args.size == "tiny" or not c.cuda
    items = {"embedding": 64 if tiny else 1024, "reranker": 64 if tiny else 1024, "asr": 16 if tiny else 256}
    args = lambda kind: SimpleNamespace(items=items[kind], clients=c.args.clients, lone=c.args.lone,
                                        max_seconds=c.args.max_seconds, dtype=c.dtype_name, rounds=1)
    found = {}
    for kind, pick in (("embedding", "mixed lengths"), ("reranker", "first 512 tokens"), ("asr", "10 s clips")):
        wl = next(w for w in throughput_workloads.WORKLOADS[kind](args(kind)) if pick in w.name)
        found[kind] = dataclasses.replace(wl, clients=c.args.clients)
    return found


def _wav_samples(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768


def _offline(c: Check, kind: str, wl, model_dir: Path) -> dict:
    """The reference library over the whole workload in one call, on the same device: seconds."""
    fp16, bf16 = c.dtype == torch.float16, c.dtype == torch.bfloat16
    dev = str(c.device)
    if kind == "embedding":
        from FlagEmbedding import BGEM3FlagModel

        texts = [r.json["input"] for r in wl.requests]
        model = BGEM3FlagModel(str(model_dir), use_fp16=fp16, use_bf16=bf16, devices=[dev])
        model.encode(texts[:8], batch_size=32, max_length=8192)
        c.sync()
        t = time.perf_counter()
        model.encode(texts, batch_size=32, max_length=8192)
        c.sync()
        return {"seconds": time.perf_counter() - t, "dtype": "float16" if fp16 else "bfloat16" if bf16 else "float32",
                "call": "BGEM3FlagModel.encode(batch_size=32, max_length=8192)"}
    if kind == "reranker":
        from FlagEmbedding import FlagReranker

        pairs = [[r.json["query"], d] for r in wl.requests for d in r.json["documents"]]
        # FlagReranker has use_fp16 only (no bfloat16): float32 on the CPU dry run.
        model = FlagReranker(str(model_dir), use_fp16=fp16, devices=[dev])
        model.compute_score(pairs[:8], batch_size=32, max_length=512)
        c.sync()
        t = time.perf_counter()
        model.compute_score(pairs, batch_size=32, max_length=512)
        c.sync()
        return {"seconds": time.perf_counter() - t, "dtype": "float16" if fp16 else "float32",
                "call": "FlagReranker.compute_score(batch_size=32, max_length=512)"}
    from funasr import AutoModel

    import server.transcription.quiet_funasr  # noqa: F401

    clips = [_wav_samples(r.audio) for r in wl.requests]
    errors = []
    # funasr's own fp16 switch casts the model and not the features; if it fails, float32 is the reference.
    for flags in (({"fp16": True} if fp16 else {"bf16": True} if bf16 else {}), {}):
        try:
            model = AutoModel(model=str(model_dir), device=dev, disable_update=True, disable_pbar=True,
                              ncpu=torch.get_num_threads(), **flags)
            model.kwargs["frontend"].dither = 0.0
            model.generate(input=clips[:1], disable_pbar=True)
            c.sync()
            t = time.perf_counter()
            model.generate(input=clips, batch_size=len(clips), disable_pbar=True)
            c.sync()
            return {"seconds": time.perf_counter() - t, "dtype": next(iter(flags), "float32"),
                    "call": f"AutoModel.generate(batch_size={len(clips)})", "errors": errors}
        except Exception as err:
            errors.append(f"{flags or 'float32'}: {type(err).__name__}: {str(err)[:300]}")
            if not flags:
                raise
    raise RuntimeError(errors)


def _bare_asr(c: Check, wl) -> float | None:
    """The reduced-dtype adapter on the lone clip, front end included (what the lone request's
    server-side work is), median of --lone runs: bench.py's `bare` on this device."""
    from server.transcription.model import AsrItem

    model = c.low.get("asr")
    if model is None or wl.lone is None:
        return None
    item = AsrItem(_wav_samples(wl.lone.audio))
    seconds, _ = timed_median(lambda: model.run_batch([item]), c.sync, time.monotonic() + 10, c.args.lone)
    return seconds


def server(c: Check, deadline: float) -> dict:
    from server.background import free_port, started_process

    workloads = _workloads(c)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--embedding-model", str(c.dirs["embedding"]), "--reranker-model", str(c.dirs["reranker"]),
           "--asr-model", str(c.dirs["asr"]), "--device", str(c.device), "--dtype", c.dtype_name,
           "--log-level", "warning", "--offline"]
    bare = {"asr": _bare_asr(c, workloads["asr"])}
    results, rows = {}, []
    measure_args = SimpleNamespace(max_seconds=c.args.max_seconds, lone=c.args.lone, rounds=1)
    t = time.perf_counter()
    with started_process(cmd, f"{url}/ready", ready_timeout=max(60.0, deadline - time.monotonic())):
        results["server start s"] = time.perf_counter() - t
        for kind, wl in workloads.items():
            if time.monotonic() > deadline:
                results[kind] = {"skipped": "step budget spent"}
                continue
            entry: dict = {"workload": wl.name, "requests": len(wl.requests), "clients": wl.clients}
            units = sum(r.units for r in wl.requests)
            try:
                ep = Endpoint(throughput_systems.SERVER, our_server.our_send(kind), url, lambda: metrics.scrape_counters(url))
                row = measure_workload(ep, wl, measure_args, bare.get(kind))
                entry["server"] = row
            except Exception as err:  # noqa: BLE001
                entry["server error"] = f"{type(err).__name__}: {err}"
                print(traceback.format_exc(), flush=True)
            try:
                off = _offline(c, kind, wl, c.dirs[kind])
                off[f"{wl.unit}/s"] = units / off["seconds"]
                entry["offline"] = off
            except Exception as err:  # noqa: BLE001
                entry["offline error"] = f"{type(err).__name__}: {err}"
                print(traceback.format_exc(), flush=True)
            finally:
                gc.collect()
                if c.cuda:
                    torch.cuda.empty_cache()
            srv, off = entry.get("server"), entry.get("offline")
            if srv and off:
                entry["server / offline"] = srv[f"{wl.unit}/s"] / off[f"{wl.unit}/s"]
            if srv and srv.get("lone forward ms"):
                entry["lone p50 / its forward pass"] = srv["lone p50 ms"] / srv["lone forward ms"]
            results[kind] = entry
            rows.append({"model": kind, "workload": wl.name, "unit": wl.unit,
                         "server /s": srv and srv[f"{wl.unit}/s"], "offline /s": off and off[f"{wl.unit}/s"],
                         "server / offline": entry.get("server / offline"), "p50 ms": srv and srv["p50 ms"],
                         "p99 ms": srv and srv["p99 ms"], "errors": srv and srv["errors"],
                         "mean batch": srv and srv["mean batch"], "lone p50 ms": srv and srv.get("lone p50 ms"),
                         "lone forward ms": srv and srv.get("lone forward ms"),
                         "lone / forward": entry.get("lone p50 / its forward pass"),
                         "offline dtype": off and off["dtype"]})
            print(table(rows[-1:]), flush=True)
            c.save()
    return results


# ---- main ---------------------------------------------------------------------------------------------


def summary(c: Check) -> str:
    """The short table printed last (a remote runner may return only the end of the output)."""
    lines = [f"# gpu_check: {c.args.size} size, {c.device}, {c.dtype_name} vs float32, {c.report['seconds']} s"]
    env = c.report.get("environment", {})
    lines.append(f"gpu {env.get('gpu')}, torch {env.get('torch')}, transformers {env.get('transformers')}, "
                 f"matmul peak {_f(env.get('matmul peak TFLOP/s'))} TFLOP/s measured, "
                 f"{env.get('datasheet dense fp16 TFLOP/s')} datasheet")
    for name, entry in c.report["steps"].items():
        state = "skipped" if "skipped" in entry else "FAILED " + entry["error"][:150] if "error" in entry else "ok"
        lines.append(f"- {name} ({entry.get('seconds', 0)} s): {state}")
        res = entry.get("result") or {}
        for kind in KINDS:
            r = res.get(kind) if isinstance(res, dict) else None
            if not isinstance(r, dict):
                continue
            if name == "fidelity":
                keys = ("dense cos min", "colbert cos min", "sparse max |diff|", "sparse same keys", "logit max |diff|",
                        "score max |diff|", "texts equal", "text+tags equal", "non-finite in reduced dtype", "error")
            elif name == "throughput":
                keys = ("tokens/s", "audio s/s", "TFLOP/s", "share of measured matmul peak", "share of datasheet peak")
            elif name == "memory":
                keys = ("peak allocated GiB", "peak over loaded GiB", "reserved GiB")
            elif name == "server":
                keys = ("server / offline", "lone p50 / its forward pass", "server error", "offline error")
            else:
                keys = ()
            shown = ", ".join(f"{k} {_f(r[k])}" for k in keys if k in r)
            if shown:
                lines.append(f"    {kind}: {shown}")
        if name == "oom" and isinstance(res, dict) and res:
            lines.append(f"    status {res.get('status')}, oom_splits {res.get('oom_splits')}, failed {res.get('failed items')}, "
                         f"passes {res.get('passes')}: {res.get('verdict')}")
        if name == "memory" and isinstance(res, dict) and res:
            lines.append(f"    attention {res.get('attention')}")
    return "\n".join(lines)


def _f(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", choices=["tiny", "small", "base", "full"], default="full")
    parser.add_argument("--device", default="cuda", help="cuda (float16) or cpu (bfloat16: a dry run)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "gpu-check-models",
                        help="where the random-weight models are built (reused by a second run)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--lone", type=int, default=20, help="repeats of the lone request")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="bound on each closed-loop load run")
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="the whole run; the steps' budgets scale with it and a step past it is skipped")
    parser.add_argument("--steps", default="environment,build,fidelity,throughput,memory,oom,server")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    logging_quiet()
    c = Check(args)
    steps = {"environment": environment, "build": build_models, "fidelity": fidelity, "throughput": throughput,
             "memory": memory, "oom": out_of_memory, "server": server}
    for name in args.steps.split(","):
        c.step(name, lambda deadline, fn=steps[name]: fn(c, deadline))
    c.save()
    text = summary(c)
    (c.out / "gpu_check_summary.md").write_text(text + "\n")
    print("\n" + text, flush=True)


def logging_quiet() -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.set_event_loop_policy(None)


if __name__ == "__main__":
    main()
