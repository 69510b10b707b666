"""Bearer-key check for every /v1 route (attached to the router, so a new route cannot skip it)."""

from __future__ import annotations

import hmac

from fastapi import Request

from server.errors import Unauthorized


def key_matches(token: str, keys: list[str]) -> bool:
    # Compare against every key, always, so timing does not tell how many keys or which one matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token.encode(), key.encode())
    return matched


async def require_api_key(request: Request) -> None:
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing API key: send the header 'Authorization: Bearer <key>'.")
    if not key_matches(token.strip(), keys):
        raise Unauthorized("Invalid API key.")
