"""The soak test's load (benchlib/soak.py): closed-loop clients sending embeddings, rerank and
transcription requests of seeded random shapes, every answer's shape checked, the server's memory
read as they run."""

from __future__ import annotations

import asyncio
import io
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np

from benchlib.repo import SPEECH
from benchlib.soak_memory import rss_now

WORDS = ("the giant panda is a bear native to south central china it eats bamboo and sleeps a lot rivers "
         "mountains 熊猫 竹子 世界 你好 today we test speech models under load for a while").split()
ENDPOINTS = {"embeddings": 0.45, "rerank": 0.35, "transcriptions": 0.20}


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
    if SPEECH.exists():
        clips.append(("speech.flac", SPEECH.read_bytes()))
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
