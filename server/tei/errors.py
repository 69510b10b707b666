"""TEI's error body, which its clients read (registered for server.tei.PATHS by the app)."""

from __future__ import annotations


def tei_error_body(message: str, status: int, code: str | None) -> dict:
    """TEI's body, {"error", "error_type"}, with TEI's names for what went wrong; the status stays ours."""
    if code in ("empty", "overloaded"):
        error_type = code.capitalize()
    elif code == "deadline_exceeded":
        error_type = "Overloaded"
    elif status == 503:
        error_type = "Unhealthy"  # loading or shutting down
    elif status >= 500 or status == 499:
        error_type = "Backend"
    elif status == 401:
        error_type = "Unauthorized"  # TEI's own 401 has no body; its clients read the status
    else:
        error_type = "Validation"
    return {"error": message, "error_type": error_type}
