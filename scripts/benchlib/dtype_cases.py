"""The float32-against-bfloat16 workloads (benchlib/dtype_compare.py), per model kind: seeded items
for the adapter, the batches the server's batcher would form of them, their real work, and how
closely a reduced dtype's outputs follow float32's. The GPU check runs them too."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchlib.repo import SPEECH
from server.config import Settings

WORDS = ("the giant panda is a bear native to south central china it eats bamboo and sleeps a lot "
         "rivers mountains 熊猫 竹子 世界 你好 today we test speech models search engine query document "
         "answer question vector dense sparse token embedding score rank language").split()


def batches_of(items: list, cost: Callable[[Any], int], budget: int, max_size: int,
               min_efficiency: float = 0.85) -> list[list]:
    """Sorted by cost, grown while rows x longest row fits the budget, the size limit and the
    padding-efficiency floor: the shape of the batches the server's batcher forms under load."""
    items = sorted(items, key=cost)
    out, current = [], []
    for item in items:
        trial = current + [item]
        padded = len(trial) * cost(item)
        real = sum(cost(i) for i in trial)
        if current and (padded > budget or len(trial) > max_size or real / padded < min_efficiency):
            out.append(current)
            trial = [item]
        current = trial
    return out + ([current] if current else [])


def length_mix(rng: random.Random, n: int, longest: int) -> list[int]:
    """Half short (8-48), a third medium (48-256), the rest long (256-longest) token counts."""
    short = lambda: rng.randint(8, 48)  # noqa: E731
    medium = lambda: rng.randint(48, 256)  # noqa: E731
    long = lambda: rng.randint(256, longest)  # noqa: E731
    return [rng.choice([short] * 6 + [medium] * 4 + [long] * 2)() for _ in range(n)]


def token_ids(tokenize, rng: random.Random, length: int) -> list[int]:
    words = " ".join(rng.choice(WORDS) for _ in range(length))
    return tokenize(words)[:length]


@dataclass
class Case:
    unit: str
    items: list
    units: Callable[[list], float]  # real work in a batch, in `unit`
    cost: Callable[[Any], int]
    budget: int
    compare: Callable[[list, list], dict]  # fidelity of bf16 outputs against fp32 outputs
    outputs: dict = field(default_factory=dict)


def embedding_case(model, n: int, settings: Settings) -> Case:
    from server.embedding.model import EmbedItem

    rng = random.Random(0)
    tok = lambda text: model.tokenize([text])[0][1:-1]  # noqa: E731
    items = [EmbedItem(model.wrap_ids(token_ids(tok, rng, k - 2)), sparse=True, colbert=True)
             for k in length_mix(rng, n, 512)]

    def compare(ref: list, got: list) -> dict:
        dense = [float(a.dense @ b.dense) for a, b in zip(ref, got)]
        colbert = [float((a.colbert * b.colbert).sum(1).min()) for a, b in zip(ref, got)]
        sparse = [max((abs(a.sparse.get(k, 0.0) - b.sparse.get(k, 0.0)) for k in {*a.sparse, *b.sparse}), default=0.0)
                  for a, b in zip(ref, got)]
        return {"dense cos min": min(dense), "dense cos mean": statistics.fmean(dense),
                "colbert cos min": min(colbert), "sparse max |diff|": max(sparse)}

    return Case("tokens", items, lambda b: sum(len(i.input_ids) for i in b), model.cost,
                settings.batch_tokens("cpu"), compare)


def reranker_case(model, n: int, settings: Settings) -> Case:
    rng = random.Random(1)
    tok = lambda text: model.tokenize([text])[0]  # noqa: E731
    queries = [token_ids(tok, rng, rng.randint(6, 24)) for _ in range(max(1, n // 8))]
    room = settings.reranker_max_length - model.pair_overhead
    pairs = [model.pair(q, token_ids(tok, rng, min(k, room - len(q))))
             for q in queries for k in length_mix(rng, 8, 500)]
    groups = [list(range(i, i + 8)) for i in range(0, len(pairs), 8)]

    def compare(ref: list, got: list) -> dict:
        sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        # Document pairs of one query that float32 and bfloat16 order alike (pairs float32 ties excluded).
        concordant = [(ref[i] - ref[j]) * (got[i] - got[j]) > 0
                      for g in groups for i in g for j in g if i < j and ref[i] != ref[j]]
        return {"logit max |diff|": max(abs(a - b) for a, b in zip(ref, got)),
                "score max |diff|": max(abs(sig(a) - sig(b)) for a, b in zip(ref, got)),
                "logit spread": max(ref) - min(ref),
                "pairs same order": statistics.fmean(concordant)}

    return Case("tokens", pairs, lambda b: sum(len(p) for p in b), model.cost, settings.batch_tokens("cpu"), compare)


def asr_case(model, n: int, settings: Settings) -> Case:
    from server.asr.audio import decode_audio
    from server.asr.model import SAMPLE_RATE, AsrItem

    speech = decode_audio(SPEECH.read_bytes(), max_seconds=60)
    rng = np.random.default_rng(2)
    tiled = np.tile(speech, 4)
    items = []
    for i in range(n):
        seconds = float(rng.uniform(3, 20))
        start = int(rng.integers(0, len(speech)))
        items.append(AsrItem(tiled[start:start + int(seconds * SAMPLE_RATE)].copy(),
                             language=["auto", "en", "zh"][i % 3]))

    def compare(ref: list, got: list) -> dict:
        from difflib import SequenceMatcher

        return {"text equal": statistics.fmean(a.text == b.text for a, b in zip(ref, got)),
                "text+tags equal": statistics.fmean(a.raw == b.raw for a, b in zip(ref, got)),
                "text similarity": statistics.fmean(SequenceMatcher(None, a.text, b.text).ratio()
                                                    for a, b in zip(ref, got))}

    return Case("audio s", items, lambda b: sum(len(i.audio) for i in b) / SAMPLE_RATE, model.cost,
                int(settings.asr_max_batch_seconds * 100), compare)


CASES = {"embedding": embedding_case, "reranker": reranker_case, "asr": asr_case}
