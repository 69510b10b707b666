"""One-shot check of the server on a CUDA GPU, in float16: fidelity, speed, out-of-memory, memory.

Run by scripts/gpu_check.sh on a GPU host (or by hand), from the repository root:

    python scripts/gpu_check.py OUT_DIR [--size full|tiny] [--device cuda|cpu]

For each model (bge-m3, bge-reranker-v2-m3, SenseVoiceSmall), random weights of the named size
(full: XLM-R large, 24 x 1024, for both text models, SenseVoiceSmall's real encoder; built once and
cached under --cache), the reduced dtype (float16 on CUDA; bfloat16 on CPU, where the server refuses
float16: the CPU run is a dry run of this script, not a measurement) against float32, it measures:

1. fidelity of the reduced dtype against float32, same weights, same device, through the server's
   adapters (scripts/benchlib/dtype_cases.py): dense and ColBERT cosine, sparse weights (max |diff|,
   same keys), reranker logit and score max |diff|, transcripts equal (tests/data's speech);
2. the adapter alone at the GPU batch budget (16,384 padded tokens: 32 rows of 512; SenseVoice:
   240 s of audio, 8 segments of 30 s): tokens (audio seconds) per second, achieved TFLOP/s
   (scripts/benchlib/flops.py) and its share of the measured float16 matmul peak and of the datasheet's;
3. peak GPU memory with all three models loaded and 8,192-token inputs at the budget, and which
   attention kernel runs;
4. out of memory: the server (in this process, so that a ballast tensor can leave it little free
   memory) with a batch budget far past the card's memory (--max-batch-tokens 10,000,000) must
   split a pass that does not fit, not fail its requests: oom_splits and failures;
5. the server end to end (its own process, --device cuda --dtype float16, 64 concurrent clients,
   the benchmark's load driver and workloads, benchlib/throughput.py) against the offline references on the same GPU
   (BGEM3FlagModel.encode, FlagReranker.compute_score, funasr AutoModel.generate), and a lone
   request against its forward pass.

Every step is bounded in time; a failing step records its error in the JSON and the next one runs.
OUT_DIR/gpu_check.json is rewritten after every step, so a run cut short keeps what it measured.
Estimates at full size on an H100 (first run; a second run on the same machine skips the model
builds) are in each step's ``budget`` below: about 5 minutes in all.
"""

from __future__ import annotations

import asyncio

from benchlib.gpu_bookkeeping import Check
from benchlib.gpu_model_steps import (
    build_models,
    environment,
    fidelity,
    memory,
    throughput,
)
from benchlib.gpu_server_steps import out_of_memory, server
from benchlib.models import KINDS


def summary(c: Check) -> str:
    """The short table printed last (a remote runner may return only the end of the output)."""
    lines = [f"# gpu_check: {c.args.size} size, {c.device}, {c.dtype_name} vs float32, {c.report['seconds']} s"]
    env = c.report.get("environment", {})
    lines.append(f"gpu {env.get('gpu')}, torch {env.get('torch')}, transformers {env.get('transformers')}, "
                 f"matmul peak {_f(env.get('matmul peak TFLOP/s'))} TFLOP/s measured, "
                 f"{env.get('datasheet dense fp16 TFLOP/s')} datasheet")
    for name, entry in c.report["steps"].items():
        state = "skipped" if "skipped" in entry else "FAILED " + entry["error"][:150] if "error" in entry else "ok"
        lines.append(f"- {name} ({entry.get('seconds', 0)} s): {state}")
        res = entry.get("result") or {}
        for kind in KINDS:
            r = res.get(kind) if isinstance(res, dict) else None
            if not isinstance(r, dict):
                continue
            if name == "fidelity":
                keys = ("dense cos min", "colbert cos min", "sparse max |diff|", "sparse same keys", "logit max |diff|",
                        "score max |diff|", "texts equal", "text+tags equal", "non-finite in reduced dtype", "error")
            elif name == "throughput":
                keys = ("tokens/s", "audio s/s", "TFLOP/s", "share of measured matmul peak", "share of datasheet peak")
            elif name == "memory":
                keys = ("peak allocated GiB", "peak over loaded GiB", "reserved GiB")
            elif name == "server":
                keys = ("server / offline", "lone p50 / its forward pass", "server error", "offline error")
            else:
                keys = ()
            shown = ", ".join(f"{k} {_f(r[k])}" for k in keys if k in r)
            if shown:
                lines.append(f"    {kind}: {shown}")
        if name == "oom" and isinstance(res, dict) and res:
            lines.append(f"    status {res.get('status')}, oom_splits {res.get('oom_splits')}, failed {res.get('failed items')}, "
                         f"passes {res.get('passes')}: {res.get('verdict')}")
        if name == "memory" and isinstance(res, dict) and res:
            lines.append(f"    attention {res.get('attention')}")
    return "\n".join(lines)


def _f(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def logging_quiet() -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.set_event_loop_policy(None)


def run(args) -> None:
    """Every step of --steps in turn, each bounded by its share of --budget-s; the report rewritten
    after each, and the summary printed last."""
    logging_quiet()
    c = Check(args)
    steps = {"environment": environment, "build": build_models, "fidelity": fidelity, "throughput": throughput,
             "memory": memory, "oom": out_of_memory, "server": server}
    for name in args.steps.split(","):
        c.step(name, lambda deadline, fn=steps[name]: fn(c, deadline))
    c.save()
    text = summary(c)
    (c.out / "gpu_check_summary.md").write_text(text + "\n")
    print("\n" + text, flush=True)

