"""/v1/embeddings on a tiny bge-m3 loaded through the real path, checked against FlagEmbedding."""

from __future__ import annotations

import base64
import concurrent.futures
import random

import numpy as np
import pytest
from conftest import live_server
from FlagEmbedding import BGEM3FlagModel

from server.config import AUTO_BATCH_TOKENS

TEXTS = [
    "hello world",
    "The giant panda is a bear native to South Central China.",
    "你好，世界。今天天气很好。",
    "short",
    " ".join(["a longer input that repeats itself"] * 40),
    "日本語のテキストと한국어 텍스트 mixed with English 123.",
]


@pytest.fixture(scope="module")
def reference(bge_m3_dir):
    return BGEM3FlagModel(str(bge_m3_dir), use_fp16=False, devices="cpu")


def embed(client, body: dict) -> dict:
    response = client.post("/v1/embeddings", json={"model": "bge-m3", **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_dense_sparse_and_colbert_equal_the_reference(embed_server, reference):
    with embed_server.client() as client:
        got = embed(client, {"input": TEXTS, "return_sparse": True, "return_colbert": True})
    want = reference.encode(TEXTS, max_length=8192, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    assert [d["index"] for d in got["data"]] == list(range(len(TEXTS)))
    for i, item in enumerate(got["data"]):
        dense = np.array(item["embedding"], dtype=np.float32)
        assert np.abs(dense - want["dense_vecs"][i]).max() <= 1e-5
        assert np.linalg.norm(dense) == pytest.approx(1.0, abs=1e-5)
        sparse, ref_sparse = item["sparse_embedding"], want["lexical_weights"][i]
        assert sparse.keys() == ref_sparse.keys()
        assert all(abs(sparse[k] - float(ref_sparse[k])) <= 1e-5 for k in sparse)
        colbert = np.array(item["colbert_embedding"], dtype=np.float32)
        assert colbert.shape == want["colbert_vecs"][i].shape
        assert np.abs(colbert - want["colbert_vecs"][i]).max() <= 1e-5
    assert sum(len(item["sparse_embedding"]) for item in got["data"]) > len(TEXTS)  # not trivially empty


def test_sparse_keys_as_token_text_match_the_reference_conversion(embed_server, reference):
    with embed_server.client() as client:
        got = embed(client, {"input": TEXTS[1], "return_sparse": True, "sparse_format": "token"})
    ref = reference.encode([TEXTS[1]], return_dense=False, return_sparse=True)["lexical_weights"][0]
    want = reference.convert_id_to_token(ref)
    sparse = got["data"][0]["sparse_embedding"]
    assert sparse.keys() == want.keys()
    assert max(abs(sparse[k] - float(want[k])) for k in sparse) <= 1e-5


def test_extensions_are_absent_unless_asked(embed_server):
    with embed_server.client() as client:
        item = embed(client, {"input": "hello"})["data"][0]
    assert set(item) == {"object", "index", "embedding"}


def test_base64_is_little_endian_float32_of_the_same_vector(embed_server):
    # One text per request: alone, it runs alone, so both answers come from the same forward pass
    # shape and must agree to the bit (batched with others it may differ in the last bits).
    for text in TEXTS[:3]:
        with embed_server.client() as client:
            f = embed(client, {"input": text})["data"][0]
            b = embed(client, {"input": text, "encoding_format": "base64"})["data"][0]
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert np.array_equal(decoded, np.array(f["embedding"], dtype=np.float32))


def test_token_id_inputs_equal_their_text(embed_server, reference):
    ids = [reference.tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS[:2]]
    with embed_server.client() as client:
        from_text = embed(client, {"input": TEXTS[:2]})
        one_list = embed(client, {"input": ids[0]})
        many_lists = embed(client, {"input": ids})
    assert np.allclose(one_list["data"][0]["embedding"], from_text["data"][0]["embedding"], atol=1e-6)
    for a, b in zip(many_lists["data"], from_text["data"]):
        assert np.allclose(a["embedding"], b["embedding"], atol=1e-6)
    assert many_lists["usage"] == from_text["usage"]


def test_usage_counts_the_tokens_fed_to_the_model(embed_server, reference):
    with embed_server.client() as client:
        got = embed(client, {"input": TEXTS})
    want = sum(len(ids) for ids in reference.tokenizer(TEXTS)["input_ids"])  # with <s> and </s>
    assert got["usage"] == {"prompt_tokens": want, "total_tokens": want}
    assert got["object"] == "list" and got["model"] == "bge-m3"


def test_both_model_names_work(embed_server):
    with embed_server.client() as client:
        a = embed(client, {"input": "x", "model": "BAAI/bge-m3"})
        b = embed(client, {"input": "x", "model": "bge-m3"})
    assert a["data"][0]["embedding"] == b["data"][0]["embedding"]
    assert a["model"] == "BAAI/bge-m3"


def test_dimensions_equal_to_the_model_is_accepted(embed_server):
    with embed_server.client() as client:
        dim = len(embed(client, {"input": "x"})["data"][0]["embedding"])
        assert len(embed(client, {"input": "x", "dimensions": dim})["data"][0]["embedding"]) == dim
        response = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "x", "dimensions": dim - 1})
    assert response.status_code == 400 and response.json()["error"]["param"] == "dimensions"


def test_a_vector_does_not_depend_on_its_batch_mates(embed_server):
    """The same text alone and inside a concurrent burst of mixed-length inputs from many clients."""
    rng = random.Random(7)
    words = "panda bear bamboo 你好 世界 river mountain 한국어 テキスト quick brown fox".split()
    burst = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 300))) for _ in range(60)]
    probe = TEXTS[1]
    with embed_server.client() as client:
        alone = np.array(embed(client, {"input": probe})["data"][0]["embedding"])

    def one_client(chunk: list[str]) -> list:
        with embed_server.client() as c:
            return [np.array(d["embedding"]) for d in embed(c, {"input": chunk + [probe]})["data"]][-1:]

    before = embed_server.runtime.served["embedding"].batcher.stats.batches
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one_client, [burst[i::12] for i in range(12)]))
    stats = embed_server.runtime.served["embedding"].batcher.stats
    assert stats.batches - before < 12 * 6  # requests really shared forward passes
    for [vector] in results:
        assert np.abs(vector - alone).max() <= 1e-5


