"""A fourth model family declared entirely inside the tests, shaped as a family folder under
server/ is: a text-length classifier behind POST /v1/classify, with its own settings, tiny model,
service and route. tests/test_fourth_family.py registers it with the registry's one line
(server.families.FAMILIES) and serves it through the real app."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from classifier.settings import ClassifierSettings
from server.config import Settings
from server.engine.batching import Batcher
from server.family import Family
from server.weights.store import ModelSpec

if TYPE_CHECKING:
    import torch
    from fastapi import APIRouter

    from classifier.model import LengthClassifier
    from classifier.service import ClassifierService

SPEC = ModelSpec(
    kind="classifier",
    served_name="toy/length-classifier",
    aliases=("length-classifier",),
    repo_id="toy/length-classifier",
    required_files=("config.json", "weights.pt"),
)


def load(path: Path, device: torch.device, dtype: torch.dtype) -> LengthClassifier:
    from classifier.model import LengthClassifier

    return LengthClassifier(path, device, dtype)


def serve(model: LengthClassifier, batcher: Batcher, own: ClassifierSettings, settings: Settings) -> ClassifierService:
    from classifier.service import ClassifierService

    return ClassifierService(model, batcher, max_chars=own.max_chars)


def routes() -> APIRouter:
    from classifier.route import router

    return router


def tiny(target: Path) -> Path:
    from classifier.model import build_tiny

    return build_tiny(target)


FAMILY: Family[LengthClassifier, ClassifierService, ClassifierSettings] = Family(
    spec=SPEC,
    settings=ClassifierSettings,
    load=load,
    serve=serve,
    routes=routes,
    tiny=tiny,
)
