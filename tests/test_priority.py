"""The priority extension through the HTTP API and the official openai SDK, on tiny models."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import openai
import pytest
from conftest import assert_error_shape


def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)


def test_an_interactive_query_finishes_while_a_bulk_request_queued_before_it_computes(embed_server):
    batcher = embed_server.runtime.served["embedding"].batcher
    texts = [f"document number {i} about pandas and bamboo" for i in range(1000)]
    client = sdk(embed_server)
    alone = client.embeddings.create(model="bge-m3", input="where do pandas live", encoding_format="float")
    batcher.pause()
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            bulk = pool.submit(client.embeddings.create, model="bge-m3", input=texts,
                               extra_body={"priority": "background"})
            while batcher.queue_depth < len(texts):
                pass
            query = pool.submit(client.embeddings.create, model="bge-m3", input="where do pandas live",
                                encoding_format="float", extra_body={"priority": "interactive"})
            while batcher.queue_depth_by_priority()["interactive"] < 1:
                pass
            batcher.resume()
            answer = query.result(30)
            bulk_done_first = bulk.done()
            assert len(bulk.result(60).data) == len(texts)
    finally:
        batcher.resume()
    assert not bulk_done_first  # 1,000 texts take dozens of passes; the query is in the first
    # Its vector does not depend on its priority or on what it was computed with.
    assert np.allclose(answer.data[0].embedding, alone.data[0].embedding, atol=1e-6)


def test_metrics_show_depth_and_waits_by_priority(embed_server):
    client = sdk(embed_server)
    for priority in ("interactive", "normal", "background"):
        client.embeddings.create(model="bge-m3", input="x", extra_body={"priority": priority})
    with embed_server.client() as http:
        text = http.get("/metrics").text
    for priority in ("interactive", "normal", "background"):
        assert f'inference_queue_depth_by_priority{{model="bge-m3",priority="{priority}"}} 0.0' in text
        count = next(line for line in text.splitlines()
                     if line.startswith(f'inference_queue_wait_seconds_count{{model="bge-m3",priority="{priority}",tenant="none"}}'))
        assert float(count.split()[-1]) >= 1


@pytest.mark.parametrize("priority", ["urgent", 1])
def test_an_unknown_priority_is_a_clear_400(embed_server, priority):
    with embed_server.client() as http:
        response = http.post("/v1/embeddings", json={"model": "bge-m3", "input": "x", "priority": priority})
    err = assert_error_shape(response, 400)
    assert err["param"] == "priority"


def test_the_openapi_schema_documents_priority(embed_server):
    with embed_server.client() as http:
        schema = http.get("/openapi.json").json()
    field = schema["components"]["schemas"]["EmbeddingRequest"]["properties"]["priority"]
    enum = next(option["enum"] for option in field.get("anyOf", [field]) if "enum" in option)  # null = left out
    assert enum == ["interactive", "normal", "background"] and field["default"] == "normal"
