"""The model families this server serves: one line each. Each family's package declares the rest
(its name, settings, served names, files, adapter, service, routes, batch budget, tiny model) in
its ``FAMILY``; the settings class, the CLI's flags and download choices, the start check, the
loading, readiness, metrics and the API are all read from this registry when they are built."""

from functools import cache
from typing import Any

from server import asr, embedding, reranker
from server.config import Settings, with_families
from server.family import Family

FAMILIES: dict[str, Family[Any, Any, Any]] = {f.name: f for f in (
    embedding.FAMILY,
    reranker.FAMILY,
    asr.FAMILY,
)}


def settings_class() -> type[Settings]:
    """The settings of a server serving the registered families: its own, and each family's."""
    return _joined(tuple((name, family.settings) for name, family in FAMILIES.items()))



def make_settings(**values: Any) -> Settings:
    """Settings from these values, then the environment, then the defaults (as the CLI builds them)."""
    return settings_class()(**values)


@cache  # one class per registry: pydantic builds its validation once, not per call
def _joined(families: tuple[tuple[str, Any], ...]) -> type[Settings]:
    return with_families(dict(families))
