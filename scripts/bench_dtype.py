"""float32 against bfloat16 on CPU, model by model, through the server's own adapters: speed and fidelity.

For each model (embedding, reranker, asr) it builds a random-weight model of the named size (or takes
a real directory with --model-dir), loads it twice through the adapter the server uses
(``server.families.FAMILIES``: ``Adapter(path, device, dtype)`` then ``warm_up()``), once in float32
and once in bfloat16, and runs one fixed, seeded workload on both, batched as the server's batcher
batches it (sorted by length, at most --max-batch-size items and the server's padded-cost budget):

* throughput: tokens/s (embedding, reranker) or audio seconds/s (asr), best of the rounds for each
  batch, float32 and bfloat16 interleaved batch by batch (so a noisy neighbour on a shared CPU
  slows both alike), and the ratio;
* fidelity against float32: dense cosine (min, mean), ColBERT cosine (min), sparse weight max
  difference; reranker logit and score (sigmoid) max difference and same-order rate; transcription
  text equality (and with SenseVoice's tags);
* --attribution adds "bfloat16-eager" (the model cast to bfloat16 and run eagerly, as the server
  did before server/models/cpu_bf16.py) and "float32-packed" (cpu_bf16's packed layers run in
  float32): how much of the gain is bfloat16 arithmetic and how much packing and fusing;
  --profile prints where each dtype's time goes.

    python scripts/bench_dtype.py --size base --out bench_dtype_base.json
    python scripts/bench_dtype.py --size full --max-seconds 180

Random weights compute as fast as real ones, but their fidelity figures are only indicative: a
trained model's activations differ (margins, outliers). Pass a real model with --model-dir
embedding=models/bge-m3 to measure that.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

if "--passive" in sys.argv:  # before torch loads its OpenMP runtime
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.config import Settings
from server.engine.runtime import named
from server.families import FAMILIES
from server.models.tiny_xlmr import XLMR_SIZES
from server.transcription.tiny import SENSEVOICE_SIZES

CPU = torch.device("cpu")
WORDS = ("the giant panda is a bear native to south central china it eats bamboo and sleeps a lot "
         "rivers mountains 熊猫 竹子 世界 你好 today we test speech models search engine query document "
         "answer question vector dense sparse token embedding score rank language").split()
SPEECH = Path(__file__).resolve().parent.parent / "tests/data/speech_pauses.flac"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16,
          # --attribution: bfloat16 without the cpu_bf16 layers, and those layers run in float32.
          "bfloat16-eager": torch.bfloat16, "float32-packed": torch.float32}
# Workload per size: texts / pairs / clips. "full" is kept small so a run stays within minutes.
WORKLOAD = {"tiny": (64, 64, 16), "small": (64, 64, 16), "base": (48, 48, 12), "full": (32, 32, 8)}


# ---- models ------------------------------------------------------------------------------------------


def build(kind: str, size: str, root: Path) -> Path:
    from server.models.tiny_xlmr import build_tiny_bge_m3, build_tiny_reranker
    from server.transcription.tiny import build_tiny_sensevoice

    if kind == "asr":
        return build_tiny_sensevoice(root / size / kind, **SENSEVOICE_SIZES[size])
    builder = build_tiny_bge_m3 if kind == "embedding" else build_tiny_reranker
    # The builder's default initializer (0.2) saturates a deep model; 0.02 is XLM-R's own.
    return builder(root / size / kind, initializer_range=0.02, **XLMR_SIZES[size])


@contextmanager
def forced_fast_path(on: bool):
    """Load with the adapters' cpu_bf16 switch forced: off is the plain ``model.to(torch.bfloat16)``
    path; on in float32 runs the packed layers in float32."""
    from server.embeddings import model as bge_m3
    from server.rerank import model as reranker
    from server.transcription import model as sensevoice

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
    """The adapter, exactly as server.engine.runtime.build makes it (without the batcher)."""
    adapter = named(FAMILIES[kind].adapter)
    if variant in ("bfloat16-eager", "float32-packed"):
        with forced_fast_path(variant == "float32-packed"):
            model = adapter(path, CPU, DTYPES[variant])
    else:
        model = adapter(path, CPU, DTYPES[variant])
    model.warm_up()
    return model


def weight_mb(model) -> float:
    """Parameters, buffers and packed oneDNN weights of the adapter's torch module."""
    from server.models.cpu_bf16 import PackedLinear

    module = model.model
    total = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    total += sum(m.packed.numel() * m.packed.element_size() for m in module.modules() if isinstance(m, PackedLinear))
    return total / 2**20


# ---- workloads: items, the server's batching, units, and fidelity ----------------------------------------


def batches_of(items: list, cost: Callable[[Any], int], budget: int, max_size: int,
               min_efficiency: float = 0.85) -> list[list]:
    """Sorted by cost, grown while rows x longest row fits the budget, the size limit and the
    padding-efficiency floor: the shape of the batches the server's batcher forms under load."""
    items = sorted(items, key=cost)
    out, current = [], []
    for item in items:
        trial = current + [item]
        padded = len(trial) * cost(item)
        real = sum(cost(i) for i in trial)
        if current and (padded > budget or len(trial) > max_size or real / padded < min_efficiency):
            out.append(current)
            trial = [item]
        current = trial
    return out + ([current] if current else [])