def test_on_cpu_a_text_longer_than_the_batch_budget_is_embedded_alone(embed_server):
    batcher = embed_server.runtime.served["embedding"].batcher
    assert batcher.max_batch_cost == AUTO_BATCH_TOKENS["cpu"]  # --max-batch-tokens 0: by device
    long_text = " ".join(["panda bamboo river"] * 600)
    with embed_server.client() as client:
        alone = embed(client, {"input": long_text})
        assert alone["usage"]["prompt_tokens"] > batcher.max_batch_cost
        with_short = embed(client, {"input": [long_text, "short one", "another short one"]})["data"]
    assert np.abs(np.array(with_short[0]["embedding"]) - np.array(alone["data"][0]["embedding"])).max() <= 1e-5


# ---- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, param",
    [
        ({"input": ""}, "input"),
        ({"input": ["ok", ""]}, "input"),
        ({"input": []}, "input"),
        ({"input": 5}, "input"),
        ({"input": [1, "a"]}, "input"),
        ({"input": [[1, 2], []]}, "input"),
        ({"input": [-1]}, "input"),
        ({"input": [10**9]}, "input"),
        ({"input": None}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "model": 3}, "model"),
        ({"input": "x", "model": None}, "model"),
    ],
)
def test_bad_input_is_a_400_in_openai_shape(embed_server, body, param):
    with embed_server.client() as client:
        response = client.post("/v1/embeddings", json={"model": "bge-m3", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_a_value_outside_the_choices_is_named_in_the_400(embed_server):
    with embed_server.client() as client:
        response = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "x", "encoding_format": "float16"})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "'float'" in message and "'base64'" in message and message.endswith("not 'float16'.")


