"""The GPU check's bookkeeping (benchlib/gpu_check.py): its report, device and time budget, step by
step, and the helpers every step shares."""

from __future__ import annotations

import gc
import json
import math
import statistics
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from benchlib import tables
from server.families import make_settings
from server.families import FAMILIES

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
        self.settings = make_settings()

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
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=2, default=jsonable))

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def jsonable(value):
    """``json.dumps``'s fallback for what the steps record: numpy scalars as numbers, the rest as text."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


def table(rows: list[dict]) -> str:
    return tables.markdown(rows) if rows else "(nothing)"


def load(kind: str, path: Path, device: torch.device, dtype: torch.dtype):
    """The adapter exactly as server.runtime.build makes it (without the batcher)."""
    model = FAMILIES[kind].load(path, device, dtype)
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
