"""Benchmark /v1/embeddings end to end over HTTP: throughput and latency under concurrent clients,
with the dynamic batcher and without it (max batch size 1), on a bge-m3-architecture model with
random weights (compute does not depend on weight values).

    python scripts/bench_embeddings.py --size small --clients 16 --requests 20 --tokens 128

Sizes: tiny (2 layers x 32), small (6 layers x 384), base (12 x 768), full (bge-m3's 24 x 1024).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from server.background import free_port, serve_in_thread
from server.config import Settings
from server.tiny_models.xlmr import build_tiny_bge_m3

SIZES = {
    "tiny": {},
    "small": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "full": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
WORDS = "the giant panda is a bear native to south central china it eats bamboo and sleeps a lot".split()


def text_of(tokens: int, seed: int) -> str:
    # Roughly one token per word with the tiny tokenizer; lengths vary +-50% to exercise padding.
    n = max(1, int(tokens * (0.5 + (seed * 7919 % 100) / 100)))
    return " ".join(WORDS[(seed + i) % len(WORDS)] for i in range(n))


def run(model_dir: Path, args, max_batch_size: int) -> dict:
    settings = Settings(
        embedding_model=str(model_dir), reranker_model="none", asr_model="none", port=free_port(),
        max_batch_size=max_batch_size, cpu_threads=args.threads, log_level="warning",
    )
    with serve_in_thread(settings) as srv:
        def client(cid: int) -> list[float]:
            latencies = []
            with httpx.Client(base_url=srv.url, timeout=600) as http:
                for r in range(args.requests):
                    body = {"model": "bge-m3", "input": [text_of(args.tokens, cid * 1000 + r * 10 + k)
                                                         for k in range(args.inputs)]}
                    started = time.perf_counter()
                    response = http.post("/v1/embeddings", json=body)
                    response.raise_for_status()
                    latencies.append(time.perf_counter() - started)
            return latencies

        batcher = srv.runtime.served["embedding"].batcher
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            latencies = sorted(x for per in pool.map(client, range(args.clients)) for x in per)
        wall = time.perf_counter() - started
        stats = batcher.stats
    inputs = args.clients * args.requests * args.inputs
    return {
        "inputs/s": inputs / wall,
        "p50 ms": 1000 * statistics.median(latencies),
        "p95 ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "mean batch": stats.computed / max(1, stats.batches),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument("--inputs", type=int, default=1, help="texts per request")
    parser.add_argument("--tokens", type=int, default=128, help="mean tokens per text")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_bge_m3(Path(tmp) / "bge-m3", **SIZES[args.size])
        print(f"bge-m3 architecture, size={args.size}, {args.clients} clients x {args.requests} requests x "
              f"{args.inputs} texts of ~{args.tokens} tokens")
        for label, size in (("dynamic batching", 32), ("no batching (batch size 1)", 1)):
            result = run(model_dir, args, size)
            print(f"  {label:28s} " + "  ".join(f"{k} {v:8.1f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