def length_mix(rng: random.Random, n: int, longest: int) -> list[int]:
    """Half short (8-48), a third medium (48-256), the rest long (256-longest) token counts."""
    short = lambda: rng.randint(8, 48)  # noqa: E731
    medium = lambda: rng.randint(48, 256)  # noqa: E731
    long = lambda: rng.randint(256, longest)  # noqa: E731
    return [rng.choice([short] * 6 + [medium] * 4 + [long] * 2)() for _ in range(n)]


def token_ids(tokenize, rng: random.Random, length: int) -> list[int]:
    words = " ".join(rng.choice(WORDS) for _ in range(length))
    return tokenize(words)[:length]


@dataclass
class Case:
    unit: str
    items: list
    units: Callable[[list], float]  # real work in a batch, in `unit`
    cost: Callable[[Any], int]
    budget: int
    compare: Callable[[list, list], dict]  # fidelity of bf16 outputs against fp32 outputs
    outputs: dict = field(default_factory=dict)


def embedding_case(model, n: int, settings: Settings) -> Case:
    from server.embeddings.model import EmbedItem

    rng = random.Random(0)
    tok = lambda text: model.tokenize([text])[0][1:-1]  # noqa: E731
    items = [EmbedItem(model.wrap_ids(token_ids(tok, rng, k - 2)), sparse=True, colbert=True)
             for k in length_mix(rng, n, 512)]

    def compare(ref: list, got: list) -> dict:
        dense = [float(a.dense @ b.dense) for a, b in zip(ref, got)]
        colbert = [float((a.colbert * b.colbert).sum(1).min()) for a, b in zip(ref, got)]
        sparse = [max((abs(a.sparse.get(k, 0.0) - b.sparse.get(k, 0.0)) for k in {*a.sparse, *b.sparse}), default=0.0)
                  for a, b in zip(ref, got)]
        return {"dense cos min": min(dense), "dense cos mean": statistics.fmean(dense),
                "colbert cos min": min(colbert), "sparse max |diff|": max(sparse)}

    return Case("tokens", items, lambda b: sum(len(i.input_ids) for i in b), model.cost,
                settings.batch_tokens("cpu"), compare)


