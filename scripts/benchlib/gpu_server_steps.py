"""The GPU check's steps through the server (benchlib/gpu_check.py): a pass that does not fit in the
GPU's memory split rather than failed, and the server end to end against the offline references on
the same GPU."""

from __future__ import annotations

import dataclasses
import gc
import io
import json
import sys
import time
import traceback
import wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from benchlib import throughput, throughput_workloads
from benchlib.endpoint import Endpoint
from benchlib.gpu_bookkeeping import Check, jsonable, table, timed_median
from benchlib.metrics import scrape_counters
from benchlib.our_server import our_send
from benchlib.throughput_systems import SERVER
from server.families import make_settings


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
    settings = make_settings(embedding_model=str(c.dirs["embedding"]), reranker_model="none", asr_model="none",
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
    print(json.dumps(out, indent=1, default=jsonable), flush=True)
    return out


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

    import server.asr.quiet_funasr  # noqa: F401

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
    from server.asr.model import AsrItem

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
                ep = Endpoint(SERVER, our_send(kind), url, lambda: scrape_counters(url))
                row = throughput.measure(ep, wl, measure_args, bare.get(kind))
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
