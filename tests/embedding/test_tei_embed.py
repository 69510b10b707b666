"""TEI's /embed, / and /embed_sparse on a tiny bge-m3: the same vectors as /v1/embeddings and as
FlagEmbedding's BGEM3FlagModel (normalized or not), TEI's shapes, headers and error body."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import live_server
from FlagEmbedding import BGEM3FlagModel

TEXTS = ["hello world", "The giant panda is a bear native to South Central China.", "你好，世界。"]
HEADERS = {"Authorization": "Bearer sk-test"}


@pytest.fixture(scope="module")
def server(bge_m3_dir):
    with live_server(embedding_model=str(bge_m3_dir), api_keys=["sk-test"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def raw_reference(bge_m3_dir):
    """The reference without its final L2 normalization: what TEI's normalize=false returns."""
    return BGEM3FlagModel(str(bge_m3_dir), use_fp16=False, devices="cpu", normalize_embeddings=False)


def post(srv, path: str, body: dict, status: int = 200):
    with srv.client(headers=HEADERS) as client:
        response = client.post(path, json=body)
    assert response.status_code == status, response.text
    return response


def openai_vectors(srv, texts: list[str], **extra) -> tuple[np.ndarray, dict]:
    got = post(srv, "/v1/embeddings", {"model": "bge-m3", "input": texts, **extra}).json()
    return np.array([d["embedding"] for d in got["data"]], dtype=np.float32), got


@pytest.mark.parametrize("path", ["/embed", "/"])
def test_embed_and_its_root_alias_equal_the_openai_route(server, path):
    for text in TEXTS:  # one input per request: the same forward pass shape, so equal to the bit
        response = post(server, path, {"inputs": text})
        vectors = response.json()
        want, body = openai_vectors(server, [text])
        assert np.array_equal(np.array(vectors, dtype=np.float32), want)
        assert response.headers["x-compute-tokens"] == str(body["usage"]["prompt_tokens"])
        assert response.headers["x-compute-characters"] == str(len(text))


def test_a_batch_is_one_vector_per_input_in_order(server):
    vectors = np.array(post(server, "/embed", {"inputs": TEXTS, "truncate": False}).json(), dtype=np.float32)
    want, _ = openai_vectors(server, TEXTS)
    assert vectors.shape == want.shape and np.abs(vectors - want).max() <= 1e-6


def test_normalize_false_is_the_reference_before_normalization(server, raw_reference):
    vectors = np.array(post(server, "/embed", {"inputs": TEXTS, "normalize": False}).json(), dtype=np.float32)
    want = raw_reference.encode(TEXTS, max_length=8192)["dense_vecs"]
    assert np.abs(vectors - want).max() <= 1e-5
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)  # really not normalized
    normalized, _ = openai_vectors(server, TEXTS)
    assert np.abs(vectors / np.linalg.norm(vectors, axis=1, keepdims=True) - normalized).max() <= 1e-5


def test_embed_sparse_is_the_lexical_weights_by_token_id(server, bge_m3_dir):
    reference = BGEM3FlagModel(str(bge_m3_dir), use_fp16=False, devices="cpu")
    sparse = post(server, "/embed_sparse", {"inputs": TEXTS}).json()
    want = reference.encode(TEXTS, return_dense=False, return_sparse=True)["lexical_weights"]
    assert len(sparse) == len(TEXTS)
    for values, ref in zip(sparse, want):
        assert all(set(v) == {"index", "value"} for v in values)
        assert [v["index"] for v in values] == sorted(int(k) for k in ref)  # ascending token ids
        assert all(abs(v["value"] - float(ref[str(v["index"])])) <= 1e-5 for v in values)


def test_token_ids_round_trip_from_tokenize_and_are_embedded_exactly_as_given(server):
    """TEI's rule: /tokenize's ids (with <s> and </s>, its default) embed as their text does, on
    /embed and on /v1/embeddings; /embed uses ids exactly as given, so ids without the special
    tokens are a different input there, while /v1/embeddings wraps them as it wraps a text."""
    with_specials = [t["id"] for t in post(server, "/tokenize", {"inputs": "hello world"}).json()[0]]
    bare = [t["id"] for t in post(server, "/tokenize", {"inputs": "hello world", "add_special_tokens": False}).json()[0]]
    assert len(with_specials) == len(bare) + 2
    want, text_answer = openai_vectors(server, ["hello world"])

    def close(vector) -> bool:
        return np.abs(np.array(vector, dtype=np.float32) - want).max() <= 1e-6

    tei = post(server, "/embed", {"inputs": with_specials})
    assert close(tei.json()) and tei.headers["x-compute-tokens"] == str(len(with_specials))
    tei_bare = post(server, "/embed", {"inputs": bare})
    assert not close(tei_bare.json()) and tei_bare.headers["x-compute-tokens"] == str(len(bare))
    for ids in (with_specials, bare):
        vectors, answer = openai_vectors(server, [ids])
        assert close(vectors) and answer["usage"]["prompt_tokens"] == text_answer["usage"]["prompt_tokens"]


def test_truncate_cuts_over_long_inputs_and_without_it_they_are_refused(server):
    long_text = "panda " * 9000
    refused = post(server, "/embed", {"inputs": long_text}, status=400).json()
    assert refused["error_type"] == "Validation" and "truncate" in refused["error"]
    cut = post(server, "/embed", {"inputs": long_text, "truncate": True})
    assert cut.headers["x-compute-tokens"] == "8192"
    left = post(server, "/embed", {"inputs": long_text, "truncate": True, "truncation_direction": "Left"}, 400)
    assert left.json()["error_type"] == "Validation"


@pytest.mark.parametrize("body, error_type", [
    ({"inputs": []}, "Empty"),
    ({}, "Validation"),
    ({"inputs": ""}, "Validation"),
    ({"inputs": 3}, "Validation"),
    ({"inputs": "x", "dimensions": 12}, "Validation"),
    ({"inputs": "x", "prompt_name": "query"}, "Validation"),
])
def test_bad_requests_answer_tei_error_body(server, body, error_type):
    got = post(server, "/embed", body, status=400).json()
    assert set(got) == {"error", "error_type"} and got["error_type"] == error_type and got["error"]


def test_nulls_are_defaults(server):
    body = {"inputs": "hello", "truncate": None, "normalize": None, "truncation_direction": None, "dimensions": None}
    assert post(server, "/embed", body).json() == post(server, "/embed", {"inputs": "hello"}).json()