def test_missing_model_field_is_a_400(embed_server):
    with embed_server.client() as client:
        response = client.post("/v1/embeddings", json={"input": "x"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"


def test_unknown_model_is_a_404_model_not_found(embed_server):
    with embed_server.client() as client:
        response = client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_malformed_json_is_a_clear_4xx(embed_server):
    with embed_server.client() as client:
        response = client.post("/v1/embeddings", content=b'{"input": "x",', headers={"content-type": "application/json"})
    assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]


def _long_text(reference, tokens: int) -> str:
    """A text of exactly `tokens` tokens including <s> and </s>."""
    unit = "panda "
    per = len(reference.tokenizer(unit * 50, add_special_tokens=False)["input_ids"]) / 50
    text = unit * int(tokens / per)
    while len(reference.tokenizer(text)["input_ids"]) < tokens:
        text += unit
    while len(reference.tokenizer(text)["input_ids"]) > tokens:
        text = text[: -len(unit)]
    assert len(reference.tokenizer(text)["input_ids"]) == tokens
    return text


@pytest.mark.parametrize("field,value", [("return_sparse", "yes"), ("truncate", "false"), ("normalize", 1),
                                         ("return_colbert", "true")])
def test_flags_must_be_json_booleans(embed_server, field, value):
    """Strict, as OpenAI's API is: "false" (a truthy string) read as a flag is how a client gets
    the opposite of what it sent. Multipart forms (transcription) take "true"/"false", as forms must."""
    with embed_server.client() as client:
        response = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "hi", field: value})
        good = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "hi", field: False})
    assert response.status_code == 400, response.text[:200]
    assert field in response.json()["error"]["message"] or response.json()["error"]["param"] == field
    assert good.status_code == 200


def test_a_text_far_over_the_limit_is_reported_at_the_length_sent(embed_server):
    """Texts far over the limit are cut by characters before tokenizing; the message still says how
    long the text sent was, not the cut."""
    with embed_server.client() as client:
        response = client.post("/v1/embeddings", json={"model": "bge-m3", "input": ["ok", "x" * 1_000_000]})
    assert response.status_code == 400
    assert "input[1] has 1000000 characters" in response.json()["error"]["message"], response.text


def test_over_length_is_400_and_truncation_only_when_asked(embed_server, reference):
    limit = _long_text(reference, 8192)
    over = _long_text(reference, 8193) if len(reference.tokenizer(limit + " panda")["input_ids"]) != 8193 else limit + " panda"
    with embed_server.client() as client:
        at_limit = embed(client, {"input": limit})
        response = client.post("/v1/embeddings", json={"model": "bge-m3", "input": over})
        truncated = embed(client, {"input": over, "truncate": True})
    assert at_limit["usage"]["prompt_tokens"] == 8192
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert truncated["usage"]["prompt_tokens"] == 8192
    want = reference.encode([over], max_length=8192)["dense_vecs"][0]
    assert np.abs(np.array(truncated["data"][0]["embedding"]) - want).max() <= 1e-5


def test_too_many_inputs_is_a_400(bge_m3_dir):
    with live_server(embedding_model=str(bge_m3_dir), max_inputs_per_request=3) as srv, srv.client() as client:
        response = client.post("/v1/embeddings", json={"model": "bge-m3", "input": ["a"] * 4})
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"


def test_body_over_the_cap_is_413(bge_m3_dir):
    with live_server(embedding_model=str(bge_m3_dir), max_body_bytes=2048) as srv, srv.client() as client:
        declared = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "x" * 5000})

        def chunks():
            yield b'{"model": "bge-m3", "input": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        streamed = client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "payload_too_large"


def test_full_queue_is_503_with_retry_after_and_accepted_work_completes(bge_m3_dir):
    with live_server(embedding_model=str(bge_m3_dir), max_queue=4, max_inputs_per_request=2) as srv:
        batcher = srv.runtime.served["embedding"].batcher
        batcher.pause()
        with concurrent.futures.ThreadPoolExecutor(2) as pool, srv.client() as client:
            accepted = [pool.submit(client.post, "/v1/embeddings", json={"model": "bge-m3", "input": ["a", "b"]})
                        for _ in range(2)]
            while batcher.queue_depth < 4:
                pass
            refused = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "c"})
            batcher.resume()
            done = [f.result() for f in accepted]
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "overloaded"
    assert [r.status_code for r in done] == [200, 200]


