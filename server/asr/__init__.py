"""SenseVoiceSmall, POST /v1/audio/transcriptions (OpenAI's multipart shape): any common audio
format, long audio cut at its pauses. The declaration the app serves it by; funasr is imported
only by the adapter, when the family is served."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from server.config import Settings
from server.engine.batching import Batcher
from server.family import BodyLimits, Family
from server.weights.store import ModelSpec
from server.asr.settings import AsrSettings

if TYPE_CHECKING:
    import torch
    from fastapi import APIRouter

    from server.asr.model import SenseVoice
    from server.asr.service import TranscriptionService

SPEC = ModelSpec(
    kind="asr",
    served_name="FunAudioLLM/SenseVoiceSmall",
    aliases=("SenseVoiceSmall", "iic/SenseVoiceSmall"),
    repo_id="FunAudioLLM/SenseVoiceSmall",
    required_files=("config.yaml", "model.pt", "am.mvn", "chn_jpn_yue_eng_ko_spectok.bpe.model"),
    download_size=940_000_000,  # approximate: model.pt 0.94 GB, the rest (tokenizer, examples) ~2 MB
)


def load(path: Path, device: torch.device, dtype: torch.dtype) -> SenseVoice:
    from server.asr.model import SenseVoice

    return SenseVoice(path, device, dtype)


def serve(model: SenseVoice, batcher: Batcher, own: AsrSettings, settings: Settings) -> TranscriptionService:
    from server.asr.service import TranscriptionService

    return TranscriptionService.from_settings(model, batcher, own, settings)


def routes() -> APIRouter:
    from server.asr.route import router

    return router


def body_limits(own: AsrSettings) -> BodyLimits:
    from server.asr.route import body_limits

    return body_limits(own.max_upload_bytes)


def tiny(target: Path) -> Path:
    from server.asr.tiny import build_tiny_sensevoice

    return build_tiny_sensevoice(target)


FAMILY: Family[SenseVoice, TranscriptionService, AsrSettings] = Family(
    spec=SPEC,
    settings=AsrSettings,
    load=load,
    serve=serve,
    routes=routes,
    # SenseVoice's cost is in 10 ms frames: the budget is padded audio seconds x 100.
    batch_budget=lambda own, settings, device_type: int(own.max_batch_seconds * 100),
    tiny=tiny,
    body_limits=body_limits,
)
