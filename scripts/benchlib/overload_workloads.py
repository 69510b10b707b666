"""The overload workloads (benchlib/overload.py), per model kind: one bulk request shape, one small
interactive shape sent with "priority": "interactive", and how many clients saturate the server."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from benchlib import inputs
from benchlib.endpoint import Request
from benchlib.inputs import text
from server.asr.audio import SAMPLE_RATE

BODIES = 16  # distinct requests of each shape, taken in turn


@dataclass(frozen=True)
class OverloadWorkload:
    kind: str
    bulk: list[Request]
    interactive: list[Request]  # with "priority": "interactive"
    capacity_clients: int
    description: str


def interactive(requests: list[Request]) -> list[Request]:
    # A JSON body for embeddings and rerank, form fields for transcription: the same dict.
    return [replace(r, json={**r.json, "priority": "interactive"}) for r in requests]


def embedding_overload() -> OverloadWorkload:
    rng = random.Random(30)

    def words() -> int:  # half short, 40% mid-length, 10% long
        return rng.choice([rng.randint(4, 32)] * 5 + [rng.randint(32, 128)] * 4 + [rng.randint(128, 400)])

    bulk = [Request({"model": "bge-m3", "input": [text(rng, words()) for _ in range(38)]}, units=38)
            for _ in range(BODIES)]
    quick = [Request({"model": "bge-m3", "input": text(rng, rng.randint(4, 16))}) for _ in range(BODIES)]
    return OverloadWorkload("embedding", bulk, interactive(quick), 4,
                            "bulk: 38 texts a request (half 4-32 words, 40% 32-128, 10% 128-400); interactive: one "
                            "text of 4-16 words")


def reranker_overload() -> OverloadWorkload:
    rng = random.Random(31)

    def ranking(documents: int) -> Request:
        return inputs.ranking(rng, documents)

    return OverloadWorkload("reranker", [ranking(rng.randint(20, 40)) for _ in range(BODIES)],
                            interactive([ranking(rng.randint(2, 3)) for _ in range(BODIES)]), 4,
                            "bulk: a query with 20-40 documents of 5-60 words; interactive: 2-3 documents")


def asr_overload() -> OverloadWorkload:
    rng = random.Random(32)

    def clip(seconds: float, seed: int) -> Request:
        audio = inputs.speech_clip(seconds, seed)
        return Request({"model": "SenseVoiceSmall"}, inputs.wav_bytes(audio), len(audio) / SAMPLE_RATE)

    return OverloadWorkload("asr", [clip(rng.uniform(10, 20), 500 + i) for i in range(BODIES)],
                            interactive([clip(rng.uniform(2, 3), 600 + i) for i in range(BODIES)]), 8,
                            "bulk: a 10-20 s clip; interactive: a 2-3 s clip")


WORKLOADS = {"embedding": embedding_overload, "reranker": reranker_overload, "asr": asr_overload}
