"""TEI's GET /info and POST /tokenize. A TEI server serves one model; these describe and tokenize with
the first of the text families the app hands them that is served (the embedding model, else the
reranker: both are XLM-R with the same tokenizer), through its service's ``describe()`` and
``tokenize()``."""

from __future__ import annotations

from dataclasses import asdict
from collections.abc import Sequence
from typing import Any, Protocol

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from server import __version__
from server.api.responses import json_response, services
from server.errors import InvalidRequest, ModelNotFound
from server.compute.device import resolve_dtype
from server.compute.xlmr_common import TextModelDescription, Token
from server.family import Family
from server.tei.schema import TEI_ERROR_RESPONSES, Info, SimpleToken, TokenizeRequest

class TextService(Protocol):
    """What these routes ask of a text model's service."""

    def describe(self) -> TextModelDescription: ...

    async def tokenize(self, texts: list[str], add_special_tokens: bool) -> list[list[Token]]: ...


def model_type(described: TextModelDescription) -> dict:
    """TEI's model_type: {"embedding": {"pooling"}} or {"reranker": {"id2label", "label2id"}}."""
    if described.task == "embedding":
        return {"embedding": {"pooling": described.pooling}}
    id2label = {str(k): v for k, v in (described.labels or {}).items()}
    return {"reranker": {"id2label": id2label, "label2id": {v: int(k) for k, v in id2label.items()}}}


def routes(text_families: Sequence[Family[Any, Any, Any]]) -> APIRouter:
    """/info and /tokenize, speaking for the first of ``text_families`` that is served; each family's
    service must be a ``TextService``."""
    router = APIRouter(tags=["tei"])

    def text_model(request: Request) -> tuple[str, str, TextService]:
        """(hub id, served name, service) of the model these routes speak for: 404 if none is
        configured, 503 while it loads."""
        served = services(request)
        for family in text_families:
            if served.serves(family):
                spec = family.spec
                service: TextService = served.lookup(family, spec.served_name)
                return spec.repo_id, spec.served_name, service
        raise ModelNotFound(text_families[0].spec.served_name, served.served_names())

    @router.get("/info", response_model=Info, responses=TEI_ERROR_RESPONSES)
    async def info(request: Request) -> Response:
        """What TEI's /info says about the model its routes serve (the embedding model when there is one)."""
        repo_id, served_name, service = text_model(request)
        settings = request.app.state.settings
        described = service.describe()
        return await json_response({
            "model_id": repo_id,
            "model_sha": None,
            "model_dtype": str(resolve_dtype(settings.dtype, described.device)).removeprefix("torch."),
            "served_model_name": served_name,
            "model_type": model_type(described),
            "max_concurrent_requests": settings.max_queue,
            "max_input_length": described.max_input_tokens,
            "max_batch_tokens": settings.batch_tokens(described.device.type),
            "max_batch_requests": settings.max_batch_size,
            "max_client_batch_size": described.max_inputs_per_request,
            "auto_truncate": False,
            # Tokenizing runs in the thread pool; this many can run at once.
            "tokenization_workers": int(anyio.to_thread.current_default_thread_limiter().total_tokens),
            "version": __version__,
            "sha": None,
            "docker_label": None,
        })


    @router.post("/tokenize", response_model=list[list[SimpleToken]], responses=TEI_ERROR_RESPONSES)
    async def tokenize(body: TokenizeRequest, request: Request) -> Response:
        """The model's tokens for each input, as TEI's /tokenize lists them."""
        _, _, service = text_model(request)
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        if not texts:
            raise InvalidRequest("`inputs` cannot be empty", param="inputs", code="empty")
        if body.prompt_name is not None:
            raise InvalidRequest("`prompt_name` is not supported: these models define no prompts.", param="prompt_name")
        settings = request.app.state.settings
        if len(texts) > settings.max_inputs_per_request:
            raise InvalidRequest(f"inputs has {len(texts)} items; at most {settings.max_inputs_per_request}.",
                                 param="inputs")
        tokens = await service.tokenize(texts, body.add_special_tokens)
        return await json_response([[asdict(token) for token in text] for text in tokens])

    return router
