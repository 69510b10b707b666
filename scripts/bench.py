"""Benchmark the server against its practical limit and its peers, side by side in one run, as ratios.

For each model it builds a model directory of a named size (random weights: compute does not depend
on their values) or takes a real one, then measures on fixed, seeded workloads:

* offline: the reference library over the whole workload in one call (BGEM3FlagModel.encode,
  FlagReranker.compute_score, funasr AutoModel.generate batched): the practical limit of this stack;
* server: this server, started as its own process on 127.0.0.1 (``inference-server serve``), driven
  by N concurrent closed-loop clients, each sending one request at a time;
* batching off: the same server with --max-batch-size 1;
* peers, on the same model directory (``--peers``, see scripts/benchlib/peers.py): Infinity for embeddings and
  rerank, funasr's own funasr-server for transcription;
* lone: one request at a time of one typical input, repeated: its p50 latency against the bare
  forward passes it needed (read from the server's own /metrics; for audio, the adapter on that
  clip timed in this process, front end included, which the server runs before the queue), i.e.
  the overhead the server adds;
* latency against offered load: open-loop (Poisson) arrivals at fractions of the server's capacity,
  per system, plotted to a PNG;
* with ``--mixed``, instead of all the above: interactive requests beside a bulk client, fair
  scheduling against fifo and the peers (scripts/bench_mixed.py);
* with ``--overload``, instead of all the above: a burst and a sustained load past capacity, with
  request deadlines: goodput, refusals, late answers (scripts/bench_overload.py).

    python scripts/bench.py --size small
    python scripts/bench.py --size base --models embedding --peers --out bench.json --plot bench.png
    python scripts/bench.py --model-dir embedding=models/bge-m3 --models embedding
    python scripts/bench.py --mixed --models reranker --peers --rounds 3
    python scripts/bench.py --overload --models embedding

Prints Markdown tables and the targets with their verdicts; --out writes everything as JSON. Every
loop is bounded in count and time; only loopback is used.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.background import free_port, started_process  # noqa: E402
from server.models.tiny_xlmr import XLMR_SIZES  # noqa: E402
from server.transcription.tiny import SENSEVOICE_SIZES  # noqa: E402

KINDS = ("embedding", "reranker", "asr")
WORDS = ("the giant panda is a bear native to south central china it eats bamboo and sleeps a lot "
         "rivers mountains 熊猫 竹子 世界 你好 today we test speech models").split()
SAMPLE_RATE = 16000
OFFLINE, SERVER, SERVER_OFF = "offline reference (one call)", "server", "server, batching off"


# ---- workloads ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    json: dict | None = None  # the body of a JSON endpoint
    audio: bytes | None = None  # a WAV file, for transcription
    units: float = 1.0  # texts, documents or audio seconds it carries


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


@dataclass(frozen=True)
class Costs:
    """What a workload asks of the model, in the adapters' cost unit (tokens; 10 ms audio frames)."""

    rows: list[int]  # every row (text, (query, window) pair, audio segment) the server computes
    # Each row's length as the offline reference's batches pad it (its longest row's), where known.
    offline_padded: list[int] | None = None


def sorted_batches(costs: list[int], batch_size: int) -> list[int]:
    """Each row's padded length when rows are sorted longest first and cut into batches of
    ``batch_size`` (what FlagEmbedding's encode and compute_score do before their passes)."""
    ordered = sorted(costs, reverse=True)
    return [ordered[start] for start in range(0, len(ordered), batch_size)
            for _ in ordered[start:start + batch_size]]


def text_costs(texts: list[str], batch_size: int) -> Callable[[Path], Costs]:
    """bge-m3's rows: each text's tokens with <s> and </s>, as the server tokenizes them."""
    def costs(model_dir: Path) -> Costs:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        rows = [len(ids) for ids in tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]]
        return Costs(rows, sorted_batches(rows, batch_size))

    return costs


