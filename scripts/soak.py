"""Soak test: N minutes of mixed concurrent load on all three endpoints, then a verdict.

By default it starts the server itself, in this process (``server.background.serve_in_thread``),
with tiny random-weight models of the real architectures (``server.tiny_models``; ``--size`` picks
bigger ones), all on 127.0.0.1. ``--url`` drives an existing server instead (add ``--pid`` to watch
its memory). Closed-loop clients send embeddings, rerank and transcription requests with seeded
random shapes and check every answer's shape.

It reports requests served, statuses per endpoint, transport errors, latency p50/p95 and resident
memory (psutil if installed, else /proc/<pid>/status VmRSS) at start, after the warm-up and at the
end, and exits non-zero on any 5xx, transport error or malformed answer, or if memory grew more
than ``--max-growth`` (5%) from the warm-up to the end.

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
import sys
import tempfile
import time
from collections import Counter, defaultdict
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
                 max_requests: int, mix: dict[str, float]) -> None:
    names, weights = list(mix), list(mix.values())
    for _ in range(max_requests):
        if time.monotonic() >= deadline:
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


async def run_load(url: str, api_key: str | None, concurrency: int, seconds: float, warmup_s: float, seed: int,
                   pid: int | None, mix: dict[str, float], sample_every: float = 5.0) -> tuple[Stats, dict]:
    rng = random.Random(seed)
    clips = audio_clips(rng)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    stats = Stats()
    memory: dict = {"samples": []}
    memory["start"] = _measure(pid)
    started = time.monotonic()
    deadline = started + seconds
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as client:
        workers = [asyncio.create_task(worker(client, random.Random(rng.random()), deadline, clips, stats, 10**7, mix))
                   for _ in range(concurrency)]
        warm_taken = False
        while not all(w.done() for w in workers):
            await asyncio.sleep(min(sample_every, max(0.05, deadline - time.monotonic())))
            elapsed = time.monotonic() - started
            sample = _measure(pid)
            memory["samples"].append((round(elapsed, 1), sample))
            if not warm_taken and elapsed >= warmup_s:
                memory["warm"], memory["warm_at_s"], warm_taken = sample, round(elapsed, 1), True
                memory["served_at_warm"] = stats.total
        await asyncio.gather(*workers)
    memory["end"] = _measure(pid)
    memory.setdefault("warm", memory["start"])
    memory["elapsed_s"] = time.monotonic() - started
    return stats, memory


TRIM = False  # --malloc-trim


def _measure(pid: int | None) -> int | None:
    if pid is None:
        return None
    if pid == os.getpid():
        gc.collect()
        if TRIM:
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


def report(stats: Stats, memory: dict, max_growth: float) -> tuple[dict, list[str]]:
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
    growth = None
    if memory.get("warm") and memory.get("end"):
        growth = (memory["end"] - memory["warm"]) / memory["warm"]
    summary = {
        "requests_served": stats.total,
        "seconds": round(memory["elapsed_s"], 1),
        "requests_per_s": round(stats.total / memory["elapsed_s"], 1) if memory["elapsed_s"] else None,
        "errors_by_status": {str(k): v for k, v in sorted(errors.items())},
        "transport_errors": dict(stats.transport_errors),
        "latency_p50_ms": round(1000 * percentile(all_latencies, 50), 1),
        "latency_p95_ms": round(1000 * percentile(all_latencies, 95), 1),
        "endpoints": per_endpoint,
        "rss_start": memory.get("start"), "rss_warm": memory.get("warm"), "rss_end": memory.get("end"),
        "rss_peak": max((s for _, s in memory["samples"] if s), default=None),
        "warm_at_s": memory.get("warm_at_s"),
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
    print(f"resident memory: start {mb(summary['rss_start'])}, after warm-up ({summary['warm_at_s']} s) "
          f"{mb(summary['rss_warm'])}, end {mb(summary['rss_end'])}, peak sampled {mb(summary['rss_peak'])}; "
          f"growth after warm-up {'n/a' if growth is None else f'{growth:+.2%}'}")
    for bad in (summary["malformed"] + summary["server_error_samples"])[:5]:
        print(f"  problem: {bad}")
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))


def build_models(root: Path, size: str) -> dict[str, Path]:
    from server.tiny_models import SENSEVOICE_SIZES, XLMR_SIZES
    from server.tiny_models.sensevoice import build_tiny_sensevoice
    from server.tiny_models.xlmr import build_tiny_bge_m3, build_tiny_reranker

    return {
        "embedding_model": build_tiny_bge_m3(root / f"bge-m3-{size}", **XLMR_SIZES[size]),
        "reranker_model": build_tiny_reranker(root / f"reranker-{size}", **XLMR_SIZES[size]),
        "asr_model": build_tiny_sensevoice(root / f"sensevoice-{size}", **SENSEVOICE_SIZES[size]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help=f"how long to load (max {MAX_MINUTES})")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before the warm-up memory reading (default: 20%% of the run, at most 60)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (1-256)")
    parser.add_argument("--size", choices=["tiny", "small", "base"], default="tiny", help="model size when serving in-process")
    parser.add_argument("--url", help="drive this server instead of starting one")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, to watch its memory")
    parser.add_argument("--api-key", help="Bearer key to send")
    parser.add_argument("--models-dir", type=Path, help="where to build the tiny models (default: a temp dir)")
    parser.add_argument("--max-growth", type=float, default=0.05, help="allowed memory growth after warm-up")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(ENDPOINTS) + " (default: all)")
    parser.add_argument("--malloc-trim", action="store_true",
                        help="diagnostic, in-process only: call glibc malloc_trim(0) before each memory reading, so "
                             "the readings (and the verdict) show live memory rather than freed memory glibc keeps")
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
    if args.malloc_trim:
        if args.url:
            parser.error("--malloc-trim works only on the in-process server")
        global TRIM
        TRIM = True
    seconds = args.minutes * 60
    warmup = min(60.0, 0.2 * seconds) if args.warmup is None else min(args.warmup, seconds)

    with ExitStack() as stack:
        if args.url:
            url, pid = args.url.rstrip("/"), args.pid
            server_note = f"against {url}" + ("" if pid else " (no --pid: memory not measured)")
        else:
            from server.background import free_port, serve_in_thread
            from server.config import Settings

            root = args.models_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
            t0 = time.perf_counter()
            models = {k: str(v) for k, v in build_models(root, args.size).items()}
            settings = Settings(host="127.0.0.1", port=free_port(), log_level="warning", device="cpu",
                                api_keys=[args.api_key] if args.api_key else [], **models)
            running = stack.enter_context(serve_in_thread(settings))
            url, pid = running.url, os.getpid()
            server_note = (f"in-process server at {url}, {args.size} models (built/loaded in "
                           f"{time.perf_counter() - t0:.1f} s); memory is this process's (server + clients)")
        print(f"soak: {args.minutes:g} min, {args.concurrency} clients, warm-up reading at {warmup:.0f} s; "
              f"{server_note}{'; malloc_trim(0) before each reading' if TRIM else ''}", flush=True)
        stats, memory = asyncio.run(run_load(url, args.api_key, args.concurrency, seconds, warmup, args.seed, pid,
                                              mix))
        summary, failures = report(stats, memory, args.max_growth)
    print_report(summary, failures)
    if args.json:
        args.json.write_text(json.dumps({**summary, "failures": failures}, indent=2, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
