"""Soak test: N minutes of mixed concurrent load on all three endpoints, then a verdict.

By default it starts the server itself as a subprocess (``python -m server.cli serve``) on a free
loopback port, with tiny random-weight models of the real architectures (``server.demo``;
``--size`` picks bigger ones), and watches that process's memory, so the figures are the server's
alone (not the clients', the request bodies' or the test audio's). Every wait is bounded and the
subprocess is always stopped (SIGTERM, then SIGKILL). ``--in-process`` runs the server on a thread
of this process instead (memory is then server + clients). ``--url`` drives an existing server
(add ``--pid`` to watch its memory). Closed-loop clients send embeddings, rerank and transcription
requests with seeded random shapes and check every answer's shape.

It reports requests served, statuses per endpoint, transport errors, latency p50/p95 and resident
memory (psutil if installed, else /proc/<pid>/status VmRSS), sampled every ``--sample-every``
seconds: at start, after the warm-up and at the end, and exits non-zero on any 5xx, transport
error or malformed answer, a server that died, or if memory grew more than ``--max-growth`` (5%)
from the warm-up to the end.

    python scripts/soak.py --minutes 2
    python scripts/soak.py --minutes 10 --size small --concurrency 16 --json soak.json
    python scripts/soak.py --url http://127.0.0.1:8000 --pid 12345 --api-key sk-local
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from benchlib.repo import ROOT
from benchlib.soak_load import run_load
from benchlib.soak_report import print_report, report

MAX_MINUTES = 60


def serve_command(models: dict[str, str], port: int, api_key: str | None = None) -> list[str]:
    """``python -m server.cli serve`` on 127.0.0.1:``port``, on CPU, with these model directories."""
    cmd = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--device", "cpu", "--log-level", "warning",
           "--embedding-model", models["embedding_model"], "--reranker-model", models["reranker_model"],
           "--asr-model", models["asr_model"]]
    return cmd + (["--api-key", api_key] if api_key else [])


def build_models(root: Path, size: str) -> dict[str, Path]:
    from server.compute.tiny_xlmr import (
        XLMR_SIZES,
        build_tiny_bge_m3,
        build_tiny_reranker,
    )
    from server.asr.tiny import SENSEVOICE_SIZES, build_tiny_sensevoice

    return {
        "embedding_model": build_tiny_bge_m3(root / f"bge-m3-{size}", **XLMR_SIZES[size]),
        "reranker_model": build_tiny_reranker(root / f"reranker-{size}", **XLMR_SIZES[size]),
        "asr_model": build_tiny_sensevoice(root / f"sensevoice-{size}", **SENSEVOICE_SIZES[size]),
    }


def run(args, mix: dict[str, float]) -> int:
    """The soak run ``args`` (scripts/soak.py's) asks for, ``mix`` the share of each endpoint: its
    exit status, 1 if anything failed."""
    seconds = args.minutes * 60
    warmup = min(60.0, 0.2 * seconds) if args.warmup is None else min(args.warmup, seconds)

    # SIGTERM ends the run like Ctrl-C: the ExitStack still stops the server it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    server = None  # the subprocess, when this script starts one
    with ExitStack() as stack:
        if args.url:
            url, pid = args.url.rstrip("/"), args.pid
            server_note = f"against {url}" + ("" if pid else " (no --pid: memory not measured)")
        else:
            from server.background import free_port

            root = args.models_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
            t0 = time.perf_counter()
            models = {k: str(v) for k, v in build_models(root, args.size).items()}
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            if args.in_process:
                from server.background import serve_in_thread
                from server.families import make_settings

                settings = make_settings(host="127.0.0.1", port=port, log_level="warning", device="cpu",
                                    api_keys=[args.api_key] if args.api_key else [], **models)
                stack.enter_context(serve_in_thread(settings, ready_timeout=args.ready_timeout))
                pid, where, whose = os.getpid(), "in-process server", "this process's (server + clients)"
            else:
                from server.background import started_process

                # Bounded start (--ready-timeout), and stopped on every way out: SIGTERM, then SIGKILL.
                server = stack.enter_context(started_process(serve_command(models, port, args.api_key),
                                                             url + "/ready", ready_timeout=args.ready_timeout,
                                                             cwd=ROOT))
                pid, where, whose = server.pid, f"server subprocess (pid {server.pid})", "the server process's"
            server_note = (f"{where} at {url}, {args.size} models (built/loaded in "
                           f"{time.perf_counter() - t0:.1f} s); memory is {whose}")
        print(f"soak: {args.minutes:g} min, {args.concurrency} clients, warm-up {warmup:.0f} s; "
              f"{server_note}{'; malloc_trim(0) before each reading' if args.malloc_trim else ''}", flush=True)
        alive = None if server is None else (lambda: server.poll() is None)
        stats, memory = asyncio.run(run_load(url, args.api_key, args.concurrency, seconds, args.seed, pid, mix,
                                              sample_every=args.sample_every, server_alive=alive,
                                              trim=args.malloc_trim))
        summary, failures = report(stats, memory, args.max_growth, warmup, seconds, args.window)
        if server is not None and server.poll() is not None:
            failures.append(f"the server exited with code {server.returncode} during the run")
    print_report(summary, failures)
    if args.json:
        args.json.write_text(json.dumps({**summary, "server_pid": pid, "failures": failures}, indent=2, default=str))
    return 1 if failures else 0

