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

import argparse
import asyncio
import gc
import io
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAX_MINUTES = 60
WORDS = ("the giant panda is a bear native to south central china it eats bamboo and sleeps a lot rivers "
         "mountains 熊猫 竹子 世界 你好 today we test speech models under load for a while").split()
ENDPOINTS = {"embeddings": 0.45, "rerank": 0.35, "transcriptions": 0.20}


# ---- memory ------------------------------------------------------------------------------------

def rss_bytes(pid: int) -> int | None:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        pass
    except Exception:  # the process is gone, or not ours to read
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f} MB"


# ---- the server, in a subprocess ----------------------------------------------------------------

def serve_command(models: dict[str, str], port: int, api_key: str | None = None) -> list[str]:
    """``python -m server.cli serve`` on 127.0.0.1:``port``, on CPU, with these model directories."""
    cmd = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--device", "cpu", "--log-level", "warning",
           "--embedding-model", models["embedding_model"], "--reranker-model", models["reranker_model"],
           "--asr-model", models["asr_model"]]
    return cmd + (["--api-key", api_key] if api_key else [])


# ---- workload ----------------------------------------------------------------------------------

def text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def audio_clips(rng: random.Random) -> list[tuple[str, bytes]]:
    """Speech (the test recording, if present), tone bursts, noise and silence, as wav/flac."""
    import av

    def encode(x: np.ndarray, fmt: str, codec: str) -> bytes:
        buf = io.BytesIO()
        with av.open(buf, "w", format=fmt) as out:
            stream = out.add_stream(codec, rate=16000)
            stream.layout = "mono"
            frame = av.AudioFrame.from_ndarray(x.astype(np.float32)[None], format="flt", layout="mono")
            frame.sample_rate = 16000
            for f in av.AudioResampler(format=stream.format, layout="mono", rate=16000).resample(frame):
                for packet in stream.encode(f):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        return buf.getvalue()

    nrng = np.random.default_rng(rng.randint(0, 2**31))
    clips = []
    speech = ROOT / "tests" / "data" / "speech_pauses.flac"
    if speech.exists():
        clips.append(("speech.flac", speech.read_bytes()))
    for seconds in (1.0, 3.0, 8.0):
        t = np.arange(int(seconds * 16000)) / 16000
        burst = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
        clips.append((f"tone{seconds:g}.wav", encode(burst, "wav", "pcm_s16le")))
    clips.append(("noise.flac", encode(0.05 * nrng.standard_normal(32000), "flac", "flac")))
    clips.append(("silence.flac", encode(np.zeros(48000), "flac", "flac")))
    return clips


@dataclass
class Stats:
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    transport_errors: Counter = field(default_factory=Counter)
    malformed: list[str] = field(default_factory=list)  # 200s whose body is wrong (first 20)
    server_errors: list[str] = field(default_factory=list)  # 5xx samples (first 20)

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())


def check_body(endpoint: str, payload: dict | None, response: httpx.Response) -> str | None:
    """Why a 200 is malformed, or None."""
    try:
        if endpoint == "embeddings":
            data = response.json()["data"]
            if len(data) != len(payload["input"]) or not all(len(d["embedding"]) > 0 for d in data):
                return "wrong number of vectors"
        elif endpoint == "rerank":
            results = response.json()["results"]
            expected = min(payload["top_n"], len(payload["documents"]))
            if len(results) != expected or not all(0 <= r["relevance_score"] <= 1 for r in results):
                return "wrong results"
        else:
            if response.headers.get("content-type", "").startswith("application/json"):
                if not isinstance(response.json().get("text"), str):
                    return "no text"
    except (ValueError, KeyError, TypeError) as err:
        return f"unparseable: {err!r}"
    return None


