"""FLOPs: how close each system runs to the hardware. A workload's rows and their FLOPs
(benchlib/flops.py), each system's FLOP/s from its throughput, and their share of this machine's
measured matmul peak."""

from __future__ import annotations

from pathlib import Path

import torch

from benchlib.throughput_systems import OFFLINE, SERVER, SERVER_OFF
from benchlib.throughput_workloads import Workload


def cost_name(kind: str) -> str:
    return "frames" if kind == "asr" else "tokens"  # the adapters' cost unit (frames: 10 ms of audio)


def workload_flops(wl: Workload, model_dir: Path) -> dict:
    """The workload's model rows and their FLOPs (scripts/benchlib/flops.py), in all and per workload unit."""
    from benchlib.flops import forward_flops

    costs = wl.costs(model_dir)
    units = sum(r.units for r in wl.requests)
    real = forward_flops(wl.kind, model_dir, costs.rows)  # dense only: the requests ask for nothing else
    work = {"rows": len(costs.rows), cost_name(wl.kind): sum(costs.rows), "GFLOP": real / 1e9,
            f"{cost_name(wl.kind)} per unit": sum(costs.rows) / units, "GFLOP per unit": real / units / 1e9}
    if costs.offline_padded is not None:
        padded = forward_flops(wl.kind, model_dir, costs.offline_padded)
        work |= {f"offline padded {cost_name(wl.kind)}": sum(costs.offline_padded),
                 "offline padded GFLOP": padded / 1e9}
    return work


def with_flops(row: dict, wl: Workload, work: dict | None, peaks: dict | None) -> dict:
    """``row`` with its rows' tokens (frames) per second and GFLOP/s, real and padded, and their
    share of this machine's measured matmul peak. Per second of the run's wall time: the workload's
    totals times the units the system served per second (a run cut short served a prefix).

    Padded, for a server (batching off included): real over the padding efficiency it reported
    (/metrics: real over padded cost), exact for the FLOPs linear in length and a lower bound for
    attention's (quadratic) ones. For the offline reference: its own batches, recounted (rows sorted
    longest first in batches of 32; funasr: one batch). For a system with no batch counters (a
    peer), no padded figures; and no peak share, as its dtype is not this run's."""
    key = f"{wl.unit}/s"
    if work is None or not row.get(key):
        return row
    name, per_s = cost_name(wl.kind), row[key] / sum(r.units for r in wl.requests)
    offline = row["system"] == OFFLINE
    real_cost, real_flops = work[name] * per_s, work["GFLOP"] * 1e9 * per_s
    padded_cost = padded_flops = None
    if offline and f"offline padded {name}" in work:
        padded_cost, padded_flops = work[f"offline padded {name}"] * per_s, work["offline padded GFLOP"] * 1e9 * per_s
    elif not offline and row.get("padding efficiency"):
        padded_cost, padded_flops = real_cost / row["padding efficiency"], real_flops / row["padding efficiency"]
    figures = {f"{name}/s": real_cost, f"padded {name}/s": padded_cost}
    if wl.kind == "asr":
        figures["padded audio s/s"] = None if padded_cost is None else padded_cost / 100  # 100 frames a second
    figures["GFLOP/s"] = real_flops / 1e9
    figures["padded GFLOP/s"] = None if padded_flops is None else padded_flops / 1e9
    peak = None
    if peaks:
        peak = peaks["offline"] if offline else peaks["server"] if row["system"] in (SERVER, SERVER_OFF) else None
        if row["system"] == f"{SERVER}, float32":
            peak = peaks["offline"]  # --compare-dtype float32: the float32 CPU peak, with the same threads
    figures["% of peak"] = None if peak is None else 100 * real_flops / peak["FLOP/s"]
    figures["padded % of peak"] = None if peak is None or padded_flops is None else 100 * padded_flops / peak["FLOP/s"]
    # Right after the throughput they are of, so that every table has its columns in one order.
    out = {}
    for column, value in row.items():
        out[column] = value
        if column == key:
            out |= figures
    return out


def measure_peaks(args) -> dict:
    """This machine's matmul peak (scripts/benchlib/flops.py), measured once before any model runs: in the
    run's dtype on the device and with the threads the server will use, and in float32 on the CPU
    with this process's threads for the offline references (FlagEmbedding, funasr: float32 on CPU)."""
    from benchlib.flops import matmul_peak_flops
    from server.families import make_settings
    from server.compute.device import resolve_device, resolve_dtype

    settings = make_settings()
    device = resolve_device(settings.device)
    dtype = resolve_dtype(args.dtype, device)
    cpu = torch.device("cpu")

    def peak(dtype: torch.dtype, device: torch.device, threads: int) -> dict:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            flop_s = matmul_peak_flops(dtype, device)
        finally:
            torch.set_num_threads(before)
        return {"dtype": str(dtype).removeprefix("torch."), "device": str(device),
                "threads": threads if device.type == "cpu" else None, "FLOP/s": flop_s}

    threads = settings.cpu_threads or torch.get_num_threads()
    server = peak(dtype, device, threads)
    same = device.type == "cpu" and dtype == torch.float32 and threads == torch.get_num_threads()
    return {"server": server, "offline": server if same else peak(torch.float32, cpu, torch.get_num_threads())}
