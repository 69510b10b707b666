"""The contract every model family declares in its package (server/<family>/__init__.py) and the
app serves it by (server.runtime)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.config import Settings
from server.models import store


@dataclass(frozen=True)
class Family:
    """How one model family is served, declared in its package (server/<family>/__init__.py). Code
    is named by module so that a server without ASR never pays for importing funasr (5-7 s)."""

    spec: store.ModelSpec  # served names, hub id, required files
    adapter: str  # "module:Class", constructed as Class(path, device, dtype)
    service: str  # "module:Class", built by Class.from_settings(model, batcher, settings)
    route: str  # module whose ``router`` serves the family's HTTP API
    # Max padded cost of one forward pass, in the adapter's unit, for a device type ("cpu", "cuda").
    batch_budget: Callable[[Settings, str], int]
    tiny: str  # "module:function" building a tiny random-weight model directory (tests, --demo)


def named(ref: str) -> Any:
    """The object a "module:name" reference names."""
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)
