"""``--demo``: each family's tiny random-weight model, in the real on-disk layout, in place of its real one.

A newcomer can try every endpoint without downloading weights; the tests load the same tiny models
through the real loading path. Their outputs mean nothing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from server.config import Settings
from server.families import FAMILIES
from server.weights.store import is_off

log = logging.getLogger(__name__)


def demo_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "inference-server" / "demo"


def build_demo_models(root: Path, kinds: list[str]) -> dict[str, Path]:
    """Build (once; later calls reuse the cache) the tiny model of each kind under ``root``."""
    return {kind: FAMILIES[kind].tiny(root / kind) for kind in kinds}


def demo_settings(settings: Settings) -> Settings:
    """The same settings with every served model replaced by its tiny stand-in."""
    kinds = [k for k, family in FAMILIES.items() if not is_off(family.settings_of(settings).model)]
    log.info("demo: preparing the tiny models in %s (built on the first start, a few seconds; reused after)",
             demo_cache_dir())
    paths = build_demo_models(demo_cache_dir(), kinds)
    log.warning(
        "DEMO MODE: serving tiny models with RANDOM WEIGHTS from %s. Their embeddings, scores and "
        "transcripts are MEANINGLESS; use this only to try the API.", demo_cache_dir()
    )
    return settings.model_copy(update={f"{kind}_model": str(path) for kind, path in paths.items()})
