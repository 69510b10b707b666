"""create_app(settings): the FastAPI app, its routes, and its lifespan (load models, drain on stop)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from server import __version__
from server.api import embeddings, health, models, rerank, transcriptions
from server.api.auth import require_api_key
from server.api.middleware import BodyLimit, RequestContext
from server.config import Settings
from server.errors import StartupError, install_error_handlers
from server.metrics import Metrics
from server.runtime import Runtime

log = logging.getLogger(__name__)


def create_app(settings: Settings, on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    """Build the app. Models load in the background after start-up, so /health answers at once and
    /ready turns 200 when they are in. A model that cannot load calls ``on_fatal`` with the reason."""
    metrics = Metrics()
    runtime = Runtime(settings, metrics)

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
            log.warning("no API keys configured: every /v1 route is open to anyone who can reach this port")
        loader = asyncio.create_task(load(), name="load-models")
        try:
            yield
        finally:
            loader.cancel()
            await runtime.close(timeout=settings.shutdown_timeout)

    app = FastAPI(
        title="inference-server",
        version=__version__,
        summary="OpenAI/SiliconFlow-compatible embeddings, rerank and transcription on your own hardware.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.metrics = metrics
    install_error_handlers(app)
    v1 = [Depends(require_api_key)]
    app.include_router(health.router)
    app.include_router(health.metrics_router, dependencies=v1 if settings.protect_metrics else [])
    app.include_router(models.router, dependencies=v1)
    app.include_router(embeddings.router, dependencies=v1)
    app.include_router(rerank.router, dependencies=v1)
    app.include_router(transcriptions.router, dependencies=v1)
    # Added last = outermost: every response, a 413 included, carries X-Request-ID and is timed.
    upload_cap = settings.asr_max_upload_bytes + transcriptions.MULTIPART_OVERHEAD
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, per_path={transcriptions.PATH: upload_cap})
    app.add_middleware(RequestContext, metrics=metrics)
    return app
