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
  did before server/compute/cpu_bf16.py) and "float32-packed" (cpu_bf16's packed layers run in
  float32): how much of the gain is bfloat16 arithmetic and how much packing and fusing;
  --profile prints where each dtype's time goes.

    python scripts/bench_dtype.py --size base --out bench_dtype_base.json
    python scripts/bench_dtype.py --size full --max-seconds 180

Random weights compute as fast as real ones, but their fidelity figures are only indicative: a
trained model's activations differ (margins, outliers). Pass a real model with --model-dir
embedding=models/bge-m3 to measure that.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from benchlib.dtype_cases import CASES
from benchlib.dtype_machine import cpu_flags, gemm_peak
from benchlib.dtype_report import markdown
from benchlib.dtype_variants import CPU, run_kind
from benchlib.models import build
from server.families import make_settings
from server.compute.tiny_xlmr import XLMR_SIZES

# Workload per size: texts / pairs / clips. "full" is kept small so a run stays within minutes.
WORKLOAD = {"tiny": (64, 64, 16), "small": (64, 64, 16), "base": (48, 48, 12), "full": (32, 32, 8)}


def run(args) -> None:
    """Every model of --models in every variant, each printed as it is measured, then all of them."""
    if args.threads:
        torch.set_num_threads(args.threads)
    from server.compute.cpu_bf16 import fast_path

    given = dict(item.split("=", 1) for item in args.model_dir)
    settings = make_settings()
    variants = ["float32", "bfloat16"] + (["bfloat16-eager", "float32-packed"] if args.attribution else [])
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu flags": cpu_flags(),
           "machine": platform.machine(), "cpu_bf16 fast path": fast_path(CPU, torch.bfloat16),
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "default"), "load average": os.getloadavg()[0]}
    width = (XLMR_SIZES[args.size] or {"hidden_size": 32}).get("hidden_size", 1024)
    env["linear GFLOP/s (CPU time)"] = {k: round(v) for k, v in gemm_peak(max(width, 256)).items()}
    print(json.dumps(env), flush=True)
    results = []
    for kind in args.models.split(","):
        # Under --cache, a folder per size: the models of every size stay built for the next run.
        path = Path(given[kind]) if kind in given else build(kind, args.size, args.cache / args.size)
        n = args.items or WORKLOAD[args.size][list(CASES).index(kind)]
        results.append(run_kind(kind, path, variants, n, args, settings))
        print(markdown(results[-1:], args.size), flush=True)
        for v, ops in results[-1].get("profile", {}).items():
            print(f"\n{kind} {v}: " + ", ".join(f"{o['op']} {100 * o['share']:.0f}%" for o in ops[:10]), flush=True)
    env["load average after"] = os.getloadavg()[0]
    print("\n" + markdown(results, args.size))
    if args.out:
        args.out.write_text(json.dumps({"size": args.size, "env": env, "results": results}, indent=2))

