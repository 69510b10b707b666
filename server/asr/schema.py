"""POST /v1/audio/transcriptions: OpenAI's multipart request fields, its JSON responses and the
server-sent events of ``stream=true``, as documented in the OpenAPI schema.

SenseVoice's own outputs ride along in verbose_json: each segment's detected `language` code,
`emotion` and audio `event` tags.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from server.api.schema import ErrorDetail

Language = Literal["auto", "zh", "en", "yue", "ja", "ko"]
ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
TimestampGranularity = Literal["segment", "word"]
# The formats a stream can carry: OpenAI streams transcript events for json and text only.
STREAMED_FORMATS = ("json", "text")

# OpenAI's verbose_json names the language in words.
LANGUAGE_NAMES = {"zh": "chinese", "en": "english", "yue": "cantonese", "ja": "japanese", "ko": "korean"}


class DurationUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float = Field(description="Seconds of audio decoded.")


class Transcription(BaseModel):
    text: str
    usage: DurationUsage


class TranscriptionSegment(BaseModel):
    id: int
    seek: int = Field(description="The segment's start in 10 ms frames (Whisper's mel frames).")
    start: float = Field(description="Seconds from the start of the audio.")
    end: float
    text: str = Field(description="Without SenseVoice's <|...|> tags.")
    tokens: list[int] = Field(description="The ids of the text's tokens as the model emitted them (tags excluded).")
    temperature: float = Field(description="Always 0.0: SenseVoice decodes greedily.")
    avg_logprob: float = Field(description="Mean log-probability of the tokens under the model's CTC posteriors, "
                                           "each at the frame that emitted it; 0.0 without tokens.")
    compression_ratio: float = Field(description="UTF-8 bytes of the text over its zlib-compressed bytes (Whisper's).")
    no_speech_prob: float = Field(description="The model's probability of <|nospeech|> on its language query frame.")
    language: str | None = Field(None, description="SenseVoice's detected language code (zh, en, yue, ja, ko).")
    emotion: str | None = Field(None, description="SenseVoice's emotion tag, e.g. NEUTRAL, HAPPY, SAD, ANGRY.")
    event: str | None = Field(None, description="SenseVoice's audio-event tag, e.g. Speech, BGM, Laughter.")


class TranscriptionWord(BaseModel):
    word: str
    start: float = Field(description="Seconds from the start of the audio: when the model emitted its first token.")
    end: float = Field(description="When its last token's run on the CTC path ended.")


class TranscriptionVerbose(BaseModel):
    task: Literal["transcribe"] = "transcribe"
    language: str = Field(description="Language of the transcript in words (OpenAI style), e.g. english; "
                                      "unknown when nothing was said and none was requested.")
    duration: float = Field(description="Seconds of audio decoded.")
    text: str
    segments: list[TranscriptionSegment]
    words: list[TranscriptionWord] | None = Field(None, description="With timestamp_granularities[]=word.")
    usage: DurationUsage


# ---- stream=true: one event per `data:` line ----------------------------------------------------------


class _Sent(BaseModel):
    # Fields with defaults (`type`) are always sent: the schema says they are required.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class TokenUsageDetails(_Sent):
    audio_tokens: int = Field(description="The audio's 60 ms encoder frames.")
    text_tokens: int = Field(description="The 4 query frames of each segment (language, emotion, event, text norm).")


class TokenUsage(_Sent):
    """OpenAI's token usage, the only kind its schema gives transcript.text.done."""

    type: Literal["tokens"] = "tokens"
    input_tokens: int = Field(description="Frames the encoder read: audio_tokens + text_tokens.")
    output_tokens: int = Field(description="Tokens the model emitted, tags included.")
    total_tokens: int
    input_token_details: TokenUsageDetails


class TranscriptTextDelta(_Sent):
    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str = Field(description="What the next segment adds to the text (\"\" for a segment without text).")


class TranscriptTextDone(_Sent):
    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str = Field(description="The whole text: the deltas joined.")
    usage: TokenUsage


class TranscriptStreamError(_Sent):
    """A failure after the stream started; the stream ends with it."""

    type: Literal["error"] = "error"
    error: ErrorDetail


def event_stream_schema() -> dict[str, Any]:
    """One server-sent event, as OpenAPI 3.2 describes an event stream's items: its ``data`` is JSON,
    one of the events above. Inline: a schema in a response cannot hold ``$defs`` of its own (a
    ``#/$defs`` reference would point into the document's root)."""
    events = TypeAdapter(Union[TranscriptTextDelta, TranscriptTextDone, TranscriptStreamError]).json_schema(
        mode="serialization")
    definitions = events.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        return [inline(value) for value in node] if isinstance(node, list) else node

    return {"type": "object", "required": ["data"], "properties": {
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": inline(events)},
    }}
