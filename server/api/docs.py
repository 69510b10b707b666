"""The API's own documentation: /docs (Swagger UI) and /redoc served from assets that ship in the
``fastapi-offline`` package, so they work air-gapped, and an OpenAPI document that declares the
Bearer key, so the docs page's "Authorize" button lets it call the protected routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

BEARER = "bearerAuth"

# Swagger UI's default validator badge fetches validator.swagger.io; off, so the page stays offline.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None, "persistAuthorization": True}


def offline_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app whose /docs and /redoc load their scripts and styles from this server."""
    return FastAPIOffline(swagger_ui_parameters=SWAGGER_UI_PARAMETERS, **kwargs)


def declare_bearer_auth(app: FastAPI, protects: Callable[[str], bool]) -> None:
    """Add the Bearer scheme to the OpenAPI document and require it on each path ``protects`` (the
    same rule the key check applies), so the document says which routes need the key."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = app.openapi_schema
        if schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER] = {
                "type": "http", "scheme": "bearer",
                "description": "One of the server's API keys (--api-key); any value when it has none.",
            }
            for path, operations in schema.get("paths", {}).items():
                if protects(path):
                    for operation in operations.values():
                        operation["security"] = [{BEARER: []}]
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
