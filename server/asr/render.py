"""A finished transcript in each response format OpenAI defines: json, text, srt, vtt, verbose_json.

verbose_json follows OpenAI's ``CreateTranscriptionResponseVerboseJson`` field for field; where
Whisper's fields describe its own decoding, each holds the same quantity for SenseVoice's (the
README explains each one). SenseVoice's own tags ride along on each segment as extensions.
"""

from __future__ import annotations

import zlib

from fastapi.responses import PlainTextResponse
from starlette.responses import Response

from server.api.responses import json_response
from server.asr.schema import LANGUAGE_NAMES
from server.asr.service import Transcript, TranscriptSegment
from server.asr.subtitles import to_srt, to_vtt

# SenseVoice decodes greedily (the arg max of each frame's posteriors): temperature 0.
TEMPERATURE = 0.0


async def render(transcript: Transcript, response_format: str, *, words: bool = False) -> Response:
    if response_format == "text":
        return PlainTextResponse(transcript.text)
    if response_format == "srt":
        return PlainTextResponse(to_srt(transcript.segments))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(transcript.segments), media_type="text/vtt")
    if response_format == "verbose_json":
        return await json_response(verbose_json(transcript, words=words))
    return await json_response({"text": transcript.text, "usage": duration_usage(transcript)})


def verbose_json(transcript: Transcript, *, words: bool) -> dict:
    body = {
        "task": "transcribe",
        "language": language_name(transcript.language),
        "duration": transcript.duration,
        "text": transcript.text,
        "segments": [segment_json(i, seg) for i, seg in enumerate(transcript.segments)],
        "usage": duration_usage(transcript),
    }
    if words:
        body["words"] = [{"word": w.word, "start": w.start, "end": w.end}
                         for seg in transcript.segments for w in seg.words]
    return body


def segment_json(index: int, seg: TranscriptSegment) -> dict:
    result = seg.result
    return {
        "id": index,
        "seek": round(seg.start * 100),  # in 10 ms frames, as Whisper's (its mel frames)
        "start": round(seg.start, 3),
        "end": round(seg.end, 3),
        "text": seg.text,
        "tokens": list(result.tokens),
        "temperature": TEMPERATURE,
        "avg_logprob": result.avg_logprob,
        "compression_ratio": compression_ratio(seg.text),
        "no_speech_prob": result.no_speech_prob,
        # SenseVoice's own tags (extensions)
        "language": seg.language,
        "emotion": seg.emotion,
        "event": seg.event,
    }


def compression_ratio(text: str) -> float:
    """Whisper's definition: UTF-8 bytes over zlib-compressed bytes (high: repetitive text, the
    mark of a decoding loop); 0.0 for no text."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def language_name(code: str | None) -> str:
    """OpenAI names the language in words; a code without a name is given as is, and no language
    at all (nothing said, none requested) as ``unknown``, never an empty string."""
    if not code:
        return "unknown"
    return LANGUAGE_NAMES.get(code, code)


def duration_usage(transcript: Transcript) -> dict:
    """OpenAI's usage for models billed by audio duration."""
    return {"type": "duration", "seconds": transcript.duration}
