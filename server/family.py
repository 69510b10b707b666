"""The contract every model family declares in its package (server/<family>/__init__.py) and the
app serves it by (server.runtime): typed end to end, so a reader or a type checker follows a
request from its route (``Services.lookup(FAMILY, name)``) to the family's service and on to the
batcher by jump-to-definition."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from server.config import Settings
from server.engine.batching import Batcher
from server.weights.store import ModelSpec

if TYPE_CHECKING:  # only named in signatures: importing them is the app's business
    import torch
    from fastapi import APIRouter


class Adapter(Protocol):
    """What the runtime needs of a loaded model; its batcher calls ``run_batch`` on one thread."""

    def warm_up(self) -> None: ...

    def run_batch(self, payloads: list[Any]) -> list[Any]: ...


A = TypeVar("A", bound=Adapter)
S = TypeVar("S")
# A path's own cap on the request body and the sentence that refuses a body over it (413).
BodyLimits = dict[str, tuple[int, str]]


def no_body_limits(settings: Settings) -> BodyLimits:
    return {}


@dataclass(frozen=True)
class Family(Generic[A, S]):
    """How one model family is served. Each callable imports its family's modules when called, so
    a server without ASR never pays for importing funasr (5-7 s)."""

    spec: ModelSpec  # served names, hub id, required files
    load: Callable[[Path, torch.device, torch.dtype], A]  # the adapter, loaded from a model directory
    serve: Callable[[A, Batcher[Any, Any], Settings], S]  # the service the family's routes call
    routes: Callable[[], APIRouter]  # the family's HTTP API, every dialect of it
    # Max padded cost of one forward pass, in the adapter's unit, for a device type ("cpu", "cuda").
    batch_budget: Callable[[Settings, str], int]
    tiny: Callable[[Path], Path]  # writes a tiny random-weight model directory there (tests, --demo)
    # Paths that take bodies larger than the JSON cap (--max-body-bytes): uploads.
    body_limits: Callable[[Settings], BodyLimits] = no_body_limits


@dataclass(frozen=True)
class Usage:
    """What one request fed its model and got back, in tokens (a text model's input tokens; for
    audio, the encoder's input frames). Counted in one place for every route
    (server.api.responses.answer), and told in each dialect's words by its renderer."""

    input_tokens: int
    output_tokens: int = 0


class Services(Protocol):
    """The served models, as the routes see them (server.runtime.Runtime)."""

    def lookup(self, family: Family[Any, S], name: str) -> S:
        """The family's service if it serves the model ``name``: 404 if not, 503 while loading or
        draining."""
        ...

    def serves(self, family: Family[Any, Any]) -> bool:
        """Whether the family is configured (served, or loading)."""
        ...

    def served_names(self) -> list[str]:
        """Every model name the server answers to."""
        ...
