"""Deadline admission on a live server: a request the batcher forecasts to miss its deadline is
refused at once with 503 and Retry-After, in the error shape of each API dialect; the deadline a
request asks for (X-Request-Timeout, or the openai SDK's own timeout); tenants by API key; metrics.

To make a refusal certain without depending on this machine's speed, the model's batcher is held
(``pause()``) with an interactive request of ~50k tokens queued: every normal request waits behind
it, and the batcher's forecast for that backlog is many times the 0.25 s a request then allows
itself, while one short text alone takes a few milliseconds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import openai
import pytest
from conftest import assert_error_shape, live_server
from test_overload import wait_until

KEY1, KEY2 = "sk-admission-one", "sk-admission-two"
SHORT_DEADLINE = {"X-Request-Timeout": "0.25"}
LONG_TEXT = " ".join(f"word{i}" for i in range(60))


def auth(key: str = KEY1) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def server(bge_m3_dir, reranker_dir):
    with live_server(embedding_model=str(bge_m3_dir), reranker_model=str(reranker_dir), api_keys=[KEY1, KEY2]) as srv:
        with srv.client() as client:  # passes of a few sizes: the batchers' forecasts have something to go by
            for n in (1, 8, 32, 64):
                assert client.post("/v1/embeddings", headers=auth(KEY2),
                                   json={"model": "bge-m3", "input": [LONG_TEXT] * n}).status_code == 200
                assert client.post("/v1/rerank", headers=auth(KEY2),
                                   json={"model": "bge-reranker-v2-m3", "query": "q", "documents": [LONG_TEXT] * n}
                                   ).status_code == 200
        yield srv


BACKLOGS = {
    "embedding": ("/v1/embeddings", {"model": "bge-m3", "input": [LONG_TEXT] * 768}, 768),
    "reranker": ("/v1/rerank", {"model": "bge-reranker-v2-m3", "query": "q", "documents": [LONG_TEXT] * 768}, 768),
}


@contextmanager
def held_behind_interactive_work(srv, kind: str) -> Iterator[None]:
    """The batcher held with an interactive request queued ahead of every normal one."""
    path, body, items = BACKLOGS[kind]
    batcher = srv.runtime.served[kind].batcher
    batcher.pause()
    answered: list[int] = []
    sender = threading.Thread(target=lambda: answered.append(httpx.post(
        srv.url + path, json={**body, "priority": "interactive"}, headers=auth(KEY2), timeout=120).status_code))
    sender.start()
    try:
        wait_until(lambda: batcher.queue_depth >= items, 30, "the interactive backlog to queue")
        yield
    finally:
        batcher.resume()
        sender.join(120)
    assert answered == [200]  # the backlog itself was accepted and answered


def refused(response: httpx.Response) -> int:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    retry_after = response.headers.get("retry-after", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, response.headers
    return int(retry_after)


def test_refused_at_once_in_openai_and_tei_shape_for_embeddings(server):
    computed = server.runtime.served["embedding"].batcher.stats.computed
    with held_behind_interactive_work(server, "embedding"), server.client() as client:
        openai_shape = client.post("/v1/embeddings", headers={**auth(), **SHORT_DEADLINE},
                                   json={"model": "bge-m3", "input": "a short query"})
        tei_shape = client.post("/embed", headers={**auth(), **SHORT_DEADLINE}, json={"inputs": "a short query"})
        within_its_time = server.runtime.served["embedding"].batcher.stats.computed
    refused(openai_shape)
    assert assert_error_shape(openai_shape, 503, "overloaded")["type"] == "server_error"
    assert "deadline" in openai_shape.json()["error"]["message"]
    refused(tei_shape)
    assert tei_shape.json()["error_type"] == "Overloaded" and set(tei_shape.json()) == {"error", "error_type"}
    assert within_its_time == computed  # refused while the model was held: nothing was computed for them


def test_refused_at_once_in_each_rerank_dialect(server):
    body = {"model": "bge-reranker-v2-m3", "query": "q", "documents": ["a", "b"]}
    with held_behind_interactive_work(server, "reranker"), server.client() as client:
        siliconflow = client.post("/v1/rerank", headers={**auth(), **SHORT_DEADLINE}, json=body)
        cohere = client.post("/v2/rerank", headers={**auth(), **SHORT_DEADLINE}, json=body)
        tei = client.post("/rerank", headers={**auth(), **SHORT_DEADLINE}, json={"query": "q", "texts": ["a", "b"]})
    for response in (siliconflow, cohere):
        refused(response)
        assert_error_shape(response, 503, "overloaded")
    refused(tei)
    assert tei.json()["error_type"] == "Overloaded"


def test_the_openai_sdk_timeout_is_the_deadline_and_the_sdk_sees_a_503(server):
    """The openai SDK sends its timeout (X-Stainless-Read-Timeout): a client that gives up after
    0.25 s is refused at once rather than computed for after it has gone."""
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY1, max_retries=0)
    with held_behind_interactive_work(server, "embedding"):
        with pytest.raises(openai.InternalServerError) as by_sdk_timeout:
            sdk.with_options(timeout=0.25).embeddings.create(model="bge-m3", input="a short query")
        with pytest.raises(openai.InternalServerError) as by_header:
            sdk.embeddings.create(model="bge-m3", input="a short query", extra_headers=SHORT_DEADLINE)
    for err in (by_sdk_timeout.value, by_header.value):
        assert err.status_code == 503 and err.code == "overloaded"
        assert int(err.response.headers["retry-after"]) >= 1
    # With the SDK's default timeout (600 s, beyond the server's) the same request is simply served.
    assert len(sdk.embeddings.create(model="bge-m3", input="a short query").data) == 1


def test_a_request_asks_for_a_shorter_deadline_only(server):
    with server.client() as client:
        bad = client.post("/v1/embeddings", headers={**auth(), "X-Request-Timeout": "soon"},
                          json={"model": "bge-m3", "input": "x"})
        negative = client.post("/v1/embeddings", headers={**auth(), "X-Request-Timeout": "-1"},
                               json={"model": "bge-m3", "input": "x"})
        longer = client.post("/v1/embeddings", headers={**auth(), "X-Request-Timeout": "100000"},
                             json={"model": "bge-m3", "input": "x"})
    assert assert_error_shape(bad, 400, "invalid_timeout")["param"] == "X-Request-Timeout"
    assert_error_shape(negative, 400, "invalid_timeout")
    assert longer.status_code == 200  # capped at --request-timeout, not refused


def test_metrics_count_refusals_and_deadlines_and_name_tenants_never_keys(server):
    with held_behind_interactive_work(server, "embedding"), server.client() as client:
        refused(client.post("/v1/embeddings", headers={**auth(), **SHORT_DEADLINE},
                            json={"model": "bge-m3", "input": "x"}))
    with server.client() as client:
        assert client.post("/v1/embeddings", headers=auth(KEY1), json={"model": "bge-m3", "input": "y"}).status_code == 200
        text = client.get("/metrics").text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples['inference_requests_refused_total{model="bge-m3",reason="deadline"}'] >= 1
    assert 'inference_requests_refused_total{model="bge-m3",reason="queue_full"}' in samples
    assert samples['inference_request_deadlines_total{model="bge-m3",outcome="met"}'] >= 1
    assert 'inference_request_deadlines_total{model="bge-m3",outcome="missed"}' in samples
    assert sum(value for name, value in samples.items()
               if name.startswith("inference_deadline_prediction_error_seconds_count{") and 'model="bge-m3"' in name) >= 1
    tenants = {line.split('tenant="')[1].split('"')[0] for line in text.splitlines()
               if line.startswith("inference_queue_wait_seconds_count")}
    assert {"key-1", "key-2"} <= tenants
    assert KEY1 not in text and KEY2 not in text
