"""A request's terms with the batcher, read at the edge: its priority (from the body, as each API
dialect spells it), its deadline and its tenant.

* Deadline: ``--request-timeout`` after it arrived (``ARRIVED``), or sooner if the request asks: the header
  ``X-Request-Timeout: <seconds>``, or ``X-Stainless-Read-Timeout``, which the openai SDK sends
  with its own timeout (an answer after the client has given up is compute spent for nobody).
* Tenant: the API key it authenticated with, as ``key-N`` (its place in the configured keys; the
  key itself never leaves the guard), so each key shares the model equally. An open server has no
  tenants: each request shares as its own.
"""

from __future__ import annotations

import math

from fastapi import Request

from server.engine.deadlines import Terms
from server.errors import InvalidRequest

TIMEOUT_HEADER = "x-request-timeout"
SDK_TIMEOUT_HEADER = "x-stainless-read-timeout"
TENANT = "tenant"  # the key in the ASGI scope's state where the API-key guard names the tenant
# The key in the ASGI scope's state where the outermost middleware notes when the request came in
# (time.monotonic()): its deadline counts from there, not from after its body was read (a 50 MB
# upload over a slow link, or a burst of uploads parsed in turn, takes seconds of it).
ARRIVED = "arrived"


def _seconds(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def request_terms(request: Request, priority: str) -> Terms:
    timeout = request.app.state.settings.request_timeout
    asked = request.headers.get(TIMEOUT_HEADER)
    if asked is not None:
        seconds = _seconds(asked)
        if seconds is None:
            raise InvalidRequest(f"X-Request-Timeout must be a positive number of seconds, not {asked[:32]!r}.",
                                 param="X-Request-Timeout", code="invalid_timeout")
        timeout = min(timeout, seconds)
    sdk = _seconds(request.headers.get(SDK_TIMEOUT_HEADER, ""))  # not ours to refuse: ignored if odd
    if sdk is not None:
        timeout = min(timeout, sdk)
    state = request.scope.get("state", {})
    return Terms.within(timeout, priority, state.get(TENANT), state.get(ARRIVED))
