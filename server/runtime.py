"""The served models of one app: load them (off the event loop), look them up by name, drain them.

Every model family is built the same way (``build``): resolve its files, load the adapter, warm it
up, put a batcher in front of it and make the service the routes call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from fastapi import Request

from server.config import Settings
from server.engine.batching import Batcher, model_thread
from server.engine.cpu_gate import CpuGate
from server.errors import ModelNotFound, NotReady, ShuttingDown
from server.family import Family, S
from server.metrics import Metrics
from server.weights import store
from server.compute.device import resolve_device, resolve_dtype

log = logging.getLogger(__name__)


@dataclass
class Served:
    spec: store.ModelSpec
    path: Path
    service: object  # the family's own service type (Runtime.lookup restores it)
    batcher: Batcher
    created: int


def build(family: Family[Any, S, Any], path: Path, settings: Settings, device: torch.device, dtype: torch.dtype,
          metrics: Metrics, worker: ThreadPoolExecutor, gate: CpuGate) -> tuple[S, Batcher]:
    """Load the adapter, warm it up, put a batcher in front of it, and make the routes' service.
    Runs on ``worker``, the thread that will run the model's forward passes (server.engine.torch_threads)."""
    spec, own = family.spec, family.settings_of(settings)
    model = family.load(path, device, dtype)
    model.warm_up()
    batcher = Batcher(
        name=spec.served_name,
        run_batch=model.run_batch,
        max_batch_cost=family.batch_budget(own, settings, device.type),
        max_batch_size=settings.max_batch_size,
        max_queue=settings.max_queue,
        lookahead=settings.batch_lookahead,
        min_padding_efficiency=settings.batch_min_padding_efficiency,
        on_batch=metrics.batch_observer(spec.served_name),
        executor=worker,
        gate=gate,
        fair=settings.batch_scheduling == "fair",
        max_pass_seconds=settings.max_pass_seconds,
        deadline_scheduling=settings.deadline_scheduling,
        on_request=metrics.request_observer(spec.served_name),
    )
    return family.serve(model, batcher, own, settings), batcher


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics, families: dict[str, Family[Any, Any, Any]]):
        self.settings = settings
        self.metrics = metrics
        self.families = families
        self.served: dict[str, Served] = {}
        self.closing = False
        self.ready = False
        self._drain: asyncio.Future | None = None  # the batchers' drain, once started
        self.configured = [
            kind for kind, family in families.items() if not store.is_off(family.settings_of(settings).model)
        ]

    async def load_all(self) -> None:
        """Load every configured model, one after the other (they share the device)."""
        device = resolve_device(self.settings.device)
        dtype = resolve_dtype(self.settings.dtype, device)
        if device.type == "cpu" and self.settings.cpu_threads:
            torch.set_num_threads(self.settings.cpu_threads)
        log.info("device %s, dtype %s", device, str(dtype).removeprefix("torch."))
        # One gate for every model: on a CPU, passes of different models would share the cores too.
        gate = CpuGate(enabled=device.type == "cpu")
        for kind in self.configured:
            family = self.families[kind]
            spec = family.spec
            value = family.settings_of(self.settings).model
            started = time.perf_counter()
            path = await asyncio.to_thread(store.resolve, spec, value, self.settings.models_dir, self.settings.offline)
            assert path is not None  # only models that are not switched off are configured
            worker = model_thread(spec.served_name)
            try:
                service, batcher = await asyncio.get_running_loop().run_in_executor(
                    worker, build, family, path, self.settings, device, dtype, self.metrics, worker, gate)
            except BaseException:
                worker.shutdown(wait=False)
                raise
            batcher.start()
            self.metrics.track(spec.served_name, batcher)
            self.served[kind] = Served(spec, path, service, batcher, int(time.time()))
            log.info("loaded %s from %s in %.1f s", spec.served_name, path, time.perf_counter() - started)
        self.ready = True

    def lookup(self, family: Family[Any, S, Any], name: str) -> S:
        """The family's service for a requested model name: 404 if not served, 503 if still loading
        or draining."""
        kind, spec = family.spec.kind, family.spec
        if kind not in self.configured or name not in spec.names:
            elsewhere = next((k for k in self.configured if name in self.families[k].spec.names), None)
            here = list(spec.names) if kind in self.configured else []
            raise ModelNotFound(name, here if elsewhere else self.served_names(), elsewhere)
        if self.closing:
            raise ShuttingDown("The server is shutting down; retry on another replica.")
        if kind not in self.served:
            raise NotReady(f"The model '{name}' is still loading; retry shortly.", code="model_loading")
        # Served by kind, each of its own family's service type: the one place the type is restored.
        return cast(S, self.served[kind].service)

    def serves(self, family: Family[Any, Any, Any]) -> bool:
        return family.spec.kind in self.configured

    def served_names(self) -> list[str]:
        return [name for kind in self.configured for name in self.families[kind].spec.names]

    async def close(self, timeout: float | None = None) -> None:
        """Drain: refuse new work, finish what every queue holds. Once: a second call (the
        application's shutdown, after the server's own started the drain) waits for the first."""
        self.closing = True
        self.ready = False
        if self._drain is None:
            self._drain = asyncio.ensure_future(
                asyncio.gather(*(s.batcher.close(timeout) for s in self.served.values())))
        await asyncio.shield(self._drain)



def runtime(request: Request) -> Runtime:
    """The app's runtime, for the app's own routes (probes, the model list); a family's routes see
    only its ``Services`` face (server.api.responses.services)."""
    return request.app.state.runtime
