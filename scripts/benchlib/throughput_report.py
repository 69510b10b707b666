"""The throughput benchmark's verdicts on the issue's targets, its latency-vs-load plot, and its JSON."""

from __future__ import annotations

import json
from pathlib import Path

from benchlib.throughput_systems import OFFLINE, SERVER, SERVER_OFF


def targets(results: list[dict]) -> list[dict]:
    """The issue's targets, each with the figure it is judged on."""
    out = []

    def check(what: str, value: float | None, goal: float, higher: bool = True, ceiling: float | None = None) -> None:
        if value is not None:
            out.append({"target": what, "measured": value, "goal": f"{'>=' if higher else '<='} {goal:g}",
                        "met": value >= goal if higher else value <= goal, "ceiling here": ceiling})

    for res in results:
        name, r = f"{res['kind']} ({res['workload']})", res["ratios"]
        server = next(row for row in res["rows"] if row["system"] == SERVER)
        # The offline reference had the whole machine; the server shares it with the load generator.
        left_to_server = 1 - server["client CPU share"]
        if res["kind"] in ("embedding", "reranker"):
            to_limit, to_off = r.get(f"server / {OFFLINE}"), r.get(f"server / {SERVER_OFF}")
            check(f"{name}: server / offline limit", to_limit, 0.9, ceiling=left_to_server)
            # The most batching can buy on this machine: the offline limit over batching off. Where
            # it is under 3, the target is out of reach of any server on this stack. An offline
            # reference slower than the server bounds nothing: no ceiling then.
            ceiling = to_off / to_limit if to_limit and to_off and to_limit <= 1 else None
            check(f"{name}: server / batching off", to_off, 3.0, ceiling=ceiling)
            if res["workload"] != "short texts":
                check(f"{name}: padding efficiency", server["padding efficiency"], 0.85)
        if res["kind"] == "asr" and res["workload"] == "10 s clips":
            check(f"{name}: server / offline batched funasr", r.get(f"server / {OFFLINE}"), 0.9, ceiling=left_to_server)
        # One workload of each kind measures the lone request (check skips the others' None).
        check(f"{res['kind']}: lone p50 / its forward pass", r.get("lone p50 / its forward pass"), 1.2, higher=False)
        for key, value in r.items():
            if key not in (f"server / {OFFLINE}", f"server / {SERVER_OFF}", "lone p50 / its forward pass") \
                    and not key.startswith(f"server / {SERVER}, "):  # --compare-dtype: not a peer
                check(f"{name}: {key} (peer)", value, 1.0)
    return out


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = [r for r in results if any(r["sweep"].values())]
    if not swept:
        return
    fig, axes = plt.subplots(1, len(swept), figsize=(5.5 * len(swept), 4.5), squeeze=False)
    for ax, res in zip(axes[0], swept):
        for i, (system, points) in enumerate(res["sweep"].items()):
            x = [p["offered requests/s"] for p in points]
            color = f"C{i}"
            ax.plot(x, [p["p50 ms"] for p in points], "o-", color=color, label=f"{system} p50")
            ax.plot(x, [p["p95 ms"] for p in points], "s--", color=color, alpha=0.6, label=f"{system} p95")
        ax.set_title(f"{res['kind']}: {res['workload']}")
        ax.set_xlabel("offered load (requests/s, open loop)")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def save(results: list[dict], args) -> None:
    plot(results, args.plot, f"latency vs offered load ({args.size}, dtype {args.dtype})")
    if args.out:
        peaks = getattr(args, "matmul_peaks", None)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items() if k != "matmul_peaks"},
                                        "matmul peaks": peaks, "results": results, "targets": targets(results)},
                                       indent=2))
