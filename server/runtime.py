"""The served models of one app: load them (off the event loop), look them up by name, drain them.

Each model family has one builder: resolve its files, load the adapter, warm it up, put a batcher in
front of it and return the service the routes call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from server.batching import Batcher
from server.config import Settings
from server.errors import ModelNotFound, NotReady, ShuttingDown
from server.metrics import Metrics
from server.models import store
from server.models.device import resolve_device, resolve_dtype

log = logging.getLogger(__name__)


@dataclass
class Served:
    spec: store.ModelSpec
    path: Path
    service: Any
    batcher: Batcher
    created: int


def _build_embedding(path: Path, settings: Settings, device: torch.device, dtype: torch.dtype,
                     metrics: Metrics) -> tuple[Any, Batcher]:
    from server.embeddings import EmbeddingService
    from server.models.bge_m3 import BgeM3

    model = BgeM3(path, device, dtype)
    model.warm_up()
    batcher = _batcher(store.EMBEDDING, model.run_batch, settings, metrics)
    service = EmbeddingService(
        model, batcher,
        max_tokens=settings.embedding_max_tokens,
        max_inputs=settings.max_inputs_per_request,
        timeout=settings.request_timeout,
    )
    return service, batcher


def _build_reranker(path: Path, settings: Settings, device: torch.device, dtype: torch.dtype,
                    metrics: Metrics) -> tuple[Any, Batcher]:
    from server.models.reranker import BgeReranker
    from server.rerank import RerankService

    model = BgeReranker(path, device, dtype)
    model.warm_up()
    batcher = _batcher(store.RERANKER, model.run_batch, settings, metrics)
    service = RerankService(
        model, batcher,
        max_length=settings.reranker_max_length,
        max_documents=settings.rerank_max_documents,
        max_tokens=settings.rerank_max_tokens,
        timeout=settings.request_timeout,
    )
    return service, batcher


def _build_asr(path: Path, settings: Settings, device: torch.device, dtype: torch.dtype,
               metrics: Metrics) -> tuple[Any, Batcher]:
    from server.models.sensevoice import SenseVoice
    from server.transcription import TranscriptionService

    model = SenseVoice(path, device, dtype)
    model.warm_up()
    # Cost is in 10 ms frames, so the budget is padded audio seconds x 100.
    batcher = _batcher(store.ASR, model.run_batch, settings, metrics,
                       max_batch_cost=int(settings.asr_max_batch_seconds * 100))
    service = TranscriptionService(
        model, batcher,
        max_seconds=settings.asr_max_audio_seconds,
        max_segment_s=settings.asr_max_segment_seconds,
        timeout=settings.request_timeout,
    )
    return service, batcher


def _batcher(spec: store.ModelSpec, run_batch: Callable, settings: Settings, metrics: Metrics,
             max_batch_cost: int | None = None) -> Batcher:
    return Batcher(
        name=spec.served_name,
        run_batch=run_batch,
        max_batch_cost=max_batch_cost or settings.max_batch_tokens,
        max_batch_size=settings.max_batch_size,
        max_queue=settings.max_queue,
        lookahead=settings.batch_lookahead,
        on_batch=metrics.batch_observer(spec.served_name),
    )


BUILDERS: dict[str, Callable[..., tuple[Any, Batcher]]] = {
    "embedding": _build_embedding,
    "reranker": _build_reranker,
    "asr": _build_asr,
}


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.served: dict[str, Served] = {}
        self.closing = False
        self.ready = False
        self.configured = [
            kind for kind in BUILDERS if getattr(settings, f"{kind}_model").strip().lower() != store.NONE
        ]

    async def load_all(self) -> None:
        """Load every configured model, one after the other (they share the device)."""
        device = resolve_device(self.settings.device)
        dtype = resolve_dtype(self.settings.dtype, device)
        if device.type == "cpu" and self.settings.cpu_threads:
            torch.set_num_threads(self.settings.cpu_threads)
        log.info("device %s, dtype %s", device, str(dtype).removeprefix("torch."))
        for kind in self.configured:
            spec = store.SPECS[kind]
            value = getattr(self.settings, f"{kind}_model")
            started = time.perf_counter()
            path = await asyncio.to_thread(store.resolve, spec, value, self.settings.models_dir, self.settings.offline)
            service, batcher = await asyncio.to_thread(BUILDERS[kind], path, self.settings, device, dtype, self.metrics)
            batcher.start()
            self.metrics.track(spec.served_name, batcher)
            self.served[kind] = Served(spec, path, service, batcher, int(time.time()))
            log.info("loaded %s from %s in %.1f s", spec.served_name, path, time.perf_counter() - started)
        self.ready = True

    def lookup(self, kind: str, name: str) -> Any:
        """The service for a requested model name: 404 if not served, 503 if still loading or draining."""
        spec = store.SPECS[kind]
        if kind not in self.configured or name not in spec.names:
            raise ModelNotFound(name, self.served_names())
        if self.closing:
            raise ShuttingDown("The server is shutting down; retry on another replica.")
        if kind not in self.served:
            raise NotReady(f"The model '{name}' is still loading; retry shortly.", code="model_loading")
        return self.served[kind].service

    def served_names(self) -> list[str]:
        return [name for kind in self.configured for name in store.SPECS[kind].names]

    async def close(self, timeout: float | None = None) -> None:
        """Drain: refuse new work, finish what every queue holds."""
        self.closing = True
        self.ready = False
        await asyncio.gather(*(s.batcher.close(timeout) for s in self.served.values()))

