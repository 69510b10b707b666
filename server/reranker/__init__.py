"""bge-reranker-v2-m3, POST /v1/rerank (SiliconFlow shape): long documents scored by their best
window. The declaration the app serves it by."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from server.config import Settings
from server.engine.batching import Batcher
from server.family import Family
from server.weights.store import ModelSpec
from server.reranker.settings import RerankerSettings

if TYPE_CHECKING:
    import torch
    from fastapi import APIRouter

    from server.reranker.model import BgeReranker
    from server.reranker.service import RerankService

SPEC = ModelSpec(
    kind="reranker",
    served_name="BAAI/bge-reranker-v2-m3",
    aliases=("bge-reranker-v2-m3",),
    repo_id="BAAI/bge-reranker-v2-m3",
    required_files=("config.json", "model.safetensors|pytorch_model.bin", "tokenizer.json|sentencepiece.bpe.model"),
    download_size=2_300_000_000,  # approximate: model.safetensors 2.27 GB, tokenizer ~22 MB
)


def load(path: Path, device: torch.device, dtype: torch.dtype) -> BgeReranker:
    from server.reranker.model import BgeReranker

    return BgeReranker(path, device, dtype)


def serve(model: BgeReranker, batcher: Batcher, own: RerankerSettings, settings: Settings) -> RerankService:
    from server.reranker.service import RerankService

    return RerankService.from_settings(model, batcher, own, settings)


def routes() -> APIRouter:
    from server.reranker.route import router

    return router


def tiny(target: Path) -> Path:
    from server.compute.tiny_xlmr import build_tiny_reranker

    return build_tiny_reranker(target)


FAMILY: Family[BgeReranker, RerankService, RerankerSettings] = Family(
    spec=SPEC,
    settings=RerankerSettings,
    load=load,
    serve=serve,
    routes=routes,
    tiny=tiny,
)