def rerank_costs(bodies: list[dict], batch_size: int | None) -> Callable[[Path], Costs]:
    """The reranker's rows: the (query, window) pairs the server's own RerankService._pairs makes of
    each request (windows, query cut, pair template), from the tokenizer alone. ``batch_size``: the
    offline reference's, where it scores the same pairs."""
    def costs(model_dir: Path) -> Costs:
        from transformers import AutoConfig, AutoTokenizer

        from server.config import Settings
        from server.models.xlmr_common import longest_piece
        from server.rerank.model import BgeReranker
        from server.rerank.schema import RerankRequest
        from server.rerank.service import RerankService

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = object.__new__(BgeReranker)  # the adapter's tokenizing methods, without its weights
        model.tokenizer, model.max_piece_chars = tokenizer, longest_piece(tokenizer)
        model.pair_overhead = len(tokenizer.build_inputs_with_special_tokens([], []))
        model.max_tokens = AutoConfig.from_pretrained(str(model_dir)).max_position_embeddings - 2
        settings = Settings()
        service = RerankService(model, None, max_length=settings.reranker_max_length,
                                max_documents=settings.rerank_max_documents, max_tokens=settings.rerank_max_tokens,
                                timeout=settings.request_timeout)
        rows = []
        for body in bodies:
            req = RerankRequest(**body)
            pairs, _ = service._pairs(req, [d if isinstance(d, str) else d.text for d in req.documents])
            rows += [len(p) for p in pairs]
        return Costs(rows, sorted_batches(rows, batch_size) if batch_size else None)

    return costs


def audio_costs(requests: list[Request], offline_batch: int | None) -> Callable[[Path], Costs]:
    """SenseVoice's rows: each upload decoded as the server decodes it, whole up to the longest
    segment, else cut at pauses by the server's own VAD (split_on_pauses), in 10 ms frames
    (SenseVoice.cost). ``offline_batch``: funasr's generate batch, where it runs these clips."""
    def costs(model_dir: Path) -> Costs:
        from server.config import Settings
        from server.transcription.audio import decode_audio
        from server.transcription.model import AsrItem, SenseVoice
        from server.transcription.vad import split_on_pauses

        settings = Settings()
        rows = []
        for req in requests:
            audio = decode_audio(req.audio, max_seconds=settings.asr_max_audio_seconds)
            if len(audio) <= settings.asr_max_segment_seconds * SAMPLE_RATE:
                spans = [(0, len(audio))]
            else:
                spans = [(round(s.start * SAMPLE_RATE), round(s.end * SAMPLE_RATE))
                         for s in split_on_pauses(audio, max_segment_s=settings.asr_max_segment_seconds)]
            rows += [SenseVoice.cost(AsrItem(audio[start:end])) for start, end in spans]
        # funasr's generate pads each batch of clips, in their order, to its longest.
        padded = None
        if offline_batch:
            padded = [max(rows[start:start + offline_batch]) for start in range(0, len(rows), offline_batch)
                      for _ in rows[start:start + offline_batch]]
        return Costs(rows, padded)

    return costs


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def ranking(rng: random.Random, documents: int) -> Request:
    """A rerank request: a short query and ``documents`` documents of 5-60 words, every one ranked."""
    docs = [text(rng, rng.randint(5, 60)) for _ in range(documents)]
    return Request({"model": "bge-reranker-v2-m3", "query": text(rng, rng.randint(3, 12)), "documents": docs,
                    "top_n": documents}, units=documents)


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


