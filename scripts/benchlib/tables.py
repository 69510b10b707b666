"""Results as Markdown tables, and the round a table shows when every system ran several rounds."""

from __future__ import annotations


def markdown(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(c for r in rows for c in r))
    fmt = lambda v: "" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def median_round(runs: list[dict], key: str) -> dict:
    """The round with the median ``key`` (the lower middle one for an even count), with every
    round's figure beside it when there was more than one."""
    median = sorted(runs, key=lambda r: r[key])[(len(runs) - 1) // 2]
    if len(runs) == 1:
        return dict(median)
    row = {}
    for name, value in median.items():  # the rounds' figures right after the one they are of
        row[name] = value
        if name == key:
            row["rounds"] = " / ".join(f"{r[key]:.1f}" for r in runs)
    return row
