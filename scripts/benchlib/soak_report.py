"""The soak test's report and verdict (benchlib/soak.py): requests, statuses, latencies, memory, and
what fails the run."""

from __future__ import annotations

from collections import Counter

import numpy as np

from benchlib.soak_load import ENDPOINTS, Stats
from benchlib.soak_memory import mb, window_medians


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(stats: Stats, memory: dict, max_growth: float, warmup_s: float, load_s: float,
           window_s: float = 30.0) -> tuple[dict, list[str]]:
    all_latencies = [x for v in stats.latencies.values() for x in v]
    per_endpoint = {
        name: {"served": sum(stats.statuses[name].values()), "statuses": dict(stats.statuses[name]),
               "p50_ms": round(1000 * percentile(stats.latencies[name], 50), 1),
               "p95_ms": round(1000 * percentile(stats.latencies[name], 95), 1)}
        for name in ENDPOINTS if name in stats.statuses
    }
    errors = Counter()
    for counter in stats.statuses.values():
        for status, n in counter.items():
            if status != 200:
                errors[status] += n
    levels = window_medians(memory["samples"], warmup_s, load_s, window_s)
    growth = None
    if levels["warm"] and levels["end"]:
        growth = (levels["end"] - levels["warm"]) / levels["warm"]
    summary = {
        "requests_served": stats.total,
        "seconds": round(memory["elapsed_s"], 1),
        "requests_per_s": round(stats.total / memory["elapsed_s"], 1) if memory["elapsed_s"] else None,
        "errors_by_status": {str(k): v for k, v in sorted(errors.items())},
        "transport_errors": dict(stats.transport_errors),
        "latency_p50_ms": round(1000 * percentile(all_latencies, 50), 1),
        "latency_p95_ms": round(1000 * percentile(all_latencies, 95), 1),
        "endpoints": per_endpoint,
        "rss_start": memory.get("start"),
        "rss_warm": levels["warm"], "warm_window_s": levels["warm_window_s"],
        "rss_end": levels["end"], "end_window_s": levels["end_window_s"],
        "rss_peak": max((s for _, s in memory["samples"] if s), default=None),
        "rss_idle_after": memory.get("end"),
        "rss_growth_after_warmup": None if growth is None else round(growth, 4),
        "rss_samples": memory["samples"],
        "malformed": stats.malformed,
        "server_error_samples": stats.server_errors,
    }
    failures = []
    server_errors = sum(n for status, n in errors.items() if status >= 500)
    if server_errors:
        failures.append(f"{server_errors} responses were 5xx")
    if stats.transport_errors:
        failures.append(f"{sum(stats.transport_errors.values())} transport errors")
    if stats.malformed:
        failures.append(f"{len(stats.malformed)}+ malformed 200 answers")
    if growth is not None and growth > max_growth:
        failures.append(f"resident memory grew {growth:.1%} after the warm-up (limit {max_growth:.0%})")
    if stats.total == 0:
        failures.append("no request was served")
    return summary, failures


def print_report(summary: dict, failures: list[str]) -> None:
    print(f"requests served: {summary['requests_served']} in {summary['seconds']} s "
          f"({summary['requests_per_s']} req/s)")
    for name, e in summary["endpoints"].items():
        print(f"  {name:15s} served {e['served']:6d}  statuses {e['statuses']}  p50 {e['p50_ms']} ms  "
              f"p95 {e['p95_ms']} ms")
    print(f"errors by status: {summary['errors_by_status'] or 'none'}; transport errors: "
          f"{summary['transport_errors'] or 'none'}")
    print(f"latency (all): p50 {summary['latency_p50_ms']} ms, p95 {summary['latency_p95_ms']} ms")
    growth = summary["rss_growth_after_warmup"]
    (w0, w1), (e0, e1) = summary["warm_window_s"], summary["end_window_s"]
    print(f"resident memory: start {mb(summary['rss_start'])}; after warm-up (median {w0:g}-{w1:g} s) "
          f"{mb(summary['rss_warm'])}; end (median {e0:g}-{e1:g} s) {mb(summary['rss_end'])}; "
          f"peak {mb(summary['rss_peak'])}; growth after warm-up {'n/a' if growth is None else f'{growth:+.2%}'}")
    for bad in (summary["malformed"] + summary["server_error_samples"])[:5]:
        print(f"  problem: {bad}")
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
