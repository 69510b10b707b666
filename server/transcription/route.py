"""POST /v1/audio/transcriptions (OpenAI's multipart shape)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import PlainTextResponse
from starlette.responses import Response

from server.api.responses import json_response, runtime
from server.api.schema import ERROR_RESPONSES, PRIORITY_DESCRIPTION, Text
from server.engine.fair_queue import Priority
from server.errors import InvalidRequest, PayloadTooLarge
from server.transcription import SPEC
from server.transcription.schema import (
    LANGUAGE_NAMES,
    Language,
    ResponseFormat,
    Transcription,
    TranscriptionVerbose,
)
from server.transcription.service import Transcript
from server.transcription.subtitles import to_srt, to_vtt

PATH = "/v1/audio/transcriptions"
# Room for the multipart boundaries and the small form fields around the file.
MULTIPART_OVERHEAD = 64 * 1024

router = APIRouter()


_TEXT = {"schema": {"type": "string"}}
_SUCCESS = {
    "description": "json: {text}; verbose_json: with segments; text and srt: text/plain; vtt: text/vtt.",
    "content": {
        "application/json": {"schema": {"anyOf": [
            {"$ref": "#/components/schemas/Transcription"}, {"$ref": "#/components/schemas/TranscriptionVerbose"},
        ]}},
        "text/plain": _TEXT,
        "text/vtt": _TEXT,
    },
}


@router.post(PATH, response_model=Transcription | TranscriptionVerbose, responses={200: _SUCCESS, **ERROR_RESPONSES},
             tags=["audio"])
async def create_transcription(
    request: Request,
    file: Annotated[UploadFile, File(description="The audio file: wav, flac, mp3, m4a, ogg, opus, webm, ...")],
    model: Annotated[Text, Form(description="FunAudioLLM/SenseVoiceSmall, SenseVoiceSmall or iic/SenseVoiceSmall.")],
    language: Annotated[Language, Form(description="Spoken language, or auto to detect it.")] = "auto",
    response_format: Annotated[ResponseFormat, Form()] = "json",
    prompt: Annotated[str | None, Form(description="Accepted and ignored (SenseVoice takes no prompt).")] = None,
    temperature: Annotated[float | None, Form(description="Accepted and ignored (greedy CTC decoding).")] = None,
    timestamp_granularities: Annotated[
        list[Literal["segment"]] | None, Form(alias="timestamp_granularities[]", description="segment only.")
    ] = None,
    use_itn: Annotated[bool, Form(description="Extension: punctuation and inverse text normalization.")] = True,
    priority: Annotated[Priority, Form(description=PRIORITY_DESCRIPTION)] = "normal",
) -> Response:
    service = runtime(request).lookup(SPEC.kind, model)
    data = await file.read()
    limit = request.app.state.settings.asr_max_upload_bytes
    if len(data) > limit:
        raise PayloadTooLarge(f"The audio file is larger than {limit} bytes.")
    if not data:
        raise InvalidRequest("The audio file is empty.", param="file", code="invalid_audio")
    transcript = await service.transcribe(data, language=language, use_itn=use_itn, priority=priority,
                                          is_gone=request.is_disconnected)
    return await render(transcript, response_format)


async def render(transcript: Transcript, response_format: str) -> Response:
    if response_format == "text":
        return PlainTextResponse(transcript.text)
    if response_format == "srt":
        return PlainTextResponse(to_srt(transcript.segments))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(transcript.segments), media_type="text/vtt")
    if response_format == "verbose_json":
        return await json_response({
            "task": "transcribe",
            "language": LANGUAGE_NAMES.get(transcript.language or "", transcript.language or ""),
            "duration": transcript.duration,
            "text": transcript.text,
            "segments": [
                {"id": i, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                 "language": s.language, "emotion": s.emotion, "event": s.event}
                for i, s in enumerate(transcript.segments)
            ],
        })
    return await json_response({"text": transcript.text})