def reranker_case(model, n: int, settings: Settings) -> Case:
    rng = random.Random(1)
    tok = lambda text: model.tokenize([text])[0]  # noqa: E731
    queries = [token_ids(tok, rng, rng.randint(6, 24)) for _ in range(max(1, n // 8))]
    room = settings.reranker_max_length - model.pair_overhead
    pairs = [model.pair(q, token_ids(tok, rng, min(k, room - len(q))))
             for q in queries for k in length_mix(rng, 8, 500)]
    groups = [list(range(i, i + 8)) for i in range(0, len(pairs), 8)]

    def compare(ref: list, got: list) -> dict:
        sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        # Document pairs of one query that float32 and bfloat16 order alike (pairs float32 ties excluded).
        concordant = [(ref[i] - ref[j]) * (got[i] - got[j]) > 0
                      for g in groups for i in g for j in g if i < j and ref[i] != ref[j]]
        return {"logit max |diff|": max(abs(a - b) for a, b in zip(ref, got)),
                "score max |diff|": max(abs(sig(a) - sig(b)) for a, b in zip(ref, got)),
                "logit spread": max(ref) - min(ref),
                "pairs same order": statistics.fmean(concordant)}

    return Case("tokens", pairs, lambda b: sum(len(p) for p in b), model.cost, settings.batch_tokens("cpu"), compare)


def asr_case(model, n: int, settings: Settings) -> Case:
    from server.transcription.audio import decode_audio
    from server.transcription.model import SAMPLE_RATE, AsrItem

    speech = decode_audio(SPEECH.read_bytes(), max_seconds=60)
    rng = np.random.default_rng(2)
    tiled = np.tile(speech, 4)
    items = []
    for i in range(n):
        seconds = float(rng.uniform(3, 20))
        start = int(rng.integers(0, len(speech)))
        items.append(AsrItem(tiled[start:start + int(seconds * SAMPLE_RATE)].copy(),
                             language=["auto", "en", "zh"][i % 3]))

    def compare(ref: list, got: list) -> dict:
        from difflib import SequenceMatcher

        return {"text equal": statistics.fmean(a.text == b.text for a, b in zip(ref, got)),
                "text+tags equal": statistics.fmean(a.raw == b.raw for a, b in zip(ref, got)),
                "text similarity": statistics.fmean(SequenceMatcher(None, a.text, b.text).ratio()
                                                    for a, b in zip(ref, got))}

    return Case("audio s", items, lambda b: sum(len(i.audio) for i in b) / SAMPLE_RATE, model.cost,
                int(settings.asr_max_batch_seconds * 100), compare)


CASES = {"embedding": embedding_case, "reranker": reranker_case, "asr": asr_case}


# ---- measuring ---------------------------------------------------------------------------------------


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


def gemm_peak(width: int, rows: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of one linear layer (rows x width -> 4 width) as the models run it: float32 eager
    (what float32 serving runs), float32 and bfloat16 oneDNN-packed (what cpu_bf16 runs), bfloat16
    eager. Best of `repeats`, timed in CPU seconds per thread (a neighbour's load barely moves it)."""
    import torch.nn.functional as F

    from server.models.cpu_bf16 import PackedLinear, fast_path

    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, width, generator=g)
    w = torch.randn(4 * width, width, generator=g) / width ** 0.5
    b = torch.randn(4 * width, generator=g)
    xb, wb, bb = x.bfloat16(), w.bfloat16(), b.bfloat16()
    fns = {"float32": lambda: F.linear(x, w, b), "bfloat16-eager": lambda: F.linear(xb, wb, bb)}
    if fast_path(CPU, torch.bfloat16):
        packed32, packed16 = PackedLinear(w, b, dtype=torch.float32), PackedLinear(w, b)
        fns["float32-packed"] = lambda: packed32(x)
        fns["bfloat16-packed"] = lambda: packed16(xb)
    best = {k: math.inf for k in fns}
    with torch.inference_mode():
        for f in fns.values():
            f()
        for _ in range(repeats):
            for k, f in fns.items():
                t = time.process_time()
                f()
                best[k] = min(best[k], (time.process_time() - t) / torch.get_num_threads())
    flops = 2 * rows * width * 4 * width
    return {k: flops / v / 1e9 for k, v in best.items()}


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f in {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni"})


# ---- report ------------------------------------------------------------------------------------------


def fmt(value) -> str:
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.01:
            return f"{value:.1e}"
        return f"{value:.6f}" if 0.99 < value < 1.0 else f"{value:.2f}"
    return str(value)


def markdown(results: list[dict], size: str) -> str:
    lines = [f"| model ({size}) | dtype | throughput | speed-up | speed-up (CPU time) | weights MB | fidelity vs float32 |",
             "|---|---|---|---|---|---|---|"]
    timing = ("units/s", "seconds", "cpu seconds", "speed-up", "speed-up (cpu time)", "weights MB")
    for r in results:
        for v, m in r["variants"].items():
            fidelity = ", ".join(f"{k} {fmt(val)}" for k, val in m.items() if k not in timing)
            lines.append(f"| {r['kind']} | {v} | {m['units/s']:.1f} {r['unit']}/s | {m['speed-up']:.2f}x "
                         f"| {m['speed-up (cpu time)']:.2f}x | {m['weights MB']:.0f} | {fidelity or 'reference'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="embedding,reranker,asr")
    parser.add_argument("--size", choices=list(XLMR_SIZES), default="base")
    parser.add_argument("--model-dir", action="append", default=[], metavar="KIND=PATH",
                        help="a real model directory instead of random weights, e.g. embedding=models/bge-m3")
    parser.add_argument("--items", type=int, help="texts / pairs / clips per model (default by size)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds at most (after one warm-up round)")
    parser.add_argument("--max-seconds", type=float, default=240,
                        help="per model: no new round starts past this (at least one timed round runs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--attribution", action="store_true",
                        help="also run bfloat16-eager (no cpu_bf16 layers) and float32-packed (cpu_bf16 layers in float32)")
    parser.add_argument("--profile", action="store_true", help="print the top ops of each dtype")
    parser.add_argument("--passive", action="store_true",
                        help="OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning, so CPU "
                             "time counts work only (for a CPU shared with other jobs; serving spins by default)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bench_dtype_models",
                        help="where random-weight models are built (reused across runs)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from server.models.cpu_bf16 import fast_path

    given = dict(item.split("=", 1) for item in args.model_dir)
    settings = Settings()
    variants = ["float32", "bfloat16"] + (["bfloat16-eager", "float32-packed"] if args.attribution else [])
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu flags": cpu_flags(),
           "machine": platform.machine(), "cpu_bf16 fast path": fast_path(CPU, torch.bfloat16),
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "default"), "load average": os.getloadavg()[0]}
    width = (XLMR_SIZES[args.size] or {"hidden_size": 32}).get("hidden_size", 1024)
    env["linear GFLOP/s (CPU time)"] = {k: round(v) for k, v in gemm_peak(max(width, 256)).items()}
    print(json.dumps(env), flush=True)
    results = []
    for kind in args.models.split(","):
        path = Path(given[kind]) if kind in given else build(kind, args.size, args.cache)
        n = args.items or WORKLOAD[args.size][list(CASES).index(kind)]
        results.append(run_kind(kind, path, variants, n, args, settings))
        print(markdown(results[-1:], args.size), flush=True)
        for v, ops in results[-1].get("profile", {}).items():
            print(f"\n{kind} {v}: " + ", ".join(f"{o['op']} {100 * o['share']:.0f}%" for o in ops[:10]), flush=True)
    env["load average after"] = os.getloadavg()[0]
    print("\n" + markdown(results, args.size))
    if args.out:
        args.out.write_text(json.dumps({"size": args.size, "env": env, "results": results}, indent=2))


if __name__ == "__main__":
    main()