def speech_clip(seconds: float, seed: int) -> np.ndarray:
    """`seconds` of real speech (the espeak-ng recording the tests use), from a seeded offset."""
    from server.transcription.audio import decode_audio

    speech = decode_audio((ROOT / "tests/data/speech_pauses.flac").read_bytes(), max_seconds=60)
    tiled = np.tile(speech, int(seconds * SAMPLE_RATE // len(speech)) + 2)
    start = np.random.default_rng(seed).integers(0, len(speech))
    return tiled[start:start + int(seconds * SAMPLE_RATE)]


def wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


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
        from server.models.device import resolve_dtype
        from server.transcription.model import AsrItem, SenseVoice

        cpu = torch.device("cpu")
        model, item = SenseVoice(model_dir, cpu, resolve_dtype(args.dtype, cpu)), AsrItem(ten[0])
        model.run_batch([item])
        return statistics.median(_seconds(lambda: model.run_batch([item])) for _ in range(args.lone))

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


# ---- systems under test ---------------------------------------------------------------------------


@dataclass
class Endpoint:
    """A running system that serves one kind: how to send it a request, and its batch counters."""

    name: str
    send: Callable[[httpx.AsyncClient, Request], Awaitable[httpx.Response]]
    base_url: str
    counters: Callable[[], dict[str, float]] | None = None


OUR_PATHS = {"embedding": "/v1/embeddings", "reranker": "/v1/rerank", "asr": "/v1/audio/transcriptions"}


def our_send(kind: str):
    async def send(http: httpx.AsyncClient, req: Request) -> httpx.Response:
        if req.audio is not None:
            return await http.post(OUR_PATHS[kind], files={"file": ("clip.wav", req.audio)}, data=req.json)
        return await http.post(OUR_PATHS[kind], json=req.json)

    return send


@contextmanager
def our_server(kind: str, model_dir: Path, *, batch_size: int, dtype: str, name: str,
               extra: Sequence[str] = ()) -> Iterator[Endpoint]:
    """``extra``: more `serve` flags, e.g. ("--batch-scheduling", "fifo")."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    models = {k: str(model_dir) if k == kind else "none" for k in KINDS}
    cmd = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--embedding-model", models["embedding"], "--reranker-model", models["reranker"],
           "--asr-model", models["asr"], "--max-batch-size", str(batch_size), "--dtype", dtype,
           "--log-level", "warning", "--offline", *extra]
    with started_process(cmd, f"{url}/ready"):
        yield Endpoint(name, our_send(kind), url, lambda: scrape_counters(url))


def scrape_counters(url: str) -> dict[str, float]:
    """The batchers' totals from /metrics: computed items, forward passes and their seconds, cost."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = dict.fromkeys(("computed", "batches", "batch_seconds", "real", "padded"), 0.0)
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for s in family.samples:
            if s.name == "inference_items_total" and s.labels.get("outcome") == "computed":
                totals["computed"] += s.value
            elif s.name == "inference_batch_size_count":
                totals["batches"] += s.value
            elif s.name == "inference_batch_seconds_sum":
                totals["batch_seconds"] += s.value
            elif s.name == "inference_batch_cost_total":
                totals[s.labels["kind"]] += s.value
    return totals


def systems(wl: Workload, model_dir: Path, args) -> list[Callable[[], Iterator[Endpoint]]]:
    """Context managers that start each system for this workload, ours first."""
    kind = wl.kind
    found = [lambda: our_server(kind, model_dir, batch_size=args.max_batch_size, dtype=args.dtype, name=SERVER)]
    if "batching-off" not in getattr(args, "skip", ()):
        found.append(lambda: our_server(kind, model_dir, batch_size=1, dtype=args.dtype, name=SERVER_OFF))
    if getattr(args, "compare_dtype", None):  # the same server in another dtype, side by side: what the dtype buys
        found.append(lambda: our_server(kind, model_dir, batch_size=args.max_batch_size, dtype=args.compare_dtype,
                                        name=f"{SERVER}, {args.compare_dtype}"))
    if getattr(args, "compare_fifo", False):  # what fair and deadline scheduling cost where there is nothing to be fair about
        found.append(lambda: our_server(kind, model_dir, batch_size=args.max_batch_size, dtype=args.dtype,
                                        name=f"{SERVER}, fifo",
                                        extra=("--batch-scheduling", "fifo", "--no-deadline-scheduling")))
    if args.peers and wl.peers:
        from benchlib import peers

        peer = peers.peer_for(kind, model_dir, args.peers_dir)
        if peer is not None:
            found.append(peer)
    return found


# ---- load drivers ---------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    units: float = 0.0
    errors: int = 0
    client_cpu_s: float = 0.0  # this process's CPU time during the run: the load generator's

    @property
    def client_share(self) -> float:
        """The share of the machine's CPU the load generator took, which the system under test
        did not have (the offline reference had all of it)."""
        return self.client_cpu_s / (self.seconds * len(os.sched_getaffinity(0)))

    def percentile(self, q: float) -> float | None:
        lat = sorted(self.latencies)
        return 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None


async def _timed(ep: Endpoint, http: httpx.AsyncClient, req: Request, run: Run) -> None:
    started = time.perf_counter()
    try:
        response = await ep.send(http, req)
        ok = response.status_code == 200
    except httpx.HTTPError:
        ok = False
    if ok:
        run.latencies.append(time.perf_counter() - started)
        run.units += req.units
    else:
        run.errors += 1


def _client(ep: Endpoint, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=ep.base_url, timeout=600,
                             limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))


async def closed_loop(ep: Endpoint, requests: list[Request], clients: int, deadline_s: float) -> Run:
    """`clients` clients, each sending its next request when the last one is answered."""
    queue = list(reversed(requests))
    run = Run(0.0)
    stop = time.monotonic() + deadline_s

    async def client(http: httpx.AsyncClient) -> None:
        while queue and time.monotonic() < stop:
            await _timed(ep, http, queue.pop(), run)

    started, cpu = time.perf_counter(), _cpu_seconds()
    async with _client(ep, clients) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    run.seconds, run.client_cpu_s = time.perf_counter() - started, _cpu_seconds() - cpu
    return run


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def open_loop(ep: Endpoint, requests: list[Request], rate: float, deadline_s: float) -> Run:
    """Requests arriving at `rate` per second (Poisson, seeded) whatever the answers: offered load."""
    gaps = np.random.default_rng(7).exponential(1 / rate, len(requests))
    run = Run(0.0)
    started = time.perf_counter()
    async with _client(ep, 256) as http:
        tasks = []
        for req, gap in zip(requests, gaps):
            await asyncio.sleep(gap)
            if time.perf_counter() - started > deadline_s:
                break
            tasks.append(asyncio.create_task(_timed(ep, http, req, run)))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=deadline_s * 2 + 60)
    run.seconds = time.perf_counter() - started
    return run