async def worker(client: httpx.AsyncClient, rng: random.Random, deadline: float, clips, stats: Stats,
                 max_requests: int, mix: dict[str, float], stop: asyncio.Event | None = None) -> None:
    names, weights = list(mix), list(mix.values())
    for _ in range(max_requests):
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            return
        endpoint = rng.choices(names, weights)[0]
        payload = None
        if endpoint == "embeddings":
            payload = {"model": "bge-m3", "input": [text(rng, 3, 120) for _ in range(rng.randint(1, 16))]}
            if rng.random() < 0.2:
                payload.update(return_sparse=True, return_colbert=rng.random() < 0.5)
            if rng.random() < 0.2:
                payload["encoding_format"] = "base64"
            request = client.post("/v1/embeddings", json=payload)
        elif endpoint == "rerank":
            docs = [text(rng, 3, 200) for _ in range(rng.randint(2, 24))]
            if rng.random() < 0.1:
                docs.append(text(rng, 600, 1500))  # a long document: several windows
            payload = {"model": "bge-reranker-v2-m3", "query": text(rng, 2, 12), "documents": docs,
                       "top_n": rng.randint(1, 8), "return_documents": rng.random() < 0.3}
            request = client.post("/v1/rerank", json=payload)
        else:
            name, data = rng.choice(clips)
            fmt = rng.choice(["json", "json", "verbose_json", "text", "srt", "vtt"])
            request = client.post("/v1/audio/transcriptions", files={"file": (name, data)},
                                  data={"model": "SenseVoiceSmall", "response_format": fmt})
        started = time.perf_counter()
        try:
            response = await request
        except httpx.HTTPError as err:
            stats.transport_errors[f"{endpoint}: {type(err).__name__}"] += 1
            continue
        stats.latencies[endpoint].append(time.perf_counter() - started)
        stats.statuses[endpoint][response.status_code] += 1
        if response.status_code == 200:
            why = check_body(endpoint, payload, response)
            if why and len(stats.malformed) < 20:
                stats.malformed.append(f"{endpoint}: {why}")
        elif response.status_code >= 500 and len(stats.server_errors) < 20:
            stats.server_errors.append(f"{endpoint}: {response.status_code} {response.text[:200]}")


async def run_load(url: str, api_key: str | None, concurrency: int, seconds: float, seed: int, pid: int | None,
                   mix: dict[str, float], sample_every: float = 1.0,
                   server_alive: Callable[[], bool] | None = None, trim: bool = False) -> tuple[Stats, dict]:
    """Closed-loop load until ``seconds`` pass, or until ``server_alive`` says the server died.
    ``trim``: malloc_trim before each memory reading (see rss_now)."""
    rng = random.Random(seed)
    clips = audio_clips(rng)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    stats = Stats()
    memory: dict = {"samples": []}
    memory["start"] = rss_now(pid, trim)
    started = time.monotonic()
    deadline = started + seconds
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as client:
        workers = [asyncio.create_task(worker(client, random.Random(rng.random()), deadline, clips, stats, 10**7, mix,
                                              stop))
                   for _ in range(concurrency)]
        while not all(w.done() for w in workers):
            await asyncio.sleep(min(sample_every, max(0.05, deadline - time.monotonic())))
            if server_alive is not None and not server_alive():
                stop.set()  # no point in hammering a dead server until the deadline
            if time.monotonic() < deadline:  # a reading after the deadline is of a server going idle
                memory["samples"].append((round(time.monotonic() - started, 1), rss_now(pid, trim)))
        await asyncio.gather(*workers)
    memory["end"] = rss_now(pid, trim)
    memory["elapsed_s"] = time.monotonic() - started
    return stats, memory


def window_medians(samples: list[tuple[float, int | None]], warmup_s: float, load_s: float,
                   window_s: float) -> dict:
    """Resident memory after the warm-up and at the end, each the median of the readings in a window
    (``[warmup, warmup + w]`` and ``[load - w, load]``; ``w`` is ``window_s``, shortened so the two
    do not overlap). A median over several trim periods (the server trims every 10 s) and many
    batches reads the level, not where one reading fell in that sawtooth or on one large batch."""
    window = max(0.0, min(window_s, (load_s - warmup_s) / 2))
    readings = [(t, v) for t, v in samples if v]

    def median_in(lo: float, hi: float) -> int | None:
        inside = [v for t, v in readings if lo <= t <= hi]
        if not inside:  # a window shorter than the sampling interval: the nearest reading
            nearest = min(readings, key=lambda r: abs(r[0] - lo), default=None)
            return nearest[1] if nearest else None
        return int(np.median(inside))

    warm_window, end_window = (warmup_s, warmup_s + window), (load_s - window, load_s)
    return {"warm": median_in(*warm_window), "end": median_in(*end_window),
            "warm_window_s": [round(x, 1) for x in warm_window], "end_window_s": [round(x, 1) for x in end_window]}


