"""POST /v1/audio/translations: OpenAI's route for speech translated into English. SenseVoice only
transcribes (its text is in the language spoken), so the route answers a clear 400 rather than a 404
that would read as a missing route or a wrong base URL."""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.api.schema import ERROR_RESPONSES
from server.errors import InvalidRequest

PATH = "/v1/audio/translations"

router = APIRouter()


class TranslationNotSupported(InvalidRequest):
    code = "translation_not_supported"


@router.post(PATH, responses={400: ERROR_RESPONSES[400], 401: ERROR_RESPONSES[401]}, tags=["audio"],
             summary="Not supported: SenseVoice transcribes and does not translate.")
async def create_translation(request: Request) -> None:
    # Read the upload to its end before answering: a client still sending a file it was answered
    # for would see a broken connection instead of this error.
    async for _ in request.stream():
        pass
    raise TranslationNotSupported(
        "Translation is not supported: SenseVoiceSmall transcribes speech in the language spoken and "
        "does not translate it. Use /v1/audio/transcriptions for the transcript.", param="model")
