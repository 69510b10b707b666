"""Interactive beside bulk (benchlib/mixed.py): its targets, tables and JSON."""

from __future__ import annotations

import json

import torch

from benchlib import tables
from benchlib.mixed_measure import FAIR

P95_GOAL, BULK_GOAL = 1.0, 0.9


def targets(results: list[dict]) -> list[dict]:
    out = []
    for res in results:
        for system, v in res["verdicts"].items():
            out.append({"target": f"{res['kind']}: interactive p95 beside bulk / (3 x p50 alone + full pass)",
                        "system": system, "measured": v["p95 beside / allowance"], "goal": f"<= {P95_GOAL:g}",
                        "met": v["p95 beside / allowance"] <= P95_GOAL, "median round": v["allowance"]})
            out.append({"target": f"{res['kind']}: bulk {res['unit']}/s beside interactive / alone",
                        "system": system, "measured": v["bulk beside / alone"], "goal": f">= {BULK_GOAL:g}",
                        "met": v["bulk beside / alone"] >= BULK_GOAL})
    return out


def pass_note(res: dict) -> str:
    fair = next(r for r in res["rows"] if r["system"] == FAIR)
    if fair["mean bulk pass ms"] is None or fair["longest pass <= ms"] is None:
        return "One full forward pass: none measured (the fair server ran no pass while the bulk ran alone)."
    return (f"One full forward pass (the p95 target's allowance, for every system): {fair['mean bulk pass ms']:.0f} ms, "
            f"timed: the mean of the {fair['bulk passes']} passes the bulk ran alone on {FAIR} "
            f"(inference_batch_seconds sum / count from its /metrics over that phase); its histogram puts the "
            f"longest at <= {fair['longest pass <= ms']:.0f} ms.")


def print_kind(res: dict, args) -> None:
    print(f"\n## {res['kind']}: interactive beside bulk ({res['size']}, 1 bulk client + {args.mixed_clients} "
          f"interactive clients, {args.mixed_think_ms:g} ms think time, ~{args.mixed_seconds:g} s a phase, "
          f"{torch.get_num_threads()} CPU threads)\n")
    print(f"{res['workload']}. p50-p99: the interactive requests' latency alone, then beside the bulk.\n")
    print(tables.markdown(res["rows"]))
    print("\n" + pass_note(res), flush=True)


def save(results: list[dict], args) -> None:
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                        "mixed": results, "targets": targets(results)}, indent=2))
