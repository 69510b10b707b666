"""The contract every model family declares in its package (server/<family>/__init__.py) and the
app serves it by (server.runtime): typed end to end, so a reader or a type checker follows a
request from its route (``Services.lookup(FAMILY, name)``) to the family's service and on to the
batcher by jump-to-definition."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from server.config import FamilySettings, Settings
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
C = TypeVar("C", bound=FamilySettings)
# A path's own cap on the request body and the sentence that refuses a body over it (413).
BodyLimits = dict[str, tuple[int, str]]


def no_body_limits(own: FamilySettings) -> BodyLimits:
    return {}


def batch_tokens(own: FamilySettings, settings: Settings, device_type: str) -> int:
    """A text family's batch budget: the server's padded tokens per pass (--max-batch-tokens)."""
    return settings.batch_tokens(device_type)


@dataclass(frozen=True)
class Family(Generic[A, S, C]):
    """How one model family is served. Its name (``spec.kind``) is its folder's, its settings'
    prefix and its ``download`` choice. Each callable imports its family's modules when called, so
    a server without ASR never pays for importing funasr (5-7 s)."""

    spec: ModelSpec  # its name, served names, hub id, required files
    settings: type[C]  # its own settings: the model to serve and its limits
    load: Callable[[Path, torch.device, torch.dtype], A]  # the adapter, loaded from a model directory
    # The service the family's routes call, from the adapter, its batcher and the settings.
    serve: Callable[[A, Batcher[Any, Any], C, Settings], S]
    routes: Callable[[], APIRouter]  # the family's HTTP API, every dialect of it
    tiny: Callable[[Path], Path]  # writes a tiny random-weight model directory there (tests, --demo)
    # Max padded cost of one forward pass, in the adapter's unit, for a device type ("cpu", "cuda").
    batch_budget: Callable[[C, Settings, str], int] = batch_tokens
    # Paths that take bodies larger than the JSON cap (--max-body-bytes): uploads.
    body_limits: Callable[[C], BodyLimits] = no_body_limits

    @property
    def name(self) -> str:
        return self.spec.kind

    def settings_of(self, settings: Settings) -> C:
        """This family's own settings, out of the server's."""
        return self.settings.model_validate(settings.family_values(self.name))


@dataclass(frozen=True)
class Usage:
    """What one request fed its model and got back, in tokens (a text model's input tokens; for
    audio, the encoder's input frames). Counted in one place for every route
    (server.api.responses.answer), and told in each dialect's words by its renderer."""

    input_tokens: int
    output_tokens: int = 0


class Services(Protocol):
    """The served models, as the routes see them (server.runtime.Runtime)."""

    def lookup(self, family: Family[Any, S, Any], name: str) -> S:
        """The family's service if it serves the model ``name``: 404 if not, 503 while loading or
        draining."""
        ...

    def serves(self, family: Family[Any, Any, Any]) -> bool:
        """Whether the family is configured (served, or loading)."""
        ...

    def served_names(self) -> list[str]:
        """Every model name the server answers to."""
        ...
