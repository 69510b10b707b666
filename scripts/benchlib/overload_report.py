"""Overload (benchlib/overload.py): its tables and JSON."""

from __future__ import annotations

import json

from benchlib import tables
from benchlib.overload_client import LATE
from benchlib.overload_measure import BURST_FACTOR, SERVER, SUSTAINED_LOAD

SERVER_COLUMNS = ("refused deadline", "refused queue_full", "deadlines met", "deadlines missed",
                  "deadlines missed_dropped_early", "server: 503s within 100 ms", "prediction error mean s", "prediction |error| mean s", "prediction |error| median in",
                  "within 0.5 s", "within 1 s")


def print_kind(res: dict, args) -> None:
    cap = res["capacity"]
    print(f"\n## {res['kind']}: overload ({res['size']}, T = {res['timeout s']:g} s)\n\n{res['workload']}.")
    if res.get("skipped"):
        print(f"Skipped: no system answered a bulk request in its capacity run (the last: {cap['answers']}).")
        return
    print(f"Capacity C = {cap['requests/s']:.2f} requests/s: {cap['clients']} closed-loop clients for "
          f"{cap['seconds']:.1f} s on {cap['system']} in the first round ({cap['requests']} answered 200, p50 "
          f"{cap['p50 ms'] or 0:.0f} ms; all answers: {cap['answers']}); the same C for every system"
          + ("." if cap["system"] == SERVER else f" ({SERVER} answered none in its own capacity run)."))
    own = lambda r: {k: v for k, v in r.items() if k not in SERVER_COLUMNS}  # noqa: E731

    def theirs(phase: str) -> list[dict]:
        return [{"system": r["system"], "phase": phase, **{k: r.get(k) for k in SERVER_COLUMNS}} for r in res[phase]]

    print(f"\n### burst: {BURST_FACTOR:g} x T x C bulk requests at once\n\nlate: "
          f"{' / '.join(LATE)}\n\n" + tables.markdown([own(r) for r in res["burst"]]))
    print(f"\n### sustained: {SUSTAINED_LOAD:g} x C open loop for {args.overload_seconds:g} s, one interactive "
          f"client beside ({args.overload_think_ms:g} ms think time)\n\n"
          + tables.markdown([own(r) for r in res["sustained"]]))
    print("\n### the servers' own deadline accounting (/metrics; None: no such metric)\n\n"
          + tables.markdown(theirs("burst") + theirs("sustained")))
    print("\nEvery answer, as status and error code:\n")
    for name, phases in res["answers"].items():
        print(f"- {name}: " + "; ".join(f"{phase}: {answers}" for phase, answers in phases.items()))
    print(flush=True)


def save(results: list[dict], args) -> None:
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "overload": results,
                                        "targets": [t for r in results for t in r.get("targets", [])]}, indent=2))
