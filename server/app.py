"""create_app(settings): the FastAPI app, its routes, and its lifespan (load models, drain on stop)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from server import __version__, embedding, reranker, tei
from server.api import health, model_list
from server.api.docs import declare_bearer_auth, offline_app
from server.api.middleware import ApiKeyGuard, BodyLimit, RequestContext, SlowBody
from server.config import Settings
from server.engine.memory import limit_onednn_cache, trim_periodically
from server.runtime import Runtime
from server.errors import StartupError, install_error_handlers
from server.families import FAMILIES
from server.metrics import Metrics
from server.tei import routes as tei_routes
from server.tei.errors import tei_error_body

log = logging.getLogger(__name__)


def create_app(settings: Settings, on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    """Build the app. Models load in the background after start-up, so /health answers at once and
    /ready turns 200 when they are in. A model that cannot load calls ``on_fatal`` with the reason."""
    metrics = Metrics()
    runtime = Runtime(settings, metrics, FAMILIES)

    async def load() -> None:
        try:
            await runtime.load_all()
        except StartupError as err:
            _fail(str(err))
        except Exception as err:
            log.exception("loading models failed")
            _fail(f"loading models failed: {type(err).__name__}: {err}")

    def _fail(reason: str) -> None:
        log.error("%s", reason)
        if on_fatal is not None:
            on_fatal(reason)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not settings.api_keys:
            log.warning("no API keys configured: every API route is open to anyone who can reach this port")
        if not runtime.configured:
            log.warning("every model is set to none: this server serves no endpoint, only its probes and /metrics")
        limit_onednn_cache()  # before the first forward pass: oneDNN reads it once (server/engine/memory.py)
        loader = asyncio.create_task(load(), name="load-models")
        trimmer = asyncio.create_task(trim_periodically(), name="malloc-trim")
        try:
            yield
        finally:
            loader.cancel()
            trimmer.cancel()
            await runtime.close(timeout=settings.shutdown_timeout)

    app = offline_app(
        title="inference-server",
        version=__version__,
        summary="OpenAI/SiliconFlow-compatible embeddings, rerank and transcription on your own hardware.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.metrics = metrics
    install_error_handlers(app, {path: tei_error_body for path in tei.PATHS})
    for module in (health, model_list):
        app.include_router(module.router)
    # TEI's /info and /tokenize speak for the embedding model when it is served, else the reranker.
    app.include_router(tei_routes.routes((embedding.FAMILY, reranker.FAMILY)))
    for family in FAMILIES.values():
        app.include_router(family.routes())
    app.include_router(health.metrics_router)
    # Added last = outermost: every response, a 401 or 413 included, carries X-Request-ID and is timed;
    # the key is checked before the body cap, and both before anything reads the body.
    app.add_middleware(SlowBody, timeout=settings.body_read_timeout)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes,
                       per_path={path: limit for family in FAMILIES.values()
                                 for path, limit in family.body_limits(family.settings_of(settings)).items()})
    # The key guards /v1 and /v2 (OpenAI, SiliconFlow, Jina, Cohere) and TEI's routes, which sit at the root.
    protected = ("/v1/", "/v2/", "/metrics") if settings.protect_metrics else ("/v1/", "/v2/")
    app.add_middleware(ApiKeyGuard, keys=settings.api_keys, prefixes=protected, paths=tei.PATHS)
    declare_bearer_auth(app, lambda path: path.startswith(protected) or path in tei.PATHS)
    if settings.cors_allow_origins:
        # Outside the key check, so a preflight is answered here and a refusal still carries the CORS
        # headers a browser needs to show it; inside RequestContext, so both are counted and traced.
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_allow_origins, allow_methods=["*"],
                           allow_headers=["*"], max_age=600,
                           expose_headers=["X-Request-ID", "Retry-After", "x-compute-tokens", "x-compute-characters"])
    app.add_middleware(RequestContext, metrics=metrics)
    return app
