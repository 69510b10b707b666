"""The dtypes compared (benchlib/dtype_compare.py): each model loaded through the server's adapter in
float32, bfloat16 and, for --attribution, bfloat16 without the packed layers and those layers in
float32; and one model's variants timed batch by batch on the same workload."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from benchlib.dtype_cases import CASES, batches_of
from server.config import Settings
from server.families import FAMILIES

CPU = torch.device("cpu")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16,
          # --attribution: bfloat16 without the cpu_bf16 layers, and those layers run in float32.
          "bfloat16-eager": torch.bfloat16, "float32-packed": torch.float32}


@contextmanager
def forced_fast_path(on: bool):
    """Load with the adapters' cpu_bf16 switch forced: off is the plain ``model.to(torch.bfloat16)``
    path; on in float32 runs the packed layers in float32."""
    from server.embedding import model as bge_m3
    from server.reranker import model as reranker
    from server.asr import model as sensevoice

    modules = (bge_m3, reranker, sensevoice)
    saved = [m.fast_path for m in modules]
    for m in modules:
        m.fast_path = lambda device, dtype: on
    try:
        yield
    finally:
        for m, f in zip(modules, saved):
            m.fast_path = f


def load(kind: str, path: Path, variant: str):
    """The adapter, exactly as server.runtime.build makes it (without the batcher)."""
    adapter = FAMILIES[kind].load
    if variant in ("bfloat16-eager", "float32-packed"):
        with forced_fast_path(variant == "float32-packed"):
            model = adapter(path, CPU, DTYPES[variant])
    else:
        model = adapter(path, CPU, DTYPES[variant])
    model.warm_up()
    return model


def weight_mb(model) -> float:
    """Parameters, buffers and packed oneDNN weights of the adapter's torch module."""
    from server.compute.cpu_bf16 import PackedLinear

    module = model.model
    total = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    total += sum(m.packed.numel() * m.packed.element_size() for m in module.modules() if isinstance(m, PackedLinear))
    return total / 2**20


def run_kind(kind: str, path: Path, variants: list[str], n: int, args, settings: Settings) -> dict:
    started = time.monotonic()
    models = {}
    for v in variants:
        t = time.perf_counter()
        models[v] = load(kind, path, v)
        print(f"  {kind}: loaded {v} in {time.perf_counter() - t:.1f} s", flush=True)
    case = CASES[kind](models["float32"], n, settings)
    batches = batches_of(case.items, case.cost, case.budget, settings.max_batch_size)
    units = sum(case.units(b) for b in batches)
    best = {v: [math.inf] * len(batches) for v in variants}
    best_cpu = {v: [math.inf] * len(batches) for v in variants}
    outputs = {v: [] for v in variants}
    rounds = 0
    # Round 0 warms up and keeps every variant's outputs; later rounds only time. Variants take
    # turns batch by batch, in an order that rotates each round.
    while rounds <= args.rounds:
        order = variants[rounds % len(variants):] + variants[:rounds % len(variants)]
        for i, batch in enumerate(batches):
            for v in order:
                t, cpu = time.perf_counter(), time.process_time()
                out = models[v].run_batch(batch)
                elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
                if rounds == 0:
                    outputs[v].extend(out)
                else:
                    best[v][i] = min(best[v][i], elapsed)
                    best_cpu[v][i] = min(best_cpu[v][i], cpu)
        rounds += 1
        if rounds > 1 and time.monotonic() - started > args.max_seconds:
            break
    # Outputs were collected batch by batch: put them back in item order for the comparison.
    order_of = [id(item) for b in batches for item in b]
    index = {key: i for i, key in enumerate(order_of)}
    by_item = {v: [outputs[v][index[id(item)]] for item in case.items] for v in variants}
    result = {"kind": kind, "unit": case.unit, "items": len(case.items), "batches": len(batches),
              "units": units, "timed rounds": rounds - 1, "variants": {}}
    for v in variants:
        seconds, cpu = sum(best[v]), sum(best_cpu[v])
        result["variants"][v] = {"units/s": units / seconds, "seconds": seconds, "cpu seconds": cpu,
                                 "speed-up": sum(best["float32"]) / seconds,
                                 "speed-up (cpu time)": sum(best_cpu["float32"]) / cpu,
                                 "weights MB": weight_mb(models[v]),
                                 **({} if v == "float32" else case.compare(by_item["float32"], by_item[v]))}
    if args.profile:
        result["profile"] = {v: profile(models[v], batches) for v in variants}
    return result


def profile(model, batches: list[list], top: int = 12) -> list[dict]:
    """Self CPU time by op over one pass of the workload's two largest batches."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    chosen = sorted(batches, key=len)[-2:]
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in chosen:
            model.run_batch(b)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "self ms": e.self_cpu_time_total / 1000, "share": e.self_cpu_time_total / total,
             "calls": e.count} for e in events[:top]]
