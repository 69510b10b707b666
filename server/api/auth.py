"""Bearer-key check. It runs in middleware on every path under a protected prefix (/v1/), so a new
route cannot skip it, and before the body is read, so an unauthenticated client costs no parsing."""

from __future__ import annotations

import hmac

from server.errors import Unauthorized


def key_matches(token: str, keys: list[str]) -> bool:
    # Compare against every key, always, so timing does not tell how many keys or which one matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token.encode(), key.encode())
    return matched


def check_authorization(header: str, keys: list[str]) -> None:
    """Raise Unauthorized unless ``header`` is ``Bearer <one of keys>``; no keys = open server."""
    if not keys:
        return
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing API key: send the header 'Authorization: Bearer <key>'.")
    if not key_matches(token.strip(), keys):
        raise Unauthorized("Invalid API key.")
