"""Shapes shared by every endpoint: the error body and the model list (OpenAI's)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# Documented on every /v1 route so the OpenAPI schema states the error shape.
ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "Invalid request.",
        401: "Missing or wrong API key.",
        404: "Unknown model.",
        413: "Request too large.",
        503: "Overloaded (with Retry-After), loading, or shutting down.",
        504: "Timed out waiting for results.",
    }.items()
}
