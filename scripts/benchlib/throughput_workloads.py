"""The throughput benchmark's workloads, fixed and seeded, per model kind: what each request carries,
how many clients send them, the lone request, and the offline reference's run over the same inputs."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchlib.costs import Costs, audio_costs, rerank_costs, text_costs
from benchlib.endpoint import Request
from benchlib.inputs import speech_clip, text, wav_bytes
from benchlib.timing import call_seconds
from server.asr.audio import SAMPLE_RATE


@dataclass
class Workload:
    kind: str
    name: str
    unit: str  # what `units` count
    requests: list[Request]
    # The typical input the lone-latency run repeats; None where another workload of the kind
    # already measures the same input.
    lone: Request | None
    clients: int
    offline: Callable[[Path], float] | None  # seconds the reference library takes over all requests
    # Seconds of the model's own work on the lone input, timed in this process, where the server's
    # forward passes (from /metrics) leave out part of it: the audio front end runs before the queue.
    bare: Callable[[Path], float] | None = None
    peers: bool = True  # whether the peers do the same work on these requests
    # The model rows the requests make, in the server's cost unit (see Costs): for the FLOP figures.
    costs: Callable[[Path], Costs] | None = None


def embedding_workloads(args) -> list[Workload]:
    rng = random.Random(0)
    short = [text(rng, rng.randint(4, 32)) for _ in range(args.items)]
    # Mostly short and mid-length texts, one in ten long (400-1000 words).
    mixed = [text(rng, rng.choice([rng.randint(4, 32)] * 5 + [rng.randint(32, 256)] * 4 + [rng.randint(400, 1000)]))
             for _ in range(args.items)]
    lone = Request({"model": "bge-m3", "input": text(rng, 64)})

    def workload(name: str, texts: list[str], lone: Request | None) -> Workload:
        def offline(model_dir: Path) -> float:
            from FlagEmbedding import BGEM3FlagModel

            model = BGEM3FlagModel(str(model_dir), use_fp16=False, devices="cpu")
            model.encode(texts[:4], max_length=8192)
            started = time.perf_counter()
            model.encode(texts, batch_size=32, max_length=8192)
            return time.perf_counter() - started

        requests = [Request({"model": "bge-m3", "input": t}) for t in texts]
        return Workload("embedding", name, "texts", requests, lone, args.clients, offline, costs=text_costs(texts, 32))

    return [workload("short texts", short, None), workload("mixed lengths", mixed, lone)]


def reranker_workloads(args) -> list[Workload]:
    rng = random.Random(1)
    queries = []
    # At least a request per client, so that all of them are in flight at once.
    for _ in range(max(args.clients, args.items // 16)):
        # 10-100 documents, one in ten long enough (300-900 words) to be cut into windows.
        docs = [text(rng, rng.choice([rng.randint(5, 60)] * 9 + [rng.randint(300, 900)]))
                for _ in range(rng.randint(10, 100))]
        queries.append((text(rng, rng.randint(3, 12)), docs))
    lone_docs = [text(rng, rng.randint(5, 60)) for _ in range(20)]

    def body(query: str, docs: list[str], **extra) -> dict:
        return {"model": "bge-reranker-v2-m3", "query": query, "documents": docs, "top_n": len(docs), **extra}

    def offline(model_dir: Path) -> float:
        from FlagEmbedding import FlagReranker

        model = FlagReranker(str(model_dir), use_fp16=False, devices="cpu")
        pairs = [[q, d] for q, docs in queries for d in docs]
        model.compute_score(pairs[:4])
        started = time.perf_counter()
        model.compute_score(pairs, batch_size=32)
        return time.perf_counter() - started

    lone = Request(body("where do pandas live", lone_docs), units=20)
    first_window = [Request(body(q, d, max_chunks_per_doc=1), units=len(d)) for q, d in queries]
    every_window = [Request(body(q, d), units=len(d)) for q, d in queries]
    return [
        # FlagReranker.compute_score and Infinity cut each (query, document) pair at 512 tokens: with
        # max_chunks_per_doc 1 this server scores exactly those pairs, so every system does the same work.
        Workload("reranker", "10-100 documents, first 512 tokens", "documents", first_window, lone,
                 args.clients, offline, costs=rerank_costs([r.json for r in first_window], 32)),
        # The API's default scores every window of a long document (up to 1024): more work than the
        # references do, so only ours and batching off run it.
        Workload("reranker", "10-100 documents, every window", "documents", every_window, None,
                 args.clients, None, peers=False, costs=rerank_costs([r.json for r in every_window], None)),
    ]


def asr_workloads(args) -> list[Workload]:
    rng = random.Random(2)
    # Several rounds of the 8 clients: one round would measure mostly its ramp (the first clip alone).
    ten = [speech_clip(10.0, seed) for seed in range(max(32, args.items // 2))]
    # Clips of 3-30 s and two of three minutes (cut at pauses into several segments).
    mixed_lengths = [rng.uniform(3, 30) for _ in range(max(8, args.items // 16))] + [180.0, 180.0]
    rng.shuffle(mixed_lengths)
    mixed = [speech_clip(s, 100 + i) for i, s in enumerate(mixed_lengths)]

    def offline_for(clips: list[np.ndarray]) -> Callable[[Path], float]:
        def offline(model_dir: Path) -> float:
            from funasr import AutoModel

            model = AutoModel(model=str(model_dir), disable_update=True, device="cpu",
                              ncpu=torch.get_num_threads(), disable_pbar=True)
            model.kwargs["frontend"].dither = 0.0
            model.generate(input=clips[:1], disable_pbar=True)
            started = time.perf_counter()
            model.generate(input=clips, batch_size=len(clips), disable_pbar=True)
            return time.perf_counter() - started

        return offline

    as_request = lambda c: Request({"model": "SenseVoiceSmall"}, wav_bytes(c), len(c) / SAMPLE_RATE)  # noqa: E731
    lone = as_request(ten[0])

    def bare(model_dir: Path) -> float:
        """The adapter on the lone clip with nothing prepared: front end, encoder and CTC decoding,
        what funasr's generate does for one clip: the median of as many runs as the lone requests,
        the same statistic as their p50."""
        from server.compute.device import resolve_dtype
        from server.asr.model import AsrItem, SenseVoice

        cpu = torch.device("cpu")
        model, item = SenseVoice(model_dir, cpu, resolve_dtype(args.dtype, cpu)), AsrItem(ten[0])
        model.run_batch([item])
        return statistics.median(call_seconds(lambda: model.run_batch([item])) for _ in range(args.lone))

    ten_requests, mixed_requests = [as_request(c) for c in ten], [as_request(c) for c in mixed]
    return [
        Workload("asr", "10 s clips", "audio s", ten_requests, lone, 8, offline_for(ten), bare,
                 costs=audio_costs(ten_requests, len(ten))),  # offline: one generate call, one batch
        # funasr's generate needs its own VAD model (fsmn-vad, a download) for minutes-long audio:
        # no offline limit for this one.
        Workload("asr", "3-30 s and 3 min clips", "audio s", mixed_requests, None, 8, None,
                 costs=audio_costs(mixed_requests, None)),
    ]


WORKLOADS = {"embedding": embedding_workloads, "reranker": reranker_workloads, "asr": asr_workloads}
