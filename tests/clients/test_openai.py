"""The official openai SDK, unmodified, against the server: only the base URL and key change."""

from __future__ import annotations

import base64

import numpy as np
import openai  # noqa: E402 - a dependency of the project or of its [test] extra
import pytest
from client_server import KEY, TEXTS, close, embeddings, server


def sdk(srv) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key=KEY, max_retries=0)


@pytest.mark.parametrize("encoding_format", ["float", "base64", None])  # None: the SDK asks for base64 and decodes
def test_embeddings_equal_the_server_and_usage_is_its_count(server, encoding_format):
    kwargs = {"encoding_format": encoding_format} if encoding_format else {}
    got = sdk(server).embeddings.create(model="bge-m3", input=TEXTS, **kwargs)
    want = embeddings(server, TEXTS)
    assert [d.index for d in got.data] == [0, 1, 2]
    for g, w in zip(got.data, want["data"]):
        vector = np.frombuffer(base64.b64decode(g.embedding), "<f4") if encoding_format == "base64" else g.embedding
        assert close(vector, w["embedding"])
    assert got.usage.prompt_tokens == got.usage.total_tokens == want["usage"]["prompt_tokens"]


@pytest.mark.parametrize("name", ["bge-m3", "BAAI/bge-m3", "BAAI/bge-reranker-v2-m3"])
def test_models_retrieve(server, name):
    model = sdk(server).models.retrieve(name)
    assert model.id == name and model.object == "model" and model.owned_by == "BAAI"
    assert name in {m.id for m in sdk(server).models.list()}


def test_models_retrieve_unknown_raises_not_found(server):
    with pytest.raises(openai.NotFoundError) as err:
        sdk(server).models.retrieve("text-embedding-3-small")
    assert err.value.code == "model_not_found"