# ---- measuring ------------------------------------------------------------------------------------


def measure(ep: Endpoint, wl: Workload, args, bare_s: float | None = None) -> dict:
    """Closed-loop throughput with the workload's clients, then (if it has one) the lone-request
    latency, against ``bare_s`` when the workload measured its bare forward pass, else the server's
    own passes."""
    # Warm the HTTP path and the model at the run's concurrency: the first passes at each batch
    # shape build their kernels, which a short run (10 s clips: 4 rounds of 8) would otherwise count.
    warm = wl.requests[: max(2, min(wl.clients, len(wl.requests) // 4))]
    asyncio.run(closed_loop(ep, warm, len(warm), 120))
    before = ep.counters() if ep.counters else None
    run = asyncio.run(closed_loop(ep, wl.requests, wl.clients, args.max_seconds))
    row = {"system": ep.name, f"{wl.unit}/s": run.units / run.seconds, "requests/s": len(run.latencies) / run.seconds,
           "p50 ms": run.percentile(0.5), "p95 ms": run.percentile(0.95), "p99 ms": run.percentile(0.99),
           "mean batch": None, "padding efficiency": None, "errors": run.errors,
           "client CPU share": run.client_share}
    if before is not None:
        delta = {k: v - before[k] for k, v in ep.counters().items()}
        row["mean batch"] = delta["computed"] / max(1, delta["batches"])
        row["padding efficiency"] = delta["real"] / max(1, delta["padded"])
    if wl.lone is None:
        return row

    before = ep.counters() if ep.counters else None
    lone = asyncio.run(closed_loop(ep, [wl.lone] * args.lone, 1, args.max_seconds))
    row["lone p50 ms"] = lone.percentile(0.5)
    if bare_s is not None:
        row["lone forward ms"] = 1000 * bare_s
    elif before is not None and lone.latencies:
        # The forward passes of a lone request are its batches: their seconds are the bare compute.
        forward_s = (ep.counters()["batch_seconds"] - before["batch_seconds"]) / len(lone.latencies)
        row["lone forward ms"] = 1000 * forward_s
    return row


def _seconds(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def sweep(ep: Endpoint, wl: Workload, args, rates: list[float]) -> list[dict]:
    """Latency at each offered load, from a prefix of the workload lasting about --sweep-seconds."""
    points = []
    for rate in rates:
        count = max(8, min(len(wl.requests), round(rate * args.sweep_seconds)))
        run = asyncio.run(open_loop(ep, wl.requests[:count], rate, args.max_seconds))
        points.append({"offered requests/s": rate, "served requests/s": len(run.latencies) / run.seconds,
                       "p50 ms": run.percentile(0.5), "p95 ms": run.percentile(0.95), "errors": run.errors})
    return points


def bench_workload(wl: Workload, model_dir: Path, args) -> dict:
    """Every system on the workload, ``args.rounds`` times in turn (offline reference, ours, batching
    off, peers; then again): this machine's speed drifts by up to a quarter over minutes, so a
    system measured minutes after another can win or lose on the drift alone. Each system's row is
    its median round, each ratio the median of that ratio within each round; the latency sweep runs
    in the first round only."""
    by_system: dict[str, list[dict]] = {}
    sweeps, rates = {}, None
    bare_s = wl.bare(model_dir) if wl.bare is not None else None  # before any server runs: alone
    work = workload_flops(wl, model_dir) if wl.costs is not None else None
    peaks = getattr(args, "matmul_peaks", None)
    for _ in range(args.rounds):
        if wl.offline is not None and "offline" not in getattr(args, "skip", ()):
            seconds = wl.offline(model_dir)
            by_system.setdefault(OFFLINE, []).append(with_flops(
                {"system": OFFLINE, f"{wl.unit}/s": sum(r.units for r in wl.requests) / seconds}, wl, work, peaks))
        for start in systems(wl, model_dir, args):
            with start() as ep:
                print(f"  {wl.kind} / {wl.name}: {ep.name} ...", flush=True)
                row = with_flops(measure(ep, wl, args, bare_s), wl, work, peaks)
                if rates is None and args.sweep_seconds > 0:  # ours goes first: its capacity sets the scale
                    rates = [f * row["requests/s"] for f in args.sweep_fractions]
                if ep.name not in sweeps:
                    sweeps[ep.name] = sweep(ep, wl, args, rates or [])
            by_system.setdefault(ep.name, []).append(row)
    rows = [median_round(runs, f"{wl.unit}/s") for runs in by_system.values()]
    # Ratios within each round (systems measured side by side), then their median over the rounds.
    per_round = [ratios([runs[i] for runs in by_system.values()], wl.unit) for i in range(args.rounds)]
    res = {"kind": wl.kind, "workload": wl.name, "unit": wl.unit, "clients": wl.clients, "rows": rows,
           "sweep": sweeps, "ratios": {k: statistics.median(r[k] for r in per_round) for k in per_round[0]}}
    if work is not None:
        res["work"] = work
    return res


# ---- FLOPs: how close each system runs to the hardware ---------------------------------------------


def cost_name(kind: str) -> str:
    return "frames" if kind == "asr" else "tokens"  # the adapters' cost unit (frames: 10 ms of audio)


def workload_flops(wl: Workload, model_dir: Path) -> dict:
    """The workload's model rows and their FLOPs (scripts/benchlib/flops.py), in all and per workload unit."""
    from benchlib.flops import forward_flops

    costs = wl.costs(model_dir)
    units = sum(r.units for r in wl.requests)
    real = forward_flops(wl.kind, model_dir, costs.rows)  # dense only: the requests ask for nothing else
    work = {"rows": len(costs.rows), cost_name(wl.kind): sum(costs.rows), "GFLOP": real / 1e9,
            f"{cost_name(wl.kind)} per unit": sum(costs.rows) / units, "GFLOP per unit": real / units / 1e9}
    if costs.offline_padded is not None:
        padded = forward_flops(wl.kind, model_dir, costs.offline_padded)
        work |= {f"offline padded {cost_name(wl.kind)}": sum(costs.offline_padded),
                 "offline padded GFLOP": padded / 1e9}
    return work


def with_flops(row: dict, wl: Workload, work: dict | None, peaks: dict | None) -> dict:
    """``row`` with its rows' tokens (frames) per second and GFLOP/s, real and padded, and their
    share of this machine's measured matmul peak. Per second of the run's wall time: the workload's
    totals times the units the system served per second (a run cut short served a prefix).

    Padded, for a server (batching off included): real over the padding efficiency it reported
    (/metrics: real over padded cost), exact for the FLOPs linear in length and a lower bound for
    attention's (quadratic) ones. For the offline reference: its own batches, recounted (rows sorted
    longest first in batches of 32; funasr: one batch). For a system with no batch counters (a
    peer), no padded figures; and no peak share, as its dtype is not this run's."""
    key = f"{wl.unit}/s"
    if work is None or not row.get(key):
        return row
    name, per_s = cost_name(wl.kind), row[key] / sum(r.units for r in wl.requests)
    offline = row["system"] == OFFLINE
    real_cost, real_flops = work[name] * per_s, work["GFLOP"] * 1e9 * per_s
    padded_cost = padded_flops = None
    if offline and f"offline padded {name}" in work:
        padded_cost, padded_flops = work[f"offline padded {name}"] * per_s, work["offline padded GFLOP"] * 1e9 * per_s
    elif not offline and row.get("padding efficiency"):
        padded_cost, padded_flops = real_cost / row["padding efficiency"], real_flops / row["padding efficiency"]
    figures = {f"{name}/s": real_cost, f"padded {name}/s": padded_cost}
    if wl.kind == "asr":
        figures["padded audio s/s"] = None if padded_cost is None else padded_cost / 100  # 100 frames a second
    figures["GFLOP/s"] = real_flops / 1e9
    figures["padded GFLOP/s"] = None if padded_flops is None else padded_flops / 1e9
    peak = None
    if peaks:
        peak = peaks["offline"] if offline else peaks["server"] if row["system"] in (SERVER, SERVER_OFF) else None
        if row["system"] == f"{SERVER}, float32":
            peak = peaks["offline"]  # --compare-dtype float32: the float32 CPU peak, with the same threads
    figures["% of peak"] = None if peak is None else 100 * real_flops / peak["FLOP/s"]
    figures["padded % of peak"] = None if peak is None or padded_flops is None else 100 * padded_flops / peak["FLOP/s"]
    # Right after the throughput they are of, so that every table has its columns in one order.
    out = {}
    for column, value in row.items():
        out[column] = value
        if column == key:
            out |= figures
    return out


def measure_peaks(args) -> dict:
    """This machine's matmul peak (scripts/benchlib/flops.py), measured once before any model runs: in the
    run's dtype on the device and with the threads the server will use, and in float32 on the CPU
    with this process's threads for the offline references (FlagEmbedding, funasr: float32 on CPU)."""
    from benchlib.flops import matmul_peak_flops

    from server.config import Settings
    from server.models.device import resolve_device, resolve_dtype

    settings = Settings()
    device = resolve_device(settings.device)
    dtype = resolve_dtype(args.dtype, device)
    cpu = torch.device("cpu")

    def peak(dtype: torch.dtype, device: torch.device, threads: int) -> dict:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            flop_s = matmul_peak_flops(dtype, device)
        finally:
            torch.set_num_threads(before)
        return {"dtype": str(dtype).removeprefix("torch."), "device": str(device),
                "threads": threads if device.type == "cpu" else None, "FLOP/s": flop_s}

    threads = settings.cpu_threads or torch.get_num_threads()
    server = peak(dtype, device, threads)
    same = device.type == "cpu" and dtype == torch.float32 and threads == torch.get_num_threads()
    return {"server": server, "offline": server if same else peak(torch.float32, cpu, torch.get_num_threads())}


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


def ratios(rows: list[dict], unit: str) -> dict[str, float]:
    """Ours against each other system ("server / X": above 1 means ours is faster), and the lone
    request's latency against its forward passes."""
    speed = {r["system"]: r[f"{unit}/s"] for r in rows}
    out = {f"server / {name}": speed[SERVER] / value for name, value in speed.items() if name != SERVER}
    server = next(r for r in rows if r["system"] == SERVER)
    if server.get("lone forward ms"):
        out["lone p50 / its forward pass"] = server["lone p50 ms"] / server["lone forward ms"]
    return out


# ---- targets, report, plot ------------------------------------------------------------------------


def targets(results: list[dict]) -> list[dict]:
    """The issue's targets, each with the figure it is judged on."""
    out = []

    def check(what: str, value: float | None, goal: float, higher: bool = True, ceiling: float | None = None) -> None:
        if value is not None:
            out.append({"target": what, "measured": value, "goal": f"{'>=' if higher else '<='} {goal:g}",
                        "met": value >= goal if higher else value <= goal, "ceiling here": ceiling})

    for res in results:
        name, r = f"{res['kind']} ({res['workload']})", res["ratios"]
        server = next(row for row in res["rows"] if row["system"] == SERVER)
        # The offline reference had the whole machine; the server shares it with the load generator.
        left_to_server = 1 - server["client CPU share"]
        if res["kind"] in ("embedding", "reranker"):
            to_limit, to_off = r.get(f"server / {OFFLINE}"), r.get(f"server / {SERVER_OFF}")
            check(f"{name}: server / offline limit", to_limit, 0.9, ceiling=left_to_server)
            # The most batching can buy on this machine: the offline limit over batching off. Where
            # it is under 3, the target is out of reach of any server on this stack. An offline
            # reference slower than the server bounds nothing: no ceiling then.
            ceiling = to_off / to_limit if to_limit and to_off and to_limit <= 1 else None
            check(f"{name}: server / batching off", to_off, 3.0, ceiling=ceiling)
            if res["workload"] != "short texts":
                check(f"{name}: padding efficiency", server["padding efficiency"], 0.85)
        if res["kind"] == "asr" and res["workload"] == "10 s clips":
            check(f"{name}: server / offline batched funasr", r.get(f"server / {OFFLINE}"), 0.9, ceiling=left_to_server)
        # One workload of each kind measures the lone request (check skips the others' None).
        check(f"{res['kind']}: lone p50 / its forward pass", r.get("lone p50 / its forward pass"), 1.2, higher=False)
        for key, value in r.items():
            if key not in (f"server / {OFFLINE}", f"server / {SERVER_OFF}", "lone p50 / its forward pass") \
                    and not key.startswith(f"server / {SERVER}, "):  # --compare-dtype: not a peer
                check(f"{name}: {key} (peer)", value, 1.0)
    return out


def markdown(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(c for r in rows for c in r))
    fmt = lambda v: "" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = [r for r in results if any(r["sweep"].values())]
    if not swept:
        return
    fig, axes = plt.subplots(1, len(swept), figsize=(5.5 * len(swept), 4.5), squeeze=False)
    for ax, res in zip(axes[0], swept):
        for i, (system, points) in enumerate(res["sweep"].items()):
            x = [p["offered requests/s"] for p in points]
            color = f"C{i}"
            ax.plot(x, [p["p50 ms"] for p in points], "o-", color=color, label=f"{system} p50")
            ax.plot(x, [p["p95 ms"] for p in points], "s--", color=color, alpha=0.6, label=f"{system} p95")
        ax.set_title(f"{res['kind']}: {res['workload']}")
        ax.set_xlabel("offered load (requests/s, open loop)")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def each_kind(args, bench_kind: Callable, print_kind: Callable, save: Callable) -> list[dict]:
    """``bench_kind(kind, model_dir, args)`` for each of ``--models``, on the ``--model-dir`` given
    or a model built at ``--size``; each result printed and the results saved after every model, so
    a long run cut short keeps what it measured."""
    given = dict(item.split("=", 1) for item in args.model_dir)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models.split(","):
            model_dir = Path(given[kind]) if kind in given else build(kind, args.size, Path(tmp))
            res = bench_kind(kind, model_dir, args)
            res["size"] = "given" if kind in given else args.size
            results.append(res)
            print_kind(res, args)
            save(results, args)
    return results


def build(kind: str, size: str, root: Path) -> Path:
    from server.models.tiny_xlmr import build_tiny_bge_m3, build_tiny_reranker
    from server.transcription.tiny import build_tiny_sensevoice

    if kind == "asr":
        return build_tiny_sensevoice(root / kind, **SENSEVOICE_SIZES[size])
    builder = build_tiny_bge_m3 if kind == "embedding" else build_tiny_reranker
    # The builder's default initializer (0.2) saturates a deep model; 0.02 is XLM-R's own.
    return builder(root / kind, initializer_range=0.02, **XLMR_SIZES[size])


def main() -> None:
    import bench_mixed
    import bench_overload
    import bench_stream

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(KINDS))
    parser.add_argument("--size", choices=list(XLMR_SIZES), default="small")
    parser.add_argument("--model-dir", action="append", default=[], metavar="KIND=PATH",
                        help="use a real model directory instead of random weights, e.g. embedding=models/bge-m3")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (text workloads; audio uses 8)")
    parser.add_argument("--items", type=int, default=256, help="texts per embedding workload (others scale)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--lone", type=int, default=20, help="repeats of the lone request")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every system this many times in turn; each reports its median round")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--max-seconds", type=float, default=300, help="bound on each load run")
    parser.add_argument("--sweep-seconds", type=float, default=10,
                        help="about how long each offered-load point lasts (0: no sweep)")
    parser.add_argument("--sweep-fractions", type=lambda s: [float(x) for x in s.split(",")],
                        default=[0.25, 0.5, 0.75, 1.0, 1.25], help="offered loads, as fractions of the server's capacity")
    parser.add_argument("--skip", type=lambda v: set(filter(None, v.split(","))), default=set(),
                        help="systems not to run: offline, batching-off (comma-separated)")
    parser.add_argument("--compare-dtype", choices=["float32", "bfloat16"],
                        help="also run the server in this dtype, side by side (server / server, DTYPE)")
    parser.add_argument("--peers", action="store_true", help="also run Infinity and funasr-server (scripts/benchlib/peers.py)")
    parser.add_argument("--compare-fifo", action="store_true",
                        help="also run the server with --batch-scheduling fifo --no-deadline-scheduling, side by side")
    parser.add_argument("--peers-dir", type=Path, default=Path.home() / ".cache/inference-server/peers",
                        help="where the peers' own virtual environments are made")
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    parser.add_argument("--plot", type=Path, default=Path("bench.png"), help="latency-vs-load PNG")
    parser.add_argument("--mixed", action="store_true",
                        help="run only the interactive-beside-bulk workload (scripts/bench_mixed.py) instead")
    bench_mixed.add_arguments(parser)
    parser.add_argument("--stream", action="store_true",
                        help="run only the streamed long-recording workload (scripts/bench_stream.py) instead")
    bench_stream.add_arguments(parser)
    parser.add_argument("--overload", action="store_true",
                        help="run only the overload workload, burst and sustained (scripts/bench_overload.py) instead")
    bench_overload.add_arguments(parser)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise (funasr sets INFO)
    if args.mixed:
        return bench_mixed.main(args)
    if args.stream:
        return bench_stream.main(args)
    if args.overload:
        return bench_overload.main(args)
    given = dict(item.split("=", 1) for item in args.model_dir)
    args.matmul_peaks = measure_peaks(args)
    for who, p in (("server", args.matmul_peaks["server"]), ("offline reference", args.matmul_peaks["offline"])):
        threads = f", {p['threads']} threads" if p["threads"] else ""
        print(f"matmul peak for the {who}: {p['FLOP/s'] / 1e9:.1f} GFLOP/s ({p['dtype']} on {p['device']}{threads})")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models.split(","):
            model_dir = Path(given[kind]) if kind in given else build(kind, args.size, Path(tmp))
            for wl in WORKLOADS[kind](args):
                res = bench_workload(wl, model_dir, args)
                res["size"] = "given" if kind in given else args.size
                results.append(res)
                print(f"\n## {kind}: {wl.name} ({res['size']}, {wl.clients} clients, "
                      f"{torch.get_num_threads()} CPU threads)\n")
                print(markdown(res["rows"]))
                print("\n" + ", ".join(f"{k}: {v:.2f}x" for k, v in res["ratios"].items()), flush=True)
                save(results, args)  # after every workload: a long run cut short keeps what it measured
    print("\n## Targets\n\n" + markdown(targets(results)))
    print(f"\nplot: {args.plot}")


def save(results: list[dict], args) -> None:
    plot(results, args.plot, f"latency vs offered load ({args.size}, dtype {args.dtype})")
    if args.out:
        peaks = getattr(args, "matmul_peaks", None)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items() if k != "matmul_peaks"},
                                        "matmul peaks": peaks, "results": results, "targets": targets(results)},
                                       indent=2))


if __name__ == "__main__":
    main()