def test_api_keys_are_required_on_v1_routes_when_configured(bge_m3_dir):
    with live_server(embedding_model=str(bge_m3_dir), api_keys=["secret-1", "secret-2"]) as srv, srv.client() as c:
        body = {"model": "bge-m3", "input": "x"}
        missing = c.post("/v1/embeddings", json=body)
        malformed = c.post("/v1/embeddings", json=body, headers={"Authorization": "secret-1"})
        wrong = c.post("/v1/embeddings", json=body, headers={"Authorization": "Bearer nope"})
        models = c.get("/v1/models")
        ok = c.post("/v1/embeddings", json=body, headers={"Authorization": "Bearer secret-2"})
        health = c.get("/health")
    for response in (missing, malformed, wrong, models):
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
    assert ok.status_code == 200 and health.status_code == 200


def test_vllm_s_embed_dtype_and_endianness_are_honoured(embed_server):
    """vLLM's fields change how the numbers are written; they are honoured, never ignored: base64
    in float16 is half the bytes, in bfloat16 the top half of each float32, big-endian on request."""
    with embed_server.client() as client:
        def vector(**fields):
            return embed(client, {"model": "bge-m3", "input": "hello", **fields})["data"][0]["embedding"]

        exact = np.array(vector(), dtype=np.float32)
        assert np.array_equal(np.frombuffer(base64.b64decode(vector(encoding_format="base64")), "<f4"), exact)
        big = np.frombuffer(base64.b64decode(vector(encoding_format="base64", endianness="big")), ">f4")
        assert np.array_equal(big, exact)
        half_bytes = base64.b64decode(vector(encoding_format="base64", embed_dtype="float16"))
        assert len(half_bytes) == 2 * exact.size
        assert np.array_equal(np.frombuffer(half_bytes, "<f2"), exact.astype(np.float16))
        bf16 = np.frombuffer(base64.b64decode(vector(encoding_format="base64", embed_dtype="bfloat16")), "<u2")
        widened = (bf16.astype(np.uint32) << 16).view(np.float32)
        assert np.abs(widened - exact).max() <= np.abs(exact).max() * 2 ** -8
        assert np.array_equal(np.array(vector(embed_dtype="float16"), dtype=np.float32),
                              exact.astype(np.float16).astype(np.float32))
        bad = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "x", "embed_dtype": "fp8_e4m3"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "embed_dtype"


def test_vllm_s_use_activation_is_normalize(embed_server):
    with embed_server.client() as client:
        def vector(**fields):
            return embed(client, {"model": "bge-m3", "input": "hello", **fields})["data"][0]["embedding"]

        assert vector(use_activation=False) == vector(normalize=False) != vector()
        assert vector(use_activation=True) == vector()
        clash = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "x", "use_activation": False,
                                                     "normalize": True})
        assert clash.status_code == 400 and clash.json()["error"]["message"].startswith("use_activation and normalize")


def test_vllm_s_truncate_prompt_tokens_keeps_the_last_tokens(embed_server):
    """As vLLM's left truncation: the last k tokens, <s> and </s> counted and kept."""
    text = "the quick brown fox jumps over the lazy dog again and again"
    with embed_server.client() as client:
        ids = [t["id"] for t in client.post("/tokenize", json={"inputs": text}).json()[0]]
        assert len(ids) > 8
        cut = embed(client, {"model": "bge-m3", "input": text, "truncate_prompt_tokens": 6})
        assert cut["usage"]["prompt_tokens"] == 6
        kept = ids[:1] + ids[-5:]  # <s>, the last four words' tokens and </s>
        assert cut["data"][0]["embedding"] == embed(client, {"model": "bge-m3", "input": kept})["data"][0]["embedding"]
        whole = embed(client, {"model": "bge-m3", "input": text})
        assert embed(client, {"model": "bge-m3", "input": text, "truncate_prompt_tokens": -1})["data"] == whole["data"]
        bad = client.post("/v1/embeddings", json={"model": "bge-m3", "input": text, "truncate_prompt_tokens": 1})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "truncate_prompt_tokens"
