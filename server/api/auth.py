"""Bearer-key check. It runs in middleware on every path under a protected prefix (/v1/), so a new
route cannot skip it, and before the body is read, so an unauthenticated client costs no parsing."""

from __future__ import annotations

import hmac

from server.errors import Unauthorized


def matching_key(token: str, keys: list[str]) -> int | None:
    """The index of the key ``token`` is, if any."""
    # Compare against every key, always, so timing does not tell how many keys or which one matched.
    matched = None
    for index, key in enumerate(keys):
        if hmac.compare_digest(token.encode(), key.encode()):
            matched = index
    return matched


def authorized_tenant(header: str, keys: list[str]) -> str | None:
    """The tenant ``header``'s key belongs to, ``key-N`` for the N-th configured key (the key itself
    never leaves here); raise Unauthorized unless it is ``Bearer <one of keys>``. No keys = open
    server: no tenants, None."""
    if not keys:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing API key: send the header 'Authorization: Bearer <key>'.")
    index = matching_key(token.strip(), keys)
    if index is None:
        raise Unauthorized("Invalid API key.")
    return f"key-{index + 1}"
