"""The official openai SDK against a live server on 127.0.0.1: only the base URL changes."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest
from conftest import live_server


@pytest.fixture(scope="module")
def secured(bge_m3_dir):
    with live_server(embedding_model=str(bge_m3_dir), api_keys=["sk-local"]) as srv:
        yield srv


def sdk(server, key: str = "sk-local") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def test_embeddings_create_float_base64_and_default(secured):
    client = sdk(secured)
    texts = ["hello world", "你好，世界"]
    floats = client.embeddings.create(model="bge-m3", input=texts, encoding_format="float")
    default = client.embeddings.create(model="BAAI/bge-m3", input=texts)  # the SDK asks for base64 and decodes
    raw = client.embeddings.create(model="bge-m3", input=texts, encoding_format="base64")
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 4
    for f, d, r in zip(floats.data, default.data, raw.data):
        assert np.allclose(f.embedding, d.embedding, atol=1e-7)
        assert np.array_equal(np.frombuffer(base64.b64decode(r.embedding), "<f4"), np.float32(f.embedding))


def test_extensions_through_extra_body(secured):
    got = sdk(secured).embeddings.create(
        model="bge-m3", input="The giant panda", encoding_format="float",
        extra_body={"return_sparse": True, "return_colbert": True},
    )
    item = got.data[0].model_dump()
    assert item["sparse_embedding"] and len(item["colbert_embedding"][0]) == len(item["embedding"])


def test_sdk_errors_map_to_its_exception_types(secured):
    with pytest.raises(openai.AuthenticationError):
        sdk(secured, key="wrong").embeddings.create(model="bge-m3", input="x")
    with pytest.raises(openai.NotFoundError) as err:
        sdk(secured).embeddings.create(model="text-embedding-3-small", input="x")
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        sdk(secured).embeddings.create(model="bge-m3", input="")


def test_models_list(secured):
    ids = {m.id for m in sdk(secured).models.list()}
    assert {"bge-m3", "BAAI/bge-m3"} <= ids
