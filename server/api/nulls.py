"""Request bodies where ``null`` means "left out", as Jina's, Cohere's and LangChain's clients send it
(``"top_n": null, "return_documents": null``), instead of a 400 for a field they did not mean to set."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


def _accepts_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_accepts_none(arg) for arg in typing.get_args(annotation))
    return False


def _null_allowed_in_schema(schema: dict[str, Any], model: type[BaseModel]) -> None:
    # The schema says what the server takes: a field that may be left out may also be null.
    for name, prop in schema.get("properties", {}).items():
        field = model.model_fields.get(name)
        if field is None or field.is_required() or _accepts_none(field.annotation) or "anyOf" in prop:
            continue
        described = {k: prop.pop(k) for k in ("title", "description", "default") if k in prop}
        schema["properties"][name] = {"anyOf": [dict(prop), {"type": "null"}], **described}


class NullMeansDefault(BaseModel):
    """A field sent as ``null`` takes its default, unless its type admits ``None`` itself (then null
    has the meaning that field documents, e.g. ``top_n: null`` = every document). A required field
    sent as null is still missing."""

    model_config = ConfigDict(json_schema_extra=_null_allowed_in_schema)

    @model_validator(mode="before")
    @classmethod
    def _null_is_left_out(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {k: v for k, v in data.items()
                if v is not None or k not in fields or _accepts_none(fields[k].annotation)}
