"""LiteLLM, unmodified: embeddings and transcription through its OpenAI-compatible provider, and
rerank through its ``cohere`` (/v2/rerank), ``jina_ai`` (/v1/rerank, Jina's usage) and
``huggingface`` (TEI's /rerank) providers. The token counts it reports come from the server, except
the huggingface provider's, which LiteLLM estimates itself (TEI's /rerank body carries no usage)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# LiteLLM fetches its model price list from the internet at import unless told to use its local copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
from client_server import client_module  # noqa: E402 - after the environment it needs

litellm = client_module("litellm")

from client_server import (
    KEY,
    QUERY,
    RERANK_MODEL,
    TEXTS,
    close,
    embeddings,
    rerank,
    server,
)
from conftest import live_server


DOCS = [*TEXTS, "Bamboo is what pandas eat."]


def test_embedding_through_the_openai_provider(server):
    got = litellm.embedding(model="openai/bge-m3", input=TEXTS, api_base=f"{server.url}/v1", api_key=KEY)
    want = embeddings(server, TEXTS)
    assert all(close(g["embedding"], w["embedding"]) for g, w in zip(got.data, want["data"]))
    assert got.usage.prompt_tokens == want["usage"]["prompt_tokens"]


def same_ranking(response, want: list[dict], n: int) -> bool:
    """Same documents in the same order with the same scores, up to float32 rounding (a pair's logit may
    differ in the last bits with the batch it was computed in)."""
    got = [(r["index"], r["relevance_score"]) for r in response.results]
    return len(got) == n and all(i == w["index"] and abs(s - w["relevance_score"]) <= 1e-6
                                 for (i, s), w in zip(got, want))


def expected(srv, **extra) -> tuple[list[dict], int]:
    want = rerank(srv, QUERY, DOCS, **extra)
    return want["results"], want["tokens"]["input_tokens"]


def test_rerank_through_the_cohere_provider_uses_v2(server):
    got = litellm.rerank(model=f"cohere/{RERANK_MODEL}", query=QUERY, documents=DOCS, top_n=2,
                         api_base=server.url, api_key=KEY)
    results, tokens = expected(server, max_tokens_per_doc=4096)
    assert same_ranking(got, results, 2)
    assert got.meta["tokens"]["input_tokens"] == tokens
    assert got.meta["billed_units"]["search_units"] == 1


def test_rerank_through_the_jina_provider(server):
    got = litellm.rerank(model=f"jina_ai/{RERANK_MODEL}", query=QUERY, documents=DOCS, top_n=3,
                         api_base=server.url, api_key=KEY)
    results, tokens = expected(server)
    assert same_ranking(got, results, 3)
    assert got.meta["billed_units"]["total_tokens"] == tokens  # LiteLLM reads Jina's usage.total_tokens


def test_rerank_through_the_huggingface_provider_uses_tei(server):
    got = litellm.rerank(model=f"huggingface/{RERANK_MODEL}", query=QUERY, documents=DOCS, top_n=2,
                         return_documents=True, api_base=server.url, api_key=KEY)
    results, _ = expected(server)
    assert same_ranking(got, results, 2)
    assert all(r["document"]["text"] == DOCS[r["index"]] for r in got.results)


@pytest.fixture(scope="module")
def asr_server(sensevoice_dir):
    with live_server(asr_model=str(sensevoice_dir), api_keys=[KEY]) as srv:
        yield srv


def test_transcription_through_the_openai_provider(asr_server):
    clip = (Path(__file__).parents[1] / "data" / "speech_pauses.flac").read_bytes()
    got = litellm.transcription(model="openai/FunAudioLLM/SenseVoiceSmall", file=("clip.flac", clip),
                                api_base=f"{asr_server.url}/v1", api_key=KEY)
    with asr_server.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        want = client.post("/v1/audio/transcriptions", files={"file": ("clip.flac", clip)},
                           data={"model": "FunAudioLLM/SenseVoiceSmall"}).json()
    assert got.text == want["text"]
