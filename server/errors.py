"""One error hierarchy, one status table, one body shape, one handler.

Every error leaves the server as OpenAI's ``{"error": {"message", "type", "param", "code"}}``, except on
the paths of a dialect whose clients read another body: the app registers that dialect's body for
its paths (``install_error_handlers``; TEI's ``{"error", "error_type"}``, server/tei/errors.py), and
the handler picks the body by path. Internal faults are a 500 with a fixed message; the details go
to the log, never to the client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

# A dialect's error body from (message, status, code): registered for its paths.
DialectBody = Callable[[str, int, str | None], dict]


class StartupError(Exception):
    """Configuration or model files that keep the server from starting; the message is for the operator."""


class ApiError(Exception):
    """An error with a defined HTTP status; its message is safe to show the client."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.code
        self.headers = headers or {}


class InvalidRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(ApiError):
    status = 404
    code = "model_not_found"

    def __init__(self, model: str, served: list[str], elsewhere: str | None = None):
        """``served``: the names this endpoint serves; ``elsewhere``: the kind of model ``model``
        is, when another endpoint of this server serves it."""
        if elsewhere:
            message = (f"The model '{model}' is served here, but not by this endpoint (it is the {elsewhere} "
                       f"model); this endpoint serves: {', '.join(served) or 'none'}.")
        else:
            message = f"The model '{model}' does not exist or is not served here. Served: {', '.join(served) or 'none'}."
        super().__init__(message, param="model")


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class Overloaded(ApiError):
    """Queue full, or the work queued would make this request miss its deadline: the client should
    retry later (or on another replica); carries Retry-After."""

    status = 503
    type = "server_error"
    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class DeadlineExceeded(Overloaded):
    """Accepted, then found unable to finish by its deadline (other work took longer than forecast,
    or interactive work went ahead): failed at once rather than at the deadline; carries Retry-After."""

    code = "deadline_exceeded"


class NotReady(ApiError):
    status = 503
    type = "server_error"
    code = "not_ready"


class ShuttingDown(ApiError):
    status = 503
    type = "server_error"
    code = "shutting_down"


class OutOfMemory(ApiError):
    """A single item does not fit in accelerator memory even alone."""

    status = 503
    type = "server_error"
    code = "out_of_memory"


class NonFiniteOutput(ApiError):
    """The model computed NaN or infinity for this item: in float16, an overflow. A 200 would hand
    the caller ``null`` vectors, a score of 0.0 or an empty transcript as if they were results."""

    status = 500
    type = "server_error"
    code = "non_finite_output"


class ClientDisconnected(ApiError):
    """The caller went away; nobody reads this response (499 as nginx logs it)."""

    status = 499
    code = "client_closed_request"


class Timeout(ApiError):
    status = 504
    type = "server_error"
    code = "timeout"


# Pydantic tags the members of a union in the error location ("str", "list[int]"); a client knows
# only the field, so those tags are left out of `param`.
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict"}


# pydantic's errors for a value outside a fixed set of choices (a Literal, an Enum).
_CHOICE_ERRORS = frozenset({"literal_error", "enum"})


def _from_validation(errors: Sequence[Any]) -> InvalidRequest:
    if not errors:
        return InvalidRequest("Invalid request.")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return InvalidRequest("The request body is not valid JSON.", code="invalid_json")
    loc = [str(p) for p in first.get("loc", ())]
    if loc and loc[0] in ("body", "query", "header", "path"):  # where it came from, not a field
        loc = loc[1:]
    loc = loc[:1] + [p for p in loc[1:] if p not in _UNION_TAGS and "[" not in p]
    param = ".".join(loc) or None
    if param and sum(1 for e in errors if e.get("loc", ())[1:2] == first.get("loc", ())[1:2]) > 1:
        message = f"'{param}' does not have an accepted type or value."
    else:
        reason = str(first.get("msg", "invalid value")).removeprefix("Value error, ")  # a validator's own words
        message = f"'{param}': {reason}" if param else reason
        given = first.get("input")
        if first.get("type") in _CHOICE_ERRORS and isinstance(given, (str, int, float)):
            message += f", not {repr(given)[:64]}"  # the value sent: a client's typo is then plain to see
        message += "."
    return InvalidRequest(message, param=param, code="invalid_value")



def _not_json(request: Request, errors: Sequence[Any]) -> InvalidRequest | None:
    """A JSON route sent another Content-Type (curl -d sends application/x-www-form-urlencoded):
    FastAPI then validates the raw bytes, and its "Input should be a valid dictionary" hides why."""
    if not errors or tuple(errors[0].get("loc", ())) != ("body",):
        return None  # the body was parsed, or the route takes a form: a field of it is wrong
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return None
    sent = f"Content-Type: {media_type}" if media_type else "no Content-Type"
    return InvalidRequest(
        f"The request body must be JSON, sent with the header `Content-Type: application/json` (this request "
        f"has {sent}).",
        code="invalid_content_type",
    )


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _dialect_body(scope: Scope | None) -> DialectBody | None:
    if scope is None or "app" not in scope:
        return None
    bodies: Mapping[str, DialectBody] = getattr(scope["app"].state, "error_bodies", {})
    return bodies.get(scope.get("path", ""))


def error_response(err: ApiError, scope: Scope | None = None) -> JSONResponse:
    """OpenAI's body; on a path a dialect registered (``install_error_handlers``), that dialect's."""
    dialect = _dialect_body(scope)
    if dialect is not None:
        body = dialect(err.message, err.status, err.code)
    else:
        body = error_body(err.message, err.type, err.param, err.code)
    return JSONResponse(body, status_code=err.status, headers=err.headers)


# Errors raised by the framework itself (unknown path, wrong method, body cap while streaming).
_FRAMEWORK_CODES = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed", 408: "body_timeout",
                    413: "payload_too_large"}


def install_error_handlers(app: FastAPI, dialect_bodies: Mapping[str, DialectBody] | None = None) -> None:
    """``dialect_bodies``: the error body of each path whose clients read another dialect's."""
    app.state.error_bodies = dict(dialect_bodies or {})

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return error_response(err, request.scope)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(_not_json(request, err.errors()) or _from_validation(err.errors()), request.scope)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        err_type = "invalid_request_error" if err.status_code < 500 else "server_error"
        code = _FRAMEWORK_CODES.get(err.status_code)
        dialect = _dialect_body(request.scope)
        if dialect is not None:
            body = dialect(str(err.detail), err.status_code, code)
        else:
            body = error_body(str(err.detail), err_type, None, code)
        return JSONResponse(body, status_code=err.status_code, headers=getattr(err, "headers", None))


def internal_error_response(scope: Scope | None = None) -> JSONResponse:
    """The fixed 500: details go to the log (server/api/middleware.py), never to the client."""
    dialect = _dialect_body(scope)
    if dialect is not None:
        return JSONResponse(dialect("Internal server error.", 500, "internal_error"), 500)
    return JSONResponse(error_body("Internal server error.", "server_error", None, "internal_error"), 500)
