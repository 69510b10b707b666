"""``stream=true``: a transcription as OpenAI's server-sent events, one segment at a time.

Events (``data:`` lines of JSON, framed by sse-starlette):

* ``{"type": "transcript.text.delta", "delta"}``: one per segment, in the audio's order, as soon as
  that segment and every one before it are computed; the deltas joined are the text a non-streamed
  answer would hold;
* ``{"type": "transcript.text.done", "text", "usage"}``: last, the whole text. OpenAI's schema gives
  this event token usage (``TranscriptTextUsageTokens``), so usage counts the encoder's input
  frames (60 ms audio frames, and 4 query frames per segment as text tokens) and the emitted tokens;
* ``{"type": "error", "error": {"message", "type", "param", "code"}}``: a failure after the stream
  started (a failed item, the request timeout, shutdown), in the error shape every answer uses;
  the stream then ends. The ``openai`` SDK raises it as an APIError.

A client that goes away mid-stream cancels the futures of the segments not yet delivered: their
queued items are dropped by the batcher and never computed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import AppStatus
from starlette.background import BackgroundTask

from server.api.schema import ErrorDetail
from server.errors import ApiError
from server.family import Usage
from server.asr.schema import (
    TokenUsage,
    TokenUsageDetails,
    TranscriptStreamError,
    TranscriptTextDelta,
    TranscriptTextDone,
)
from server.asr.service import (
    QueuedTranscription,
    TranscriptionService,
    text_delta,
)
from server.asr.words import QUERY_FRAMES

log = logging.getLogger(__name__)

# sse-starlette cancels every stream as soon as the server is told to stop. This server drains on
# SIGTERM instead (queued work is finished, within --shutdown-timeout): a stream runs to its end.
AppStatus.disable_automatic_graceful_drain()


def transcript_stream(service: TranscriptionService, queued: QueuedTranscription,
                      on_done: Callable[[Usage], None]) -> EventSourceResponse:
    """``on_done``: told the usage once the whole transcript has been sent."""
    async def cancel_undelivered() -> None:
        # Runs once the response is over, however it ended: also when the client left before the
        # events' generator first ran (then nothing inside it could cancel the queued segments).
        queued.cancel()

    # A comment line every 15 s keeps proxies from closing a connection that waits for a long segment.
    return EventSourceResponse(_events(service, queued, on_done), ping=15, sep="\n",
                               background=BackgroundTask(cancel_undelivered))


async def _events(service: TranscriptionService, queued: QueuedTranscription,
                  on_done: Callable[[Usage], None]) -> AsyncIterator[ServerSentEvent]:
    text, audio_frames, output_tokens, segments = "", 0, 0, 0
    try:
        # aclosing: the segments' generator is closed (and the undelivered futures cancelled) at
        # once when this stream stops, whether it ends, fails or the client goes away.
        async with aclosing(service.segments_in_order(queued)) as ordered:
            async for segment in ordered:
                delta = text_delta(segment, after_text=bool(text))
                text += delta
                segments += 1
                audio_frames += segment.result.encoder_frames - QUERY_FRAMES
                output_tokens += segment.result.emitted
                yield _event(TranscriptTextDelta(delta=delta))
    except ApiError as err:
        yield _event(TranscriptStreamError(error=ErrorDetail(message=err.message, type=err.type, param=err.param,
                                                             code=err.code)))
        return
    except Exception:
        log.exception("transcription stream failed")
        yield _event(TranscriptStreamError(error=ErrorDetail(message="Internal server error.", type="server_error",
                                                             code="internal_error")))
        return
    query_tokens = QUERY_FRAMES * segments
    usage = Usage(audio_frames + query_tokens, output_tokens)
    on_done(usage)
    yield _event(TranscriptTextDone(text=text, usage=TokenUsage(
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
        input_token_details=TokenUsageDetails(audio_tokens=audio_frames, text_tokens=query_tokens))))


def _event(payload: BaseModel) -> ServerSentEvent:
    return ServerSentEvent(data=payload.model_dump_json())
