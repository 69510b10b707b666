"""Tiny random-weight models of the three real architectures, in the real on-disk layouts.

The tests load them through the server's real loading path, and `serve --demo` serves them so a
newcomer can try every endpoint without downloading weights. Their outputs mean nothing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from server.config import Settings
from server.models.store import NONE

log = logging.getLogger(__name__)

# Named sizes of the builders' architectures (random weights), for benchmarks and soak runs.
XLMR_SIZES = {
    "tiny": {},
    "small": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "full": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
SENSEVOICE_SIZES = {
    "tiny": {},
    "small": dict(output_size=256, attention_heads=4, linear_units=1024, num_blocks=6, tp_blocks=2),
    "base": dict(output_size=512, attention_heads=4, linear_units=2048, num_blocks=16, tp_blocks=4),
    "full": dict(output_size=512, attention_heads=4, linear_units=2048, num_blocks=50, tp_blocks=20),
}


def demo_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "inference-server" / "demo"


def build_demo_models(root: Path, kinds: list[str]) -> dict[str, Path]:
    """Build (once; later calls reuse the cache) the tiny model of each kind under ``root``."""
    from server.tiny_models.sensevoice import build_tiny_sensevoice
    from server.tiny_models.xlmr import build_tiny_bge_m3, build_tiny_reranker

    builders = {"embedding": build_tiny_bge_m3, "reranker": build_tiny_reranker, "asr": build_tiny_sensevoice}
    return {kind: builders[kind](root / kind) for kind in kinds}


def demo_settings(settings: Settings) -> Settings:
    """The same settings with every served model replaced by its tiny stand-in."""
    kinds = [k for k in ("embedding", "reranker", "asr") if getattr(settings, f"{k}_model").lower() != NONE]
    paths = build_demo_models(demo_cache_dir(), kinds)
    log.warning(
        "DEMO MODE: serving tiny models with RANDOM WEIGHTS from %s. Their embeddings, scores and "
        "transcripts are MEANINGLESS; use this only to try the API.", demo_cache_dir()
    )
    return settings.model_copy(update={f"{kind}_model": str(path) for kind, path in paths.items()})
