"""TEI's embedding routes on bge-m3, translated onto ``EmbeddingService.create``:

* ``POST /embed`` and ``POST /`` (TEI's alias, which ``huggingface_hub.InferenceClient(url)
  .feature_extraction`` and the LangChain and Haystack embedders built on it call):
  ``{inputs, truncate, normalize}`` in, ``[[float, ...], ...]`` out, one vector per input.
* ``POST /embed_sparse``: bge-m3's lexical weights as TEI's ``[[{index, value}, ...], ...]``, where
  ``index`` is the token id (ascending) and ``value`` its weight.

Token ids given as ``inputs`` are bge-m3 ids without ``<s>``/``</s>``, as on /v1/embeddings.
TEI's response headers carry the counts: ``x-compute-tokens`` (tokens fed to the model, as
``usage.prompt_tokens`` on /v1/embeddings) and ``x-compute-characters``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from starlette.responses import Response

from server.api.nulls import NullMeansDefault
from server.api.responses import answer, services
from server.api.schema import PRIORITY_DESCRIPTION, Text
from server.api.terms import request_terms
from server.embedding import FAMILY, SPEC
from server.embedding.render import encode_vector
from server.embedding.schema import EmbeddingRequest, TokenIds
from server.engine.fair_queue import Priority
from server.errors import InvalidRequest
from server.tei import compute_headers
from server.tei.schema import TEI_ERROR_RESPONSES, TruncationDirection

router = APIRouter()


class TeiEmbedRequest(NullMeansDefault):
    model_config = ConfigDict(extra="ignore")

    inputs: Text | list[Text] | TokenIds | list[TokenIds] = Field(
        description="A text, a list of texts, a list of token ids, or a list of token-id lists.")
    truncate: StrictBool = Field(False, description="Cut inputs over 8192 tokens instead of refusing them.")
    truncation_direction: TruncationDirection = Field("Right", description="Only Right (keep the start) is supported.")
    prompt_name: str | None = Field(None, description="Not supported: bge-m3 defines no prompts.")
    priority: Priority = Field("normal", description=PRIORITY_DESCRIPTION)


class TeiEmbedDenseRequest(TeiEmbedRequest):
    normalize: StrictBool = Field(True, description="false: the CLS vector before L2 normalization.")
    dimensions: StrictInt | None = Field(None, description="Accepted only when equal to the model's (1024).")


class SparseValue(BaseModel):
    index: int = Field(description="Token id.")
    value: float = Field(description="Its lexical weight.")


def to_service(body: TeiEmbedRequest, sparse: bool) -> EmbeddingRequest:
    if body.inputs == []:
        raise InvalidRequest("`inputs` cannot be empty", param="inputs", code="empty")
    if body.prompt_name is not None:
        raise InvalidRequest("`prompt_name` is not supported: bge-m3 defines no prompts.", param="prompt_name")
    if body.truncate and body.truncation_direction.lower() == "left":
        raise InvalidRequest("truncation_direction Left is not supported; use Right.", param="truncation_direction")
    dense = body if isinstance(body, TeiEmbedDenseRequest) else None
    return EmbeddingRequest(
        input=body.inputs, model=SPEC.served_name, truncate=body.truncate, return_sparse=sparse,
        normalize=dense.normalize if dense else True, dimensions=dense.dimensions if dense else None,
        priority=body.priority,
    )


async def _embed(body: TeiEmbedRequest, request: Request, sparse: bool) -> Response:
    service = services(request).lookup(FAMILY, SPEC.served_name)
    req = to_service(body, sparse)
    # TEI embeds token ids exactly as given.
    embedded = await service.create(req, request_terms(request, req.priority), is_gone=request.is_disconnected,
                                    ids_as_given=True)
    if sparse:
        vectors: list = [[{"index": token_id, "value": weight} for token_id, weight in sorted((r.sparse or {}).items())]
                         for r in embedded.results]
    else:
        vectors = [encode_vector(r.dense, "float") for r in embedded.results]
    inputs = [body.inputs] if isinstance(body.inputs, str) or isinstance(body.inputs[0], int) else body.inputs
    return await answer(request, FAMILY, embedded.usage, vectors,
                        compute_headers(embedded.usage, characters=sum(map(len, inputs))))


@router.post("/embed", response_model=list[list[float]], responses=TEI_ERROR_RESPONSES, tags=["tei"])
async def tei_embed(body: TeiEmbedDenseRequest, request: Request) -> Response:
    """TEI's embed: bge-m3's dense vectors, one per input."""
    return await _embed(body, request, sparse=False)


@router.post("/", response_model=list[list[float]], responses=TEI_ERROR_RESPONSES, tags=["tei"])
async def tei_root(body: TeiEmbedDenseRequest, request: Request) -> Response:
    """TEI's alias of /embed, where huggingface_hub's InferenceClient(url) posts feature extraction."""
    return await _embed(body, request, sparse=False)


@router.post("/embed_sparse", response_model=list[list[SparseValue]], responses=TEI_ERROR_RESPONSES, tags=["tei"])
async def tei_embed_sparse(body: TeiEmbedRequest, request: Request) -> Response:
    """bge-m3's lexical weights in TEI's sparse shape."""
    return await _embed(body, request, sparse=True)
