"""The GPU check's steps on the models' adapters alone (benchlib/gpu_check.py): the environment and
the matmul peak, the models built, fidelity against float32, throughput at the batch budget, and
memory at the longest inputs."""

from __future__ import annotations

import dataclasses
import gc
import json
import platform
import statistics
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from benchlib import dtype_cases, inputs, models
from benchlib.gpu_bookkeeping import (
    Check,
    free,
    jsonable,
    load,
    table,
    timed_median,
)
from benchlib.models import KINDS
from server.asr.audio import SAMPLE_RATE
from server.families import FAMILIES

# Datasheet dense (no sparsity) float16/bfloat16 tensor-core peaks, FLOP/s.
DATASHEET = [("H200", 989.4e12), ("H100 PCIe", 756.0e12), ("H100 NVL", 835.0e12), ("H100", 989.4e12),
             ("A100", 312.0e12), ("L40S", 362.05e12), ("L4", 121.0e12)]


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
            family = FAMILIES[kind]
            budget = family.batch_budget(family.settings_of(c.settings), c.settings, c.device.type)
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
    from server.embedding.model import EmbedItem
    from server.asr.model import AsrItem

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
    print(json.dumps(out, indent=1, default=jsonable), flush=True)
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
