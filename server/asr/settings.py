"""The asr family's settings: ``--asr-<field>``, ``INFERENCE_ASR_<FIELD>``."""

from __future__ import annotations

from pydantic import Field, model_validator

from server.config import FamilySettings


class AsrSettings(FamilySettings):
    model: str = Field(
        "FunAudioLLM/SenseVoiceSmall", description="SenseVoiceSmall: a local directory, a hub id, or none."
    )
    max_upload_bytes: int = Field(
        50 * 1024 * 1024, ge=1024, description="Largest audio upload, in bytes (413 past it, checked while it streams)."
    )
    max_audio_seconds: float = Field(3600.0, gt=0, description="Longest audio accepted, in decoded seconds.")
    max_decoding: int = Field(
        0, ge=0, description="Uploads prepared (decoded, checked for speech) at once (0 = twice the CPU cores); "
        "others wait by priority, up to 64 per slot, past that 503 + Retry-After."
    )
    max_audio_held_seconds: float = Field(
        14400.0, gt=0, description="Decoded audio the uploads being prepared may hold in memory together, in "
        "seconds (64 KB each); past it, 503 + Retry-After. At least --asr-max-audio-seconds.",
    )
    max_segment_seconds: float = Field(
        30.0, gt=1, le=120, description="Longest piece long audio is cut into at speech pauses."
    )
    max_batch_seconds: float = Field(
        240.0, gt=0, description="Audio seconds per SenseVoice forward pass (rows x longest row)."
    )

    @model_validator(mode="after")
    def _held_fits_the_longest(self) -> AsrSettings:
        if self.max_audio_held_seconds < self.max_audio_seconds:
            raise ValueError("--asr-max-audio-held-seconds must be at least --asr-max-audio-seconds, or the longest "
                             "upload accepted could never be prepared")
        return self
