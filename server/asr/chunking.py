"""OpenAI's ``chunking_strategy`` form field: ``auto``, or a ``server_vad`` object, sent as the
openai SDK sends it (one form part per key: ``chunking_strategy[type]``, ...) or as a JSON object
in the one field (as curl users write it)."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData

from server.asr.vad import AUTO, Chunking, server_vad
from server.errors import InvalidRequest

FIELD = "chunking_strategy"
DESCRIPTION = (
    "auto (the default: segments as long as --asr-max-segment-seconds allows, cut at pauses), or a server_vad "
    'object, {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 200}, '
    "sent as JSON here or as chunking_strategy[type], chunking_strategy[threshold], ... parts (the openai SDK): "
    "every silence of silence_duration_ms ends a segment, even in a short clip."
)


class ServerVad(BaseModel):
    """OpenAI's defaults where a key is left out."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["server_vad"]
    threshold: float = Field(0.5, ge=0, le=1)
    prefix_padding_ms: int = Field(300, ge=0, le=10_000)
    silence_duration_ms: int = Field(200, ge=0, le=10_000)


def chunking_of(form: FormData) -> Chunking:
    whole = form.get(FIELD)
    parts = {key[len(FIELD) + 1:-1]: value for key, value in form.multi_items()
             if key.startswith(f"{FIELD}[") and key.endswith("]")}
    if whole is not None and parts:
        raise _invalid(f"send {FIELD} as one field or as {FIELD}[...] parts, not both")
    if not parts:
        if whole is None or whole == "auto":
            return AUTO
        parts = _json_object(whole)
    try:
        vad = ServerVad.model_validate(parts)
    except ValidationError as err:
        problem = err.errors(include_url=False)[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise _invalid(f"{where}: {problem['msg']}" if where else problem["msg"]) from None
    return server_vad(vad.threshold, vad.prefix_padding_ms, vad.silence_duration_ms)


def _json_object(value: object) -> dict:
    try:
        parsed = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise _invalid('must be "auto" or a server_vad object')
    return parsed


def _invalid(why: str) -> InvalidRequest:
    return InvalidRequest(f"{FIELD}: {why}.", param=FIELD, code="invalid_value")
