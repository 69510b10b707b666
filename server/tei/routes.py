"""TEI's GET /info and POST /tokenize. A TEI server serves one model; these describe and tokenize with
the embedding model when it is served, else the reranker (both are XLM-R with the same tokenizer)."""

from __future__ import annotations

from itertools import accumulate

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from server import __version__
from server.api.responses import json_response, runtime
from server.embeddings import SPEC as EMBEDDING
from server.errors import InvalidRequest, ModelNotFound
from server.models.device import resolve_dtype
from server.rerank import SPEC as RERANKER
from server.tei.schema import TEI_ERROR_RESPONSES, Info, SimpleToken, TokenizeRequest

router = APIRouter(tags=["tei"])


def text_model(request: Request):
    """(spec, service) of the model TEI's routes speak for: 404 if none is configured, 503 while loading."""
    rt = runtime(request)
    for spec in (EMBEDDING, RERANKER):
        if spec.kind in rt.configured:
            return spec, rt.lookup(spec.kind, spec.served_name)
    raise ModelNotFound(EMBEDDING.served_name, rt.served_names())


def simple_tokens(tokenizer, text: str, add_special_tokens: bool) -> list[dict]:
    """TEI's tokens: special ones by their token text, the others by the span of the input they cover,
    with UTF-8 byte offsets as TEI reports them (the tokenizer gives character offsets)."""
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                    return_special_tokens_mask=True)
    byte_at = [0, *accumulate(len(ch.encode("utf-8")) for ch in text)]
    pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    tokens = []
    for token_id, (start, stop), special, piece in zip(
            enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"], pieces):
        if special:
            tokens.append({"id": token_id, "text": piece, "special": True, "start": None, "stop": None})
        else:
            tokens.append({"id": token_id, "text": text[start:stop], "special": False,
                           "start": byte_at[start], "stop": byte_at[stop]})
    return tokens


@router.get("/info", response_model=Info, responses=TEI_ERROR_RESPONSES)
async def info(request: Request) -> Response:
    """What TEI's /info says about the model its routes serve (the embedding model when there is one)."""
    spec, service = text_model(request)
    settings = request.app.state.settings
    device = service.model.device
    if spec is EMBEDDING:
        model_type = {"embedding": {"pooling": "cls"}}
        max_input, max_client_batch = service.max_tokens, settings.max_inputs_per_request
    else:
        id2label = {str(k): v for k, v in service.model.model.config.id2label.items()}
        model_type = {"reranker": {"id2label": id2label, "label2id": {v: int(k) for k, v in id2label.items()}}}
        max_input, max_client_batch = service.max_length, settings.rerank_max_documents
    return await json_response({
        "model_id": spec.repo_id,
        "model_sha": None,
        "model_dtype": str(resolve_dtype(settings.dtype, device)).removeprefix("torch."),
        "served_model_name": spec.served_name,
        "model_type": model_type,
        "max_concurrent_requests": settings.max_queue,
        "max_input_length": max_input,
        "max_batch_tokens": settings.batch_tokens(device.type),
        "max_batch_requests": settings.max_batch_size,
        "max_client_batch_size": max_client_batch,
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
    _, service = text_model(request)
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    if not texts:
        raise InvalidRequest("`inputs` cannot be empty", param="inputs", code="empty")
    if body.prompt_name is not None:
        raise InvalidRequest("`prompt_name` is not supported: these models define no prompts.", param="prompt_name")
    settings = request.app.state.settings
    if len(texts) > settings.max_inputs_per_request:
        raise InvalidRequest(f"inputs has {len(texts)} items; at most {settings.max_inputs_per_request}.",
                             param="inputs")
    # As on the embedding routes, text far past what the model reads is refused before it is tokenized.
    max_chars = settings.embedding_max_tokens * service.model.max_piece_chars
    for i, text in enumerate(texts):
        if len(text) > max_chars:
            raise InvalidRequest(f"inputs[{i}] has {len(text)} characters; at most {max_chars}.", param="inputs")
    tokenizer = service.model.tokenizer
    tokens = await service.batcher.gate.run_preparation(
        lambda: [simple_tokens(tokenizer, t, body.add_special_tokens) for t in texts])
    return await json_response(tokens)
