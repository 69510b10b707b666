"""What this CPU offers bfloat16: its instruction-set flags, and one linear layer's GFLOP/s in each
variant (benchlib/dtype_compare.py prints them before the models)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from benchlib.dtype_variants import CPU


def gemm_peak(width: int, rows: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of one linear layer (rows x width -> 4 width) as the models run it: float32 eager
    (what float32 serving runs), float32 and bfloat16 oneDNN-packed (what cpu_bf16 runs), bfloat16
    eager. Best of `repeats`, timed in CPU seconds per thread (a neighbour's load barely moves it)."""
    import torch.nn.functional as F

    from server.compute.cpu_bf16 import PackedLinear, fast_path

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
