"""POST /v1/classify: a text or texts, each one's score per label."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from classifier import FAMILY
from server.api.responses import answer, services
from server.api.schema import ERROR_RESPONSES
from server.api.terms import request_terms
from server.engine.fair_queue import Priority


class ClassifyRequest(BaseModel):
    model: str
    input: str | list[str]
    priority: Priority = "normal"


class ClassifyResponse(BaseModel):
    model: str
    data: list[dict[str, float]]


router = APIRouter()


@router.post("/v1/classify", response_model=ClassifyResponse, responses=ERROR_RESPONSES, tags=["classify"])
async def classify(body: ClassifyRequest, request: Request) -> Response:
    """Each text's score per label."""
    service = services(request).lookup(FAMILY, body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    done = await service.classify(texts, request_terms(request, body.priority), is_gone=request.is_disconnected)
    return await answer(request, FAMILY, done.usage, {"model": body.model, "data": done.labels})
