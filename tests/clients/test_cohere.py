"""Cohere's SDK, unmodified: ``Client`` (v1, /v1/rerank) and ``ClientV2`` (/v2/rerank), pointed at the
server with ``base_url``. Scores, order and the token counts it reports are the server's."""

from __future__ import annotations

import math

import pytest

from client_server import client_module  # noqa: E402 - after the environment it needs

cohere = client_module("cohere")

from client_server import KEY, QUERY, RERANK_MODEL, TEXTS, rerank, scores, server


DOCS = [*TEXTS, "Bamboo is what pandas eat.", "The stock market fell today."]


def test_v1_client_rerank(server):
    got = cohere.Client(api_key=KEY, base_url=server.url).rerank(
        model=RERANK_MODEL, query=QUERY, documents=DOCS, top_n=3, return_documents=True)
    want = rerank(server, QUERY, DOCS)
    assert [r.index for r in got.results] == [r["index"] for r in want["results"]][:3]
    assert all(abs(r.relevance_score - scores(server, QUERY, DOCS)[r.index]) <= 1e-6 for r in got.results)
    assert all(r.document.text == DOCS[r.index] for r in got.results)
    tokens = want["tokens"]["input_tokens"]
    assert got.meta.tokens.input_tokens == tokens and got.meta.billed_units.search_units == 1


def test_v2_client_rerank_defaults_to_every_document(server):
    got = cohere.ClientV2(api_key=KEY, base_url=server.url).rerank(model=RERANK_MODEL, query=QUERY, documents=DOCS)
    want = rerank(server, QUERY, DOCS, max_tokens_per_doc=4096)
    assert [r.index for r in got.results] == [r["index"] for r in want["results"]]
    assert all(abs(g.relevance_score - w["relevance_score"]) <= 1e-6 for g, w in zip(got.results, want["results"]))
    assert got.meta.api_version.version == "2"
    assert got.meta.tokens.input_tokens == want["tokens"]["input_tokens"]
    assert got.meta.billed_units.search_units == math.ceil(len(DOCS) / 100)


def test_v2_client_top_n_and_max_tokens_per_doc(server):
    long_doc = " ".join(["panda"] * 50)
    got = cohere.ClientV2(api_key=KEY, base_url=server.url).rerank(
        model="bge-reranker-v2-m3", query=QUERY, documents=[long_doc, *DOCS], top_n=2, max_tokens_per_doc=8)
    want = rerank(server, QUERY, [long_doc, *DOCS], top_n=2, max_tokens_per_doc=8)
    assert [r.index for r in got.results] == [r["index"] for r in want["results"]] and len(got.results) == 2
    assert got.meta.tokens.input_tokens == want["tokens"]["input_tokens"]


def test_errors_map_to_the_sdk_exceptions(server):
    with pytest.raises(cohere.errors.UnauthorizedError):
        cohere.ClientV2(api_key="wrong", base_url=server.url).rerank(model=RERANK_MODEL, query="q", documents=["d"])
    with pytest.raises(cohere.errors.NotFoundError):
        cohere.ClientV2(api_key=KEY, base_url=server.url).rerank(model="rerank-v3.5", query="q", documents=["d"])
    with pytest.raises(cohere.errors.BadRequestError):
        cohere.Client(api_key=KEY, base_url=server.url).rerank(model=RERANK_MODEL, query="q", documents=[])
