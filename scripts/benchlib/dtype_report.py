"""float32 against bfloat16 (benchlib/dtype_compare.py) as a Markdown table."""

from __future__ import annotations


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
