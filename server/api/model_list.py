"""GET /v1/models (OpenAI shape): every name this server answers to; GET /v1/models/{model}: one of them."""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.runtime import runtime
from server.api.schema import ERROR_RESPONSES, ModelCard, ModelList
from server.errors import ModelNotFound

router = APIRouter()


def _cards(request: Request) -> list[ModelCard]:
    return [
        ModelCard(id=name, created=served.created, owned_by=served.spec.repo_id.split("/")[0])
        for served in runtime(request).served.values()
        for name in served.spec.names
    ]


@router.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES, tags=["models"])
async def list_models(request: Request) -> ModelList:
    return ModelList(data=_cards(request))


# `:path`, because served names hold a slash (BAAI/bge-m3); the openai SDK sends them as they are.
@router.get("/v1/models/{model:path}", response_model=ModelCard, responses=ERROR_RESPONSES, tags=["models"])
async def retrieve_model(model: str, request: Request) -> ModelCard:
    """OpenAI's model object for a served name; 404 (model_not_found) for any other."""
    cards = _cards(request)
    card = next((c for c in cards if c.id == model), None)
    if card is None:
        raise ModelNotFound(model, [c.id for c in cards])
    return card
