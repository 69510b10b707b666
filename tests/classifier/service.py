"""Checks the texts, queues them on the family's batcher, and names each one's scores."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from classifier.model import LengthClassifier
from server.engine.batching import Batcher, gather_results
from server.engine.deadlines import Terms
from server.errors import InvalidRequest
from server.family import Usage


@dataclass(frozen=True)
class Classified:
    labels: list[dict[str, float]]  # each text's score per label
    usage: Usage  # characters read, as its input tokens


class ClassifierService:
    def __init__(self, model: LengthClassifier, batcher: Batcher, *, max_chars: int):
        self.model = model
        self.batcher = batcher
        self.max_chars = max_chars

    async def classify(self, texts: list[str], terms: Terms,
                       is_gone: Callable[[], Awaitable[bool]] | None = None) -> Classified:
        for i, text in enumerate(texts):
            if len(text) > self.max_chars:
                raise InvalidRequest(f"input[{i}] has {len(text)} characters; at most {self.max_chars}.",
                                     param="input")
        with self.batcher.admission(terms) as admission:
            futures = admission.submit([(text, 1) for text in texts])
        scores = await gather_results(futures, terms, is_gone)
        return Classified([dict(zip(self.model.labels, row)) for row in scores], Usage(sum(map(len, texts))))
