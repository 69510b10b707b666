"""The ``route`` label of a request in /metrics: the template of the route its path names.

The router records the route it ran in the scope, but not always: a 401 is answered by the key
check before routing, and Starlette's plain routes (the /docs pages, /openapi.json) do not record
themselves. Those are matched here against every route's template. A path no route has is
"unmatched": one label, so requests for random URLs cannot grow the metric without bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from starlette.routing import Mount, compile_path
from starlette.types import Scope

UNMATCHED = "unmatched"


def _templates(routes: Iterable, prefix: str = "") -> Iterator[str]:
    for route in routes:
        if hasattr(route, "effective_route_contexts"):  # FastAPI 0.16x: an included router, as one entry
            for context in route.effective_route_contexts():
                yield prefix + context.path
        elif isinstance(route, Mount):
            yield from _templates(route.routes, prefix + route.path)
        elif hasattr(route, "path"):
            yield prefix + route.path


class RouteLabels:
    """Built on the first request, when every route is in place; routes are not added later."""

    def __init__(self) -> None:
        self._patterns: list[tuple[re.Pattern, str]] | None = None

    def __call__(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None and hasattr(route, "path"):
            return route.path
        if self._patterns is None:
            app = scope.get("app")  # set by the application before its middleware runs
            if app is None:
                return UNMATCHED
            self._patterns = [(compile_path(t)[0], t) for t in _templates(app.routes)]
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        return next((template for pattern, template in self._patterns if pattern.match(path)), UNMATCHED)
