"""LlamaIndex's integrations, unmodified: ``TextEmbeddingsInference`` (TEI's /embed), and the SiliconFlow
embeddings and rerank postprocessor (/v1/embeddings, /v1/rerank), pointed at the server by URL."""

from __future__ import annotations

import pytest
from client_server import (
    KEY,
    QUERY,
    RERANK_MODEL,
    TEXTS,
    client_module,
    close,
    rerank,
    server,
    vectors,
)


def test_text_embeddings_inference(server):
    tei = client_module("llama_index.embeddings.text_embeddings_inference")
    client = tei.TextEmbeddingsInference(model_name="BAAI/bge-m3", base_url=server.url, auth_token=KEY)
    docs = client.get_text_embedding_batch(TEXTS)
    assert all(close(d, w) for d, w in zip(docs, vectors(server, TEXTS)))
    assert close(client.get_query_embedding(QUERY), vectors(server, [QUERY])[0])


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_siliconflow_embedding(server, encoding_format):
    siliconflow = client_module("llama_index.embeddings.siliconflow")
    client = siliconflow.SiliconFlowEmbedding(model="BAAI/bge-m3", api_key=KEY, max_retries=0,
                                              base_url=f"{server.url}/v1/embeddings", encoding_format=encoding_format)
    docs = client.get_text_embedding_batch(TEXTS)
    assert all(close(d, w) for d, w in zip(docs, vectors(server, TEXTS)))


def test_siliconflow_rerank(server):
    siliconflow_rerank = client_module("llama_index.postprocessor.siliconflow_rerank")
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    client = siliconflow_rerank.SiliconFlowRerank(model=RERANK_MODEL, api_key=KEY, top_n=2,
                                                  base_url=f"{server.url}/v1/rerank")
    nodes = [NodeWithScore(node=TextNode(text=t)) for t in TEXTS]
    got = client.postprocess_nodes(nodes, QueryBundle(QUERY))
    want = rerank(server, QUERY, TEXTS)["results"][:2]
    assert [n.node.get_content() for n in got] == [TEXTS[w["index"]] for w in want]
    assert all(abs(n.score - w["relevance_score"]) <= 1e-6 for n, w in zip(got, want))
