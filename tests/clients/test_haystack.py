"""Haystack's embedders, unmodified: ``OpenAITextEmbedder`` / ``OpenAIDocumentEmbedder`` (/v1/embeddings,
with the usage they report) and ``HuggingFaceAPITextEmbedder`` on a TEI endpoint (POST /, which it
calls with normalize=false by default, so it gets the vector before normalization)."""

from __future__ import annotations

import os


os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # Haystack reports usage to its makers unless told not to
from client_server import client_module  # noqa: E402 - after the environment it needs

haystack = client_module("haystack")

from client_server import AUTH, KEY, QUERY, TEXTS, close, embeddings, server, vectors
from haystack.utils import Secret


def test_openai_text_and_document_embedders(server):
    from haystack import Document
    from haystack.components.embedders import OpenAIDocumentEmbedder, OpenAITextEmbedder

    text = OpenAITextEmbedder(api_key=Secret.from_token(KEY), model="bge-m3", api_base_url=f"{server.url}/v1")
    got = text.run(QUERY)
    want = embeddings(server, [QUERY])
    assert close(got["embedding"], want["data"][0]["embedding"])
    assert got["meta"]["usage"]["prompt_tokens"] == want["usage"]["prompt_tokens"]

    docs = OpenAIDocumentEmbedder(api_key=Secret.from_token(KEY), model="bge-m3", api_base_url=f"{server.url}/v1")
    embedded = docs.run([Document(content=t) for t in TEXTS])
    assert all(close(d.embedding, w) for d, w in zip(embedded["documents"], vectors(server, TEXTS)))
    assert embedded["meta"]["usage"]["prompt_tokens"] == embeddings(server, TEXTS)["usage"]["prompt_tokens"]


def test_hugging_face_api_text_embedder_on_tei(server):
    from haystack.components.embedders import HuggingFaceAPITextEmbedder

    embedder = HuggingFaceAPITextEmbedder(api_type="text_embeddings_inference", api_params={"url": server.url},
                                          token=Secret.from_token(KEY))
    got = embedder.run(QUERY)["embedding"]
    with server.client(headers=AUTH) as http:
        raw = http.post("/embed", json={"inputs": QUERY, "normalize": False, "truncate": True}).json()[0]
    assert close(got, raw)
    normalized = HuggingFaceAPITextEmbedder(api_type="text_embeddings_inference", api_params={"url": server.url},
                                            token=Secret.from_token(KEY), normalize=True).run(QUERY)["embedding"]
    assert close(normalized, vectors(server, [QUERY])[0])
