"""/v1/audio/translations: SenseVoice does not translate; a clear 400 in OpenAI's error shape."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from conftest import assert_error_shape, live_server

SPEECH = (Path(__file__).parents[1] / "data" / "speech_pauses.flac").read_bytes()


@pytest.fixture(scope="module")
def server(sensevoice_dir):
    with live_server(asr_model=str(sensevoice_dir), api_keys=["sk-test"]) as srv:
        yield srv


def test_translation_is_a_clear_400_not_a_404(server):
    with server.client(headers={"Authorization": "Bearer sk-test"}) as client:
        response = client.post("/v1/audio/translations", files={"file": ("a.flac", SPEECH)},
                               data={"model": "FunAudioLLM/SenseVoiceSmall"})
        assert client.get("/health").status_code == 200  # the connection is still usable
    error = assert_error_shape(response, 400, "translation_not_supported")
    assert "does not translate" in error["message"] and "/v1/audio/transcriptions" in error["message"]
    with server.client() as client:  # like every /v1 route, behind the key
        assert_error_shape(client.post("/v1/audio/translations", files={"file": ("a.flac", SPEECH)}), 401)


def test_the_openai_sdk_raises_the_servers_message(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-test", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="does not translate") as raised:
        client.audio.translations.create(model="FunAudioLLM/SenseVoiceSmall", file=("a.flac", SPEECH))
    assert raised.value.code == "translation_not_supported"
