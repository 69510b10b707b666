"""POST /v1/audio/transcriptions: OpenAI's multipart request fields and its JSON responses.

SenseVoice's own outputs ride along in verbose_json: each segment's detected `language` code,
`emotion` and audio `event` tags.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Language = Literal["auto", "zh", "en", "yue", "ja", "ko"]
ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]

# OpenAI's verbose_json names the language in words.
LANGUAGE_NAMES = {"zh": "chinese", "en": "english", "yue": "cantonese", "ja": "japanese", "ko": "korean"}


class Transcription(BaseModel):
    text: str


class TranscriptionSegment(BaseModel):
    id: int
    start: float = Field(description="Seconds from the start of the audio.")
    end: float
    text: str = Field(description="Without SenseVoice's <|...|> tags.")
    language: str | None = Field(None, description="SenseVoice's detected language code (zh, en, yue, ja, ko).")
    emotion: str | None = Field(None, description="SenseVoice's emotion tag, e.g. NEUTRAL, HAPPY, SAD, ANGRY.")
    event: str | None = Field(None, description="SenseVoice's audio-event tag, e.g. Speech, BGM, Laughter.")


class TranscriptionVerbose(BaseModel):
    task: Literal["transcribe"] = "transcribe"
    language: str = Field(description="Language of the transcript in words (OpenAI style), e.g. english.")
    duration: float = Field(description="Seconds of audio decoded.")
    text: str
    segments: list[TranscriptionSegment]
