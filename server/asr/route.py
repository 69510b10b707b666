"""POST /v1/audio/transcriptions (OpenAI's multipart shape), and /v1/audio/translations, which
SenseVoice cannot serve."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.responses import Response

from server.api.responses import answer, count, services
from server.api.schema import ERROR_RESPONSES, PRIORITY_DESCRIPTION, Text
from server.api.terms import request_terms
from server.engine.fair_queue import Priority
from server.errors import InvalidRequest, PayloadTooLarge
from server.family import BodyLimits
from server.asr import FAMILY, chunking, translations
from server.asr.render import render
from server.asr.schema import (
    STREAMED_FORMATS,
    Language,
    ResponseFormat,
    TimestampGranularity,
    Transcription,
    TranscriptionVerbose,
    event_stream_schema,
)
from server.asr.streaming import transcript_stream

PATH = "/v1/audio/transcriptions"
# Room for the multipart boundaries and the small form fields around the file.
MULTIPART_OVERHEAD = 64 * 1024

def too_large(max_upload_bytes: int) -> str:
    return f"The audio file is larger than {max_upload_bytes} bytes."


def body_limits(max_upload_bytes: int) -> BodyLimits:
    """The upload's cap on the whole body, checked as it streams in (server.api.middleware.BodyLimit),
    refused in the words of the documented limit."""
    return {PATH: (max_upload_bytes + MULTIPART_OVERHEAD, too_large(max_upload_bytes))}


router = APIRouter()
router.include_router(translations.router)


_TEXT = {"schema": {"type": "string"}}
_SUCCESS = {
    "description": "json: {text, usage}; verbose_json: with segments (and words); text and srt: text/plain; "
                   "vtt: text/vtt; stream=true: server-sent events (transcript.text.delta per segment, then "
                   "transcript.text.done, or an error event).",
    "content": {
        "application/json": {"schema": {"anyOf": [
            {"$ref": "#/components/schemas/Transcription"}, {"$ref": "#/components/schemas/TranscriptionVerbose"},
        ]}},
        "text/plain": _TEXT,
        "text/vtt": _TEXT,
        "text/event-stream": {"schema": event_stream_schema()},
    },
}


# Fields a form may repeat: OpenAI's SDK sends one part per granularity.
_LIST_FIELDS = frozenset({"timestamp_granularities[]"})


async def refuse_repeated_fields(request: Request) -> None:
    """A field sent twice is a 400: the form parser keeps the last, and a client that sent two
    files or two languages should not get an answer for one of them silently."""
    form = await request.form()  # parsed already, for the route's parameters: no second read
    seen: set[str] = set()
    for name, _ in form.multi_items():
        if name in seen and name not in _LIST_FIELDS:
            raise InvalidRequest(f"The form has the field '{name}' more than once; send it once.", param=name,
                                 code="duplicate_field")
        seen.add(name)


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
        list[TimestampGranularity] | None,
        Form(alias="timestamp_granularities[]",
             description="segment, word or both; word adds `words` to verbose_json."),
    ] = None,
    stream: Annotated[bool, Form(description="Server-sent events, one delta per segment as it is done "
                                             "(response_format json or text).")] = False,
    use_itn: Annotated[bool, Form(description="Extension: punctuation and inverse text normalization.")] = True,
    priority: Annotated[Priority, Form(description=PRIORITY_DESCRIPTION)] = "normal",
    chunking_strategy: Annotated[str | None, Form(description=chunking.DESCRIPTION)] = None,
) -> Response:
    await refuse_repeated_fields(request)
    service = services(request).lookup(FAMILY, model)
    chunks = chunking.chunking_of(await request.form())  # its one field is chunking_strategy, or its parts
    if stream and response_format not in STREAMED_FORMATS:
        raise InvalidRequest(
            f"stream=true sends transcript events, which carry text: use response_format json or text "
            f"(as OpenAI's streaming models), or leave stream off for {response_format}.",
            param="response_format", code="unsupported_value")
    data = await file.read()
    limit = service.max_upload_bytes
    if len(data) > limit:  # the body's cap (body_limits) leaves room for the form around the file
        raise PayloadTooLarge(too_large(limit))
    if not data:
        raise InvalidRequest("The audio file is empty.", param="file", code="invalid_audio")
    terms = request_terms(request, priority)
    if stream:
        # Decoding, speech detection and queueing happen first: bad audio is still a plain 4xx.
        queued = await service.queue(data, language=language, use_itn=use_itn, terms=terms, chunking=chunks)
        return transcript_stream(service, queued, on_done=lambda usage: count(request, FAMILY, usage))
    verbose = response_format == "verbose_json"  # the only answer that reports the posteriors
    transcript = await service.transcribe(data, language=language, use_itn=use_itn, terms=terms, posteriors=verbose,
                                          chunking=chunks, is_gone=request.is_disconnected)
    return await answer(request, FAMILY, transcript.usage,
                        await render(transcript, response_format, words="word" in (timestamp_granularities or ())))
