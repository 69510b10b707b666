"""The model families this server serves: one line each. Each family's package declares the rest
(served names, files, adapter, service, route, batch budget, tiny model) in its ``FAMILY``."""

from typing import Any

from server import asr, embedding, reranker
from server.family import Family
from server.weights.store import ModelSpec

FAMILIES: dict[str, Family[Any, Any]] = {f.spec.kind: f for f in (
    embedding.FAMILY,
    reranker.FAMILY,
    asr.FAMILY,
)}
SPECS: dict[str, ModelSpec] = {kind: family.spec for kind, family in FAMILIES.items()}
