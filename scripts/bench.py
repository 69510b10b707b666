"""Benchmark the server against its practical limit, side by side in one run, as ratios.

For each model it builds a model directory of a named size (random weights: compute does not depend
on their values) or takes a real one, then measures on one fixed, seeded workload:

* offline: the reference library over the whole workload in one call (BGEM3FlagModel.encode,
  FlagReranker.compute_score, funasr AutoModel.generate): the practical limit of this stack;
* server: the real server on 127.0.0.1, driven by N concurrent clients sending one item each;
* batching off: the same server with --max-batch-size 1;
* lone: one request at a time, p50 latency against the bare forward pass of that input.

    python scripts/bench.py --size small --clients 32 --models embedding,reranker,asr --out bench.json

Prints a Markdown table; --out writes JSON. Every loop is bounded; only loopback is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch

from server.background import free_port, serve_in_thread
from server.config import Settings
from server.tiny_models import SENSEVOICE_SIZES, XLMR_SIZES

WORDS = ("the giant panda is a bear native to south central china it eats bamboo and sleeps a lot "
         "rivers mountains 熊猫 竹子 世界 你好 today we test speech models").split()


@dataclass
class Result:
    system: str
    units: float  # items (texts, documents, audio seconds) processed
    seconds: float
    latencies: list[float] = field(default_factory=list)
    mean_batch: float | None = None
    padding_efficiency: float | None = None
    forward_s: float | None = None  # mean seconds of forward passes per request

    def row(self, unit: str) -> dict:
        lat = sorted(self.latencies)
        pick = (lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: None)
        return {"system": self.system, f"{unit}/s": self.units / self.seconds, "p50 ms": pick(0.5),
                "p95 ms": pick(0.95), "p99 ms": pick(0.99), "mean batch": self.mean_batch,
                "padding efficiency": self.padding_efficiency}


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def text_workload(n: int, seed: int = 0) -> list[str]:
    """Mostly short and mixed-length texts, a few long ones."""
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(4, 32)] * 5 + [rng.randint(32, 256)] * 4 + [rng.randint(400, 1000)])
               for _ in range(n)]
    return [text(rng, k) for k in lengths]


def speech_clip(seconds: float, seed: int) -> np.ndarray:
    """`seconds` of real speech (the espeak-ng recording the tests use), from a seeded offset."""
    from server.audio import decode_audio

    speech = decode_audio((Path(__file__).parent.parent / "tests/data/speech_pauses.flac").read_bytes(),
                          max_seconds=60)
    tiled = np.tile(speech, int(seconds * 16000 // len(speech)) + 2)
    start = np.random.default_rng(seed).integers(0, len(speech))
    return tiled[start:start + int(seconds * 16000)]


def wav_bytes(audio: np.ndarray) -> bytes:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


async def drive(url: str, requests: list[dict], clients: int, deadline_s: float) -> tuple[float, list[float], int]:
    """Send the requests from `clients` concurrent clients; returns (wall seconds, latencies, done)."""
    queue = list(reversed(requests))
    latencies: list[float] = []
    stop = time.monotonic() + deadline_s

    async def client(http: httpx.AsyncClient) -> None:
        while queue and time.monotonic() < stop:
            req = queue.pop()
            started = time.perf_counter()
            response = await http.post(req["path"], **req["kwargs"])
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return time.perf_counter() - started, latencies, len(latencies)


def run_server(kind: str, model_dir: Path, requests: list[dict], units: list[float], clients: int,
               batch_size: int, args, label: str | None = None) -> Result:
    settings = Settings(**{"embedding_model": "none", "reranker_model": "none", "asr_model": "none",
                           f"{kind}_model": str(model_dir)},
                        port=free_port(), max_batch_size=batch_size, dtype=args.dtype, log_level="warning")
    with serve_in_thread(settings) as srv:
        asyncio.run(drive(srv.url, requests[:2], 1, 60))  # warm the HTTP path
        stats = srv.runtime.served[kind].batcher.stats
        counters = ("computed", "batches", "real_cost", "padded_cost", "busy_seconds")
        before = [getattr(stats, c) for c in counters]
        wall, latencies, done = asyncio.run(drive(srv.url, requests, clients, args.max_seconds))
        computed, batches, real, padded, busy = (getattr(stats, c) - b for c, b in zip(counters, before))
    label = label or ("server" if batch_size > 1 else "server, batching off") + f" ({clients} clients)"
    result = Result(label, sum(units[:done]), wall, latencies, computed / max(1, batches), real / max(1, padded))
    result.forward_s = busy / max(1, done)
    return result


# ---- per-model workloads and offline references -----------------------------------------------------


def embedding_case(model_dir: Path, args):
    texts = text_workload(args.items)
    requests = [{"path": "/v1/embeddings", "kwargs": {"json": {"model": "bge-m3", "input": t}}} for t in texts]

    def offline() -> Result:
        from FlagEmbedding import BGEM3FlagModel

        model = BGEM3FlagModel(str(model_dir), use_fp16=False, devices="cpu")
        model.encode(texts[:4], max_length=8192)
        started = time.perf_counter()
        model.encode(texts, batch_size=32, max_length=8192)
        return Result("offline BGEM3FlagModel.encode", len(texts), time.perf_counter() - started)

    return "texts", requests, [1.0] * len(texts), offline


def reranker_case(model_dir: Path, args):
    rng = random.Random(1)
    batches = []
    for _ in range(max(1, args.items // 40)):
        docs = [text(rng, rng.choice([rng.randint(5, 60)] * 9 + [rng.randint(300, 900)])) for _ in range(rng.randint(10, 100))]
        batches.append((text(rng, rng.randint(3, 12)), docs))
    requests = [{"path": "/v1/rerank", "kwargs": {"json": {"model": "bge-reranker-v2-m3", "query": q, "documents": d}}}
                for q, d in batches]

    def offline() -> Result:
        from FlagEmbedding import FlagReranker

        model = FlagReranker(str(model_dir), use_fp16=False, devices="cpu")
        pairs = [[q, d] for q, docs in batches for d in docs]
        model.compute_score(pairs[:4])
        started = time.perf_counter()
        model.compute_score(pairs, batch_size=32)
        return Result("offline FlagReranker.compute_score", len(pairs), time.perf_counter() - started)

    return "documents", requests, [float(len(d)) for _, d in batches], offline


def asr_case(model_dir: Path, args):
    clips = [speech_clip(10.0, seed) for seed in range(max(8, args.items // 25))]
    requests = [{"path": "/v1/audio/transcriptions",
                 "kwargs": {"files": {"file": ("a.wav", wav_bytes(c))}, "data": {"model": "SenseVoiceSmall"}}}
                for c in clips]

    def offline() -> Result:
        from funasr import AutoModel

        model = AutoModel(model=str(model_dir), disable_update=True, device="cpu",
                          ncpu=torch.get_num_threads(), disable_pbar=True)
        model.kwargs["frontend"].dither = 0.0
        model.generate(input=clips[:1], disable_pbar=True)
        started = time.perf_counter()
        model.generate(input=clips, batch_size=len(clips), disable_pbar=True)
        return Result("offline funasr generate (batched)", 10.0 * len(clips), time.perf_counter() - started)

    return "audio s", requests, [10.0] * len(clips), offline


CASES = {"embedding": embedding_case, "reranker": reranker_case, "asr": asr_case}


def build(kind: str, size: str, root: Path) -> Path:
    from server.tiny_models.sensevoice import build_tiny_sensevoice
    from server.tiny_models.xlmr import build_tiny_bge_m3, build_tiny_reranker

    if kind == "asr":
        return build_tiny_sensevoice(root / kind, **SENSEVOICE_SIZES[size])
    builder = build_tiny_bge_m3 if kind == "embedding" else build_tiny_reranker
    # The builder's default initializer (0.2) saturates a deep model; 0.02 is XLM-R's own.
    return builder(root / kind, initializer_range=0.02, **XLMR_SIZES[size])


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    fmt = lambda v: "" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="embedding,reranker,asr")
    parser.add_argument("--size", choices=list(XLMR_SIZES), default="small")
    parser.add_argument("--model-dir", action="append", default=[], metavar="KIND=PATH",
                        help="use a real model directory instead of random weights, e.g. embedding=models/bge-m3")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--items", type=int, default=256, help="texts in the embedding workload (others scale)")
    parser.add_argument("--lone", type=int, default=20, help="requests in the lone-latency run")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--max-seconds", type=float, default=300, help="bound on each load run")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    given = dict(item.split("=", 1) for item in args.model_dir)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models.split(","):
            model_dir = Path(given[kind]) if kind in given else build(kind, args.size, Path(tmp))
            unit, requests, units, offline = CASES[kind](model_dir, args)
            lone = run_server(kind, model_dir, requests[: args.lone], units[: args.lone], 1, 32, args,
                              label="lone requests (1 client)")
            results = [offline(),
                       run_server(kind, model_dir, requests, units, args.clients, 32, args),
                       run_server(kind, model_dir, requests, units, args.clients, 1, args),
                       lone]
            rows = [r.row(unit) for r in results]
            limit, server, off = (rows[i][f"{unit}/s"] for i in range(3))
            ratios = {
                "server / offline limit": server / limit,
                "server / batching off": server / off,
                # A lone request against the forward passes it needs: the overhead the server adds.
                "lone latency / its forward pass": statistics.mean(lone.latencies) / lone.forward_s,
            }
            report[kind] = {"size": "given" if kind in given else args.size, "rows": rows, "ratios": ratios}
            print(f"\n## {kind} ({report[kind]['size']}, {torch.get_num_threads()} torch threads)\n")
            print(markdown(rows))
            print("\n" + ", ".join(f"{k}: {v:.2f}x" for k, v in ratios.items()))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
