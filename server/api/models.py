"""GET /v1/models (OpenAI shape): every name this server answers to."""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.api.responses import runtime
from server.api.schema import ERROR_RESPONSES, ModelCard, ModelList

router = APIRouter()


@router.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES, tags=["models"])
async def list_models(request: Request) -> ModelList:
    cards = [
        ModelCard(id=name, created=served.created, owned_by=served.spec.repo_id.split("/")[0])
        for served in runtime(request).served.values()
        for name in served.spec.names
    ]
    return ModelList(data=cards)
