"""What TEI's routes share: /info and /tokenize (for whichever model is served), and TEI's error body
{"error", "error_type"} on every TEI route, for refusals made before routing too (401, 413), while the
OpenAI-shaped routes keep OpenAI's body."""

from __future__ import annotations

import pytest
from conftest import assert_error_shape, live_server
from transformers import AutoTokenizer

from server import __version__
from server.tei import PATHS

HEADERS = {"Authorization": "Bearer sk-test"}


@pytest.fixture(scope="module")
def server(bge_m3_dir, reranker_dir):
    with live_server(embedding_model=str(bge_m3_dir), reranker_model=str(reranker_dir), api_keys=["sk-test"],
                     max_body_bytes=4096) as srv:
        yield srv


def assert_tei_error(response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type and body["error"], body
    return body


def test_info_describes_the_embedding_model(server):
    with server.client(headers=HEADERS) as client:
        info = client.get("/info").json()
    settings = server.app.state.settings
    assert info["model_id"] == "BAAI/bge-m3" and info["served_model_name"] == "bge-m3"
    assert info["model_type"] == {"embedding": {"pooling": "cls"}}
    assert info["model_dtype"] == "float32" and info["version"] == __version__
    assert info["max_input_length"] == 8192 and info["auto_truncate"] is False
    assert info["max_client_batch_size"] == settings.max_inputs_per_request
    assert info["max_batch_tokens"] == settings.batch_tokens("cpu")
    assert isinstance(info["tokenization_workers"], int) and info["tokenization_workers"] >= 1


def test_info_describes_the_reranker_when_it_is_the_only_text_model(reranker_dir):
    with live_server(reranker_model=str(reranker_dir)) as srv, srv.client() as client:
        info = client.get("/info").json()
    assert info["served_model_name"] == "BAAI/bge-reranker-v2-m3"
    labels = info["model_type"]["reranker"]
    assert len(labels["id2label"]) == 1 and {v: int(k) for k, v in labels["id2label"].items()} == labels["label2id"]
    assert info["max_input_length"] == 512


def test_tokenize_lists_ids_texts_and_byte_offsets(server, bge_m3_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(bge_m3_dir))
    texts = ["hello world", "日本語と한국어 mixed"]
    with server.client(headers=HEADERS) as client:
        tokens = client.post("/tokenize", json={"inputs": texts}).json()
        single = client.post("/tokenize", json={"inputs": texts[0], "add_special_tokens": False}).json()
    assert len(tokens) == 2
    for text, toks in zip(texts, tokens):
        assert [t["id"] for t in toks] == tokenizer(text)["input_ids"]
        assert toks[0] == {"id": tokenizer.cls_token_id, "text": "<s>", "special": True, "start": None, "stop": None}
        assert toks[-1]["text"] == "</s>" and toks[-1]["special"]
        raw = text.encode("utf-8")
        for t in toks[1:-1]:  # TEI's offsets are UTF-8 byte offsets into the input
            assert raw[t["start"]:t["stop"]].decode("utf-8") == t["text"] and not t["special"]
    assert [t["id"] for t in single[0]] == tokenizer(texts[0], add_special_tokens=False)["input_ids"]


def test_tokenize_refusals(server):
    with server.client(headers=HEADERS) as client:
        assert_tei_error(client.post("/tokenize", json={"inputs": []}), 400, "Empty")
        assert_tei_error(client.post("/tokenize", json={"inputs": "x", "prompt_name": "query"}), 400, "Validation")


@pytest.mark.parametrize("method, path", [("POST", p) for p in sorted(PATHS - {"/info"})] + [("GET", "/info")])
def test_every_tei_route_refuses_a_missing_key_in_tei_body(server, method, path):
    with server.client() as client:
        assert_tei_error(client.request(method, path, json={"inputs": "x"}), 401, "Unauthorized")


def test_refusals_before_routing_and_by_the_framework_use_tei_body(server):
    with server.client(headers=HEADERS) as client:
        too_big = client.post("/embed", json={"inputs": "x" * 5000})
        wrong_method = client.get("/embed")
        openai_too_big = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "x" * 5000})
    assert_tei_error(too_big, 413, "Validation")
    assert_tei_error(wrong_method, 405, "Validation")
    assert_error_shape(openai_too_big, 413, "payload_too_large")  # the OpenAI routes keep OpenAI's body


def test_an_internal_error_on_a_tei_route_is_a_tei_500(server):
    batcher = server.runtime.served["embedding"].batcher
    original = batcher.run_batch

    def broken(items):
        raise RuntimeError("injected failure")

    batcher.run_batch = broken
    try:
        with server.client(headers=HEADERS) as client:
            response = client.post("/embed", json={"inputs": "boom"})
    finally:
        batcher.run_batch = original
    assert_tei_error(response, 500, "Backend")
    assert "injected" not in response.text


def test_draining_is_unhealthy(bge_m3_dir):
    with live_server(embedding_model=str(bge_m3_dir)) as srv, srv.client() as client:
        srv.runtime.closing = True  # as while draining
        try:
            assert_tei_error(client.post("/embed", json={"inputs": "x"}), 503, "Unhealthy")
        finally:
            srv.runtime.closing = False
