"""The interactive-beside-bulk workloads (benchlib/mixed.py), per model kind: bulk requests, small
interactive ones, and a few of each shape to warm the server with."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from benchlib import inputs
from benchlib.endpoint import Request
from benchlib.inputs import text
from server.asr.audio import SAMPLE_RATE

BULK_BODIES = 2  # distinct bulk requests, taken in turn
INTERACTIVE_BODIES = 16  # distinct interactive requests, each client taking them in turn from its own offset


@dataclass(frozen=True)
class MixedWorkload:
    kind: str
    unit: str  # what the bulk requests' `units` count
    bulk: list[Request]
    interactive: list[Request]
    # Smaller requests of both shapes, sent before anything is timed: the first passes of each
    # shape build their kernels.
    warm: list[Request]
    description: str


def embedding_mixed() -> MixedWorkload:
    rng = random.Random(20)
    texts = lambda n, lo, hi: [text(rng, rng.randint(lo, hi)) for _ in range(n)]  # noqa: E731
    body = lambda given: {"model": "bge-m3", "input": given}  # noqa: E731
    bulk = [Request(body(texts(1024, 16, 128)), units=1024) for _ in range(BULK_BODIES)]
    interactive = [Request(body(t)) for t in texts(INTERACTIVE_BODIES, 4, 32)]
    warm = [Request(body(bulk[0].json["input"][:256]), units=256), *interactive[:4]]
    return MixedWorkload("embedding", "texts", bulk, interactive, warm,
                         "bulk: 1,024 texts of 16-128 words a request; interactive: one text of 4-32 words")


def reranker_mixed() -> MixedWorkload:
    rng = random.Random(21)

    def ranking(documents: int) -> Request:
        return inputs.ranking(rng, documents)

    return MixedWorkload("reranker", "documents", [ranking(1000) for _ in range(BULK_BODIES)],
                         [ranking(20) for _ in range(INTERACTIVE_BODIES)], [ranking(250), ranking(20)],
                         "bulk: one query with 1,000 documents of 5-60 words; interactive: 20 documents")


def asr_mixed() -> MixedWorkload:
    def recording(seconds: float, seed: int) -> Request:
        audio = inputs.speech_clip(seconds, seed)
        return Request({"model": "SenseVoiceSmall"}, inputs.wav_bytes(audio), len(audio) / SAMPLE_RATE)

    interactive = [recording(5.0, 400 + i) for i in range(INTERACTIVE_BODIES)]
    return MixedWorkload("asr", "audio s", [recording(600.0, 300 + i) for i in range(BULK_BODIES)], interactive,
                         [recording(150.0, 299), *interactive[:4]],
                         "bulk: a 10-minute recording; interactive: a 5 s clip")


WORKLOADS = {"embedding": embedding_mixed, "reranker": reranker_mixed, "asr": asr_mixed}


def with_priority(requests: list[Request], priority: str) -> list[Request]:
    # JSON body for embeddings and rerank, multipart form fields for transcription: the same dict.
    return [replace(r, json={**r.json, "priority": priority}) for r in requests]
