"""bge-m3 embeddings, POST /v1/embeddings (OpenAI shape): dense vectors, and bge-m3's sparse and
ColBERT outputs as an extension. The declaration the app serves it by."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from server.config import Settings
from server.engine.batching import Batcher
from server.family import Family
from server.weights.store import ModelSpec
from server.embedding.settings import EmbeddingSettings

if TYPE_CHECKING:
    import torch
    from fastapi import APIRouter

    from server.embedding.model import BgeM3
    from server.embedding.service import EmbeddingService

SPEC = ModelSpec(
    kind="embedding",
    served_name="bge-m3",
    aliases=("BAAI/bge-m3",),
    repo_id="BAAI/bge-m3",
    required_files=(
        "config.json",
        "model.safetensors|pytorch_model.bin",
        "tokenizer.json|sentencepiece.bpe.model",
        "colbert_linear.pt",
        "sparse_linear.pt",
    ),
    download_size=2_300_000_000,  # approximate: pytorch_model.bin 2.27 GB, tokenizer and heads ~25 MB
)


def load(path: Path, device: torch.device, dtype: torch.dtype) -> BgeM3:
    from server.embedding.model import BgeM3

    return BgeM3(path, device, dtype)


def serve(model: BgeM3, batcher: Batcher, own: EmbeddingSettings, settings: Settings) -> EmbeddingService:
    from server.embedding.service import EmbeddingService

    return EmbeddingService.from_settings(model, batcher, own, settings)


def routes() -> APIRouter:
    from server.embedding.route import router

    return router


def tiny(target: Path) -> Path:
    from server.compute.tiny_xlmr import build_tiny_bge_m3

    return build_tiny_bge_m3(target)


FAMILY: Family[BgeM3, EmbeddingService, EmbeddingSettings] = Family(
    spec=SPEC,
    settings=EmbeddingSettings,
    load=load,
    serve=serve,
    routes=routes,
    tiny=tiny,
)
