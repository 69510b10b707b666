"""Probes, metrics, request ids and the OpenAPI schema."""

from __future__ import annotations

import time

from conftest import live_server


def test_health_ready_and_request_id(embed_server):
    with embed_server.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
        echoed = client.get("/health", headers={"X-Request-ID": "trace-123"})
        generated = client.get("/health")
    assert ready.status_code == 200 and ready.json()["models"] == {"embedding": True}
    assert echoed.headers["x-request-id"] == "trace-123"
    assert len(generated.headers["x-request-id"]) == 32


def test_a_request_id_with_control_characters_is_not_echoed(embed_server):
    """It goes to a response header and the log: a tab, an escape or a DEL could forge log lines or
    drive a terminal. Such an id is replaced by a fresh one."""
    with embed_server.client() as client:
        for bad in ("trace\tforged", "trace\x1b[31m", "trace\x7f", "trace id"):
            answered = client.get("/health", headers={"X-Request-ID": bad})
            assert answered.status_code == 200
            assert answered.headers["x-request-id"] != bad and len(answered.headers["x-request-id"]) == 32, bad


def test_ready_is_503_until_the_models_are_loaded(bge_m3_dir):
    import threading

    import uvicorn

    from server.app import create_app
    from server.background import free_port
    from server.families import make_settings
    from server import runtime as runtime_module

    gate = threading.Event()
    original = runtime_module.build

    def slow_build(*args):  # the real builder, started only when the test says so
        gate.wait(30)
        return original(*args)

    runtime_module.build = slow_build
    try:
        port = free_port()
        app = create_app(make_settings(embedding_model=str(bge_m3_dir), reranker_model="none", asr_model="none", port=port))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        import httpx

        while not server.started:
            time.sleep(0.01)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            loading = client.get("/ready")
            early = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "x"})
            assert client.get("/health").status_code == 200
            gate.set()
            while client.get("/ready").status_code != 200:
                time.sleep(0.05)
            later = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "x"})
        server.should_exit = True
        thread.join(30)
    finally:
        runtime_module.build = original
        gate.set()
    assert loading.status_code == 503 and loading.json()["status"] == "loading"
    assert early.status_code == 503 and early.json()["error"]["code"] == "model_loading"
    assert later.status_code == 200


def test_metrics_report_queue_batches_and_latency(embed_server):
    with embed_server.client() as client:
        client.post("/v1/embeddings", json={"model": "bge-m3", "input": ["a b c", "d"]})
        text = client.get("/metrics").text
    for name in (
        'inference_queue_depth{model="bge-m3"}',
        'inference_items_total{model="bge-m3",outcome="computed"}',
        "inference_batch_size_bucket",
        "inference_batch_tokens_bucket",
        "inference_batch_padding_ratio_bucket",
        "inference_batch_seconds_bucket",
        'inference_request_seconds_count{route="/v1/embeddings",status="200"}',
        'inference_input_tokens_total{model="bge-m3"}',
        'inference_busy_seconds_total{model="bge-m3"}',
    ):
        assert name in text, name
    value = lambda series: float(next(l for l in text.splitlines() if l.startswith(series)).split()[-1])  # noqa: E731
    assert value('inference_items_total{model="bge-m3",outcome="computed"}') >= 2
    # An embedding item's real cost is its tokens: the same count usage reports.
    real, padded = value('inference_batch_cost_total{kind="real",model="bge-m3"}'), value(
        'inference_batch_cost_total{kind="padded",model="bge-m3"}')
    assert real == value('inference_input_tokens_total{model="bge-m3"}') and padded >= real
    assert value('inference_busy_seconds_total{model="bge-m3"}') > 0


def test_unknown_route_and_method_use_the_error_shape(embed_server):
    with embed_server.client() as client:
        missing = client.get("/v1/nothing")
        method = client.get("/v1/embeddings")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert method.status_code == 405 and "error" in method.json()


def test_openapi_documents_the_extensions_and_error_shape(embed_server):
    with embed_server.client() as client:
        schema = client.get("/openapi.json").json()
    request = schema["components"]["schemas"]["EmbeddingRequest"]["properties"]
    assert {"return_sparse", "return_colbert", "sparse_format", "truncate"} <= request.keys()
    data = schema["components"]["schemas"]["EmbeddingData"]["properties"]
    assert {"sparse_embedding", "colbert_embedding"} <= data.keys()
    assert "ErrorResponse" in schema["components"]["schemas"]
    assert "404" in schema["paths"]["/v1/embeddings"]["post"]["responses"]


def test_keys_never_reach_the_log(bge_m3_dir, caplog):
    caplog.set_level("DEBUG")
    with live_server(embedding_model=str(bge_m3_dir), api_keys=["very-secret-key"]) as srv, srv.client() as client:
        client.post("/v1/embeddings", json={"model": "bge-m3", "input": "x"}, headers={"Authorization": "Bearer bad"})
        client.post("/v1/embeddings", json={"model": "bge-m3", "input": "x"},
                    headers={"Authorization": "Bearer very-secret-key"})
    assert "very-secret-key" not in caplog.text


def test_the_bare_address_points_to_the_docs_and_probes_answer_head(embed_server):
    with embed_server.client() as client:
        root = client.get("/")
        heads = [client.head(path) for path in ("/health", "/ready")]
    assert root.status_code == 200 and root.json()["docs"] == "/docs", root.text
    assert [h.status_code for h in heads] == [200, 200]


def test_a_model_of_another_endpoint_is_named_as_such(bge_m3_dir, reranker_dir):
    """The reranker's name sent to /v1/embeddings: a 404 that says this server serves it, on
    another endpoint, and lists what this endpoint serves (not the name itself under "Served")."""
    with live_server(embedding_model=str(bge_m3_dir), reranker_model=str(reranker_dir)) as srv:
        with srv.client() as client:
            wrong = client.post("/v1/embeddings", json={"model": "bge-reranker-v2-m3", "input": "hi"})
            unknown = client.post("/v1/embeddings", json={"model": "nope", "input": "hi"})
    message = wrong.json()["error"]["message"]
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "model_not_found"
    assert "not by this endpoint" in message and "reranker" in message, message
    assert message.split("serves:")[1].count("bge-reranker-v2-m3") == 0, message
    assert "bge-m3" in message.split("serves:")[1]
    assert unknown.status_code == 404 and "does not exist" in unknown.json()["error"]["message"]


def test_a_server_with_every_model_set_to_none_says_so(caplog):
    import logging

    caplog.set_level(logging.WARNING)
    with live_server() as srv, srv.client() as client:  # every model "none"
        assert client.get("/ready").status_code == 200
    assert any("every model is set to none" in r.getMessage() for r in caplog.records), caplog.text
