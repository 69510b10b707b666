"""TEI's GET /info and POST /tokenize. A TEI server serves one model; these describe and tokenize with
the embedding model when it is served, else the reranker (both are XLM-R with the same tokenizer)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Protocol

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from server import __version__, embeddings, rerank
from server.api.responses import json_response
from server.errors import InvalidRequest, ModelNotFound
from server.models.device import resolve_dtype
from server.models.xlmr_common import TextModelDescription, Token
from server.runtime import runtime
from server.tei.schema import TEI_ERROR_RESPONSES, Info, SimpleToken, TokenizeRequest

router = APIRouter(tags=["tei"])


class TextService(Protocol):
    """What these routes ask of a text model's service."""

    def describe(self) -> TextModelDescription: ...

    async def tokenize(self, texts: list[str], add_special_tokens: bool) -> list[list[Token]]: ...


def text_model(request: Request) -> tuple[str, str, TextService]:
    """(hub id, served name, service) of the model TEI's routes speak for, the embedding model
    when it is served, else the reranker (a TEI server serves one): 404 if neither is configured,
    503 while it loads."""
    rt = runtime(request)
    service: TextService
    if embeddings.SPEC.kind in rt.configured:
        spec, service = embeddings.SPEC, rt.lookup(embeddings.FAMILY, embeddings.SPEC.served_name)
    elif rerank.SPEC.kind in rt.configured:
        spec, service = rerank.SPEC, rt.lookup(rerank.FAMILY, rerank.SPEC.served_name)
    else:
        raise ModelNotFound(embeddings.SPEC.served_name, rt.served_names())
    return spec.repo_id, spec.served_name, service


def model_type(described: TextModelDescription) -> dict:
    """TEI's model_type: {"embedding": {"pooling"}} or {"reranker": {"id2label", "label2id"}}."""
    if described.task == "embedding":
        return {"embedding": {"pooling": described.pooling}}
    id2label = {str(k): v for k, v in (described.labels or {}).items()}
    return {"reranker": {"id2label": id2label, "label2id": {v: int(k) for k, v in id2label.items()}}}


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
