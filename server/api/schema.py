"""Shapes shared by every endpoint: the error body and the model list (OpenAI's)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, StrictStr

# The scheduling extension every model route accepts (a JSON field, or a form field for audio).
PRIORITY_DESCRIPTION = (
    "Extension: interactive (a user waits: goes ahead of other work), normal, or background (bulk "
    "work: yields to the rest but always progresses). Requests of one priority share the model fairly."
)


def _valid_unicode(value: str) -> str:
    # JSON may carry lone UTF-16 surrogates ("\ud800"); they are not text, no tokenizer takes them,
    # and no JSON encoder can echo them back, so they are refused at the door.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone UTF-16 surrogate)") from None
    return value


Text = Annotated[StrictStr, AfterValidator(_valid_unicode)]


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


# The statuses every model route may answer besides 200, whatever the API shape.
ERROR_STATUSES = {
    400: "Invalid request.",
    401: "Missing or wrong API key.",
    404: "Unknown model.",
    413: "Request too large.",
    503: "Overloaded (with Retry-After): the queue is full, or the work queued would make it miss its deadline; "
         "loading; or shutting down.",
    504: "Timed out waiting for results.",
}


def error_responses(body: type[BaseModel], **descriptions: str) -> dict:
    """The OpenAPI ``responses`` of a route: every error status with its body; ``descriptions``
    (``s400="..."``) word a status for that API."""
    return {status: {"model": body, "description": descriptions.get(f"s{status}", text)}
            for status, text in ERROR_STATUSES.items()}


# Documented on every /v1 route so the OpenAPI schema states the error shape.
ERROR_RESPONSES = error_responses(ErrorResponse)