def rss_now(pid: int | None, trim: bool = False) -> int | None:
    """``pid``'s resident memory now, None for no pid. This process's (an in-process server) after a
    garbage collection and, with ``trim`` (--malloc-trim), glibc's malloc_trim."""
    if pid is None:
        return None
    if pid == os.getpid():
        gc.collect()
        if trim:
            malloc_trim()
    return rss_bytes(pid)


def malloc_trim() -> bool:
    """Hand freed heap memory back to the OS (glibc only). Readings taken after it show live memory,
    not memory glibc keeps for reuse."""
    import ctypes
    import ctypes.util

    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


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


def build_models(root: Path, size: str) -> dict[str, Path]:
    from server.models.tiny_xlmr import (
        XLMR_SIZES,
        build_tiny_bge_m3,
        build_tiny_reranker,
    )
    from server.transcription.tiny import SENSEVOICE_SIZES, build_tiny_sensevoice

    return {
        "embedding_model": build_tiny_bge_m3(root / f"bge-m3-{size}", **XLMR_SIZES[size]),
        "reranker_model": build_tiny_reranker(root / f"reranker-{size}", **XLMR_SIZES[size]),
        "asr_model": build_tiny_sensevoice(root / f"sensevoice-{size}", **SENSEVOICE_SIZES[size]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help=f"how long to load (max {MAX_MINUTES})")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of load before memory is taken as warm (default: 20%% of the run, at most 60)")
    parser.add_argument("--window", type=float, default=30.0,
                        help="seconds of readings whose median is the memory after the warm-up, and at the end")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (1-256)")
    parser.add_argument("--size", choices=["tiny", "small", "base"], default="tiny",
                        help="model size of the server it starts")
    parser.add_argument("--in-process", action="store_true",
                        help="run the server on a thread of this process, not in a subprocess (memory is then "
                             "server + clients)")
    parser.add_argument("--url", help="drive this server instead of starting one")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, to watch its memory")
    parser.add_argument("--api-key", help="Bearer key to send")
    parser.add_argument("--models-dir", type=Path, help="where to build the tiny models (default: a temp dir)")
    parser.add_argument("--max-growth", type=float, default=0.05, help="allowed memory growth after warm-up")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(ENDPOINTS) + " (default: all)")
    parser.add_argument("--malloc-trim", action="store_true",
                        help="diagnostic, in-process only: call glibc malloc_trim(0) before each memory reading, so "
                             "the readings (and the verdict) show live memory rather than freed memory glibc keeps")
    parser.add_argument("--sample-every", type=float, default=1.0, help="seconds between memory readings")
    parser.add_argument("--ready-timeout", type=float, default=300,
                        help="seconds to wait for the server it starts to load its models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= MAX_MINUTES:
        parser.error(f"--minutes must be in (0, {MAX_MINUTES}]")
    if not 1 <= args.concurrency <= 256:
        parser.error("--concurrency must be in [1, 256]")
    mix = dict(ENDPOINTS)
    if args.only:
        chosen = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = set(chosen) - set(ENDPOINTS)
        if unknown or not chosen:
            parser.error(f"--only takes {', '.join(ENDPOINTS)}; got {args.only!r}")
        mix = {name: weight for name, weight in ENDPOINTS.items() if name in chosen}
    if args.url and args.in_process:
        parser.error("--url and --in-process exclude each other")
    if not 0.1 <= args.sample_every <= 60:
        parser.error("--sample-every must be in [0.1, 60]")
    if args.window <= 0:
        parser.error("--window must be positive")
    if args.malloc_trim and not args.in_process:
        parser.error("--malloc-trim works only with --in-process")
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
                from server.config import Settings

                settings = Settings(host="127.0.0.1", port=port, log_level="warning", device="cpu",
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
                                              sample_every=args.sample_every, server_alive=alive, trim=args.malloc_trim))
        summary, failures = report(stats, memory, args.max_growth, warmup, seconds, args.window)
        if server is not None and server.poll() is not None:
            failures.append(f"the server exited with code {server.returncode} during the run")
    print_report(summary, failures)
    if args.json:
        args.json.write_text(json.dumps({**summary, "server_pid": pid, "failures": failures}, indent=2, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
