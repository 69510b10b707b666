"""The classifier family's settings: ``--classifier-<field>``, ``INFERENCE_CLASSIFIER_<FIELD>``."""

from __future__ import annotations

from pydantic import Field

from server.config import FamilySettings


class ClassifierSettings(FamilySettings):
    model: str = Field("toy/length-classifier", description="The length classifier: a local directory, or none.")
    max_chars: int = Field(1000, ge=1, description="Longest text classified, in characters (400 past it).")
