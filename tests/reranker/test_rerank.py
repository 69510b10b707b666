"""/v1/rerank on a tiny bge-reranker-v2-m3 loaded through the real path, checked against FlagReranker."""

from __future__ import annotations

import concurrent.futures
import math
import random

import pytest
import torch
from conftest import live_server
from FlagEmbedding import FlagReranker

MODEL = "BAAI/bge-reranker-v2-m3"
SHORT_LIMIT = 64  # pair length of the chunking server: small, so windows are easy to count


@pytest.fixture(scope="module")
def reference(reranker_dir):
    return FlagReranker(str(reranker_dir), use_fp16=False, devices="cpu")


@pytest.fixture(scope="module")
def server(reranker_dir):
    with live_server(reranker_model=str(reranker_dir), api_keys=["sk-test"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def short_server(reranker_dir):
    with live_server(reranker_model=str(reranker_dir), reranker_max_length=SHORT_LIMIT) as srv:
        yield srv


def rerank(srv, body: dict, status: int = 200) -> dict:
    with srv.client(headers={"Authorization": "Bearer sk-test"}) as client:
        response = client.post("/v1/rerank", json={"model": MODEL, **body})
    assert response.status_code == status, response.text
    return response.json()


def by_index(result: dict) -> dict[int, float]:
    return {r["index"]: r["relevance_score"] for r in result["results"]}


# ---- an independent statement of the documented windowing rule, for the reference side ----------


def tokens(reference, text: str) -> list[int]:
    return reference.tokenizer(text, add_special_tokens=False)["input_ids"]


def windows(query_ids, doc_ids, limit, overlap, max_chunks):
    query_ids = query_ids[: limit * 3 // 4]
    room = limit - len(query_ids) - 4  # <s> q </s></s> d </s>
    if len(doc_ids) <= room:
        return query_ids, [doc_ids]
    step = room - min(overlap, room // 2)
    starts = list(range(0, max(1, len(doc_ids) - room + step), step))[:max_chunks]
    return query_ids, [doc_ids[s : s + room] for s in starts]


@torch.inference_mode()
def reference_best(reference, query: str, doc: str, limit: int, overlap: int = 80, max_chunks: int = 1024):
    """(best sigmoid score over the windows, tokens fed), each pair run alone through the reference model."""
    q, parts = windows(tokens(reference, query), tokens(reference, doc), limit, overlap, max_chunks)
    logits, fed = [], 0
    for part in parts:
        ids = [0, *q, 2, 2, *part, 2]
        fed += len(ids)
        logits.append(reference.model(input_ids=torch.tensor([ids])).logits.item())
    return 1 / (1 + math.exp(-max(logits))), fed


def text_of(reference, n: int, word: str = "panda") -> str:
    """A text of exactly n tokens (each ' word' is one token with the tiny tokenizer)."""
    text = " ".join([word] * n)
    assert len(tokens(reference, text)) == n
    return text


# ---- fidelity --------------------------------------------------------------------------------------

DOCS = [
    "The giant panda is a bear native to South Central China.",
    "apple",
    "大熊猫是一种熊，生活在中国中南部。",
    "Rivers flow into the sea and mountains rise above the clouds.",
    "",
    "bamboo " * 40,
]


def test_scores_equal_flagreranker_for_documents_that_fit(server, reference):
    query = "what is a panda?"
    got = rerank(server, {"query": query, "documents": DOCS, "top_n": len(DOCS)})
    want = reference.compute_score([[query, d] for d in DOCS], normalize=True)
    scores = by_index(got)
    assert sorted(scores) == list(range(len(DOCS)))
    for i, w in enumerate(want):
        assert abs(scores[i] - w) <= 1e-5


def test_long_document_scores_its_best_window(server, reference):
    words = "panda bamboo river mountain 熊猫 竹子 forest cloud".split()
    rng = random.Random(3)
    long_doc = " ".join(rng.choice(words) for _ in range(1500))
    query = "where do pandas live"
    got = rerank(server, {"query": query, "documents": [long_doc, "short one"], "top_n": 2})
    want, fed = reference_best(reference, query, long_doc, 512)
    short, short_fed = reference_best(reference, query, "short one", 512)
    assert abs(by_index(got)[0] - want) <= 1e-5
    assert got["tokens"] == {"input_tokens": fed + short_fed, "output_tokens": 0}


def test_one_chunk_per_document_is_flagreranker_truncation(server, reference):
    """max_chunks_per_doc 1 scores what compute_score scores: the pair cut at 512 tokens (the
    benchmark compares with FlagReranker and Infinity on this)."""
    rng = random.Random(4)
    query = "where do pandas live"
    long_doc = " ".join(rng.choice("panda bamboo river mountain forest cloud".split()) for _ in range(1500))
    got = rerank(server, {"query": query, "documents": [long_doc], "max_chunks_per_doc": 1})
    want = reference.compute_score([[query, long_doc]], normalize=True)[0]
    assert len(tokens(reference, long_doc)) > 1000  # long enough to be cut
    assert abs(got["results"][0]["relevance_score"] - want) <= 1e-5
    assert got["tokens"]["input_tokens"] == 512


# ---- chunking edges (pair length 64) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["exact_fit", "one_over", "overlap_0", "overlap_80", "one_chunk", "whitespace", "cjk", "long_query"],
)
def test_chunking_edges(short_server, reference, case):
    query = "panda"
    q_len = len(tokens(reference, query))
    room = SHORT_LIMIT - q_len - 4
    overlap, max_chunks = 80, 1024
    doc = {
        "exact_fit": lambda: text_of(reference, room),
        "one_over": lambda: text_of(reference, room + 1, "bamboo"),
        "overlap_0": lambda: text_of(reference, 5 * room, "water"),
        "overlap_80": lambda: text_of(reference, 5 * room, "water"),
        "one_chunk": lambda: text_of(reference, 5 * room, "bear"),
        "whitespace": lambda: "   \n\t  ",
        "cjk": lambda: "大熊猫是一种熊，生活在中国中南部的山区竹林里。" * 12,
        "long_query": lambda: text_of(reference, 3 * room, "model"),
    }[case]()
    if case == "overlap_0":
        overlap = 0
    if case == "one_chunk":
        max_chunks = 1
    if case == "long_query":
        query = text_of(reference, SHORT_LIMIT - 4, "mountain")  # would leave no room: cut to 3/4
    body = {"query": query, "documents": [doc], "overlap_tokens": overlap, "max_chunks_per_doc": max_chunks}
    got = rerank(short_server, body)
    want, fed = reference_best(reference, query, doc, SHORT_LIMIT, overlap, max_chunks)
    assert abs(got["results"][0]["relevance_score"] - want) <= 1e-5
    assert got["tokens"]["input_tokens"] == fed
    # The scenario is the edge it claims to be.
    expected_windows = {"exact_fit": 1, "one_over": 2, "one_chunk": 1, "whitespace": 1}
    if case in expected_windows:
        parts = windows(tokens(reference, query), tokens(reference, doc), SHORT_LIMIT, overlap, max_chunks)[1]
        assert len(parts) == expected_windows[case]


def test_overlap_changes_the_number_of_windows(short_server, reference):
    doc = text_of(reference, 400, "water")
    none = rerank(short_server, {"query": "panda", "documents": [doc], "overlap_tokens": 0})
    full = rerank(short_server, {"query": "panda", "documents": [doc], "overlap_tokens": 80})
    assert full["tokens"]["input_tokens"] > none["tokens"]["input_tokens"]


# ---- the response contract -------------------------------------------------------------------------


def test_top_n_ordering_index_and_return_documents(server, reference):
    query = "fruit"
    docs = ["apple", "banana", "fruit", "vegetable", "car", "tree"]
    want = reference.compute_score([[query, d] for d in docs], normalize=True)
    top2 = rerank(server, {"query": query, "documents": docs, "top_n": 2})
    everything = rerank(server, {"query": query, "documents": docs, "top_n": 100, "return_documents": True})
    default = rerank(server, {"query": query, "documents": docs})
    ranked = sorted(range(len(docs)), key=lambda i: -want[i])
    assert [r["index"] for r in top2["results"]] == ranked[:2]
    assert [r["index"] for r in everything["results"]] == ranked
    assert len(default["results"]) == 4  # the seed's default top_n
    scores = [r["relevance_score"] for r in everything["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(r["document"]["text"] == docs[r["index"]] for r in everything["results"])
    assert all("document" not in r for r in top2["results"])
    assert top2["id"] != everything["id"]


def test_document_objects_as_jina_and_cohere_send_them(server):
    plain = rerank(server, {"query": "fruit", "documents": ["apple", "car"], "return_documents": True})
    objects = rerank(server, {"query": "fruit", "documents": [{"text": "apple"}, {"text": "car"}],
                              "return_documents": True})
    assert plain["results"] == objects["results"]


def test_the_seed_curl_example_as_written(server):
    body = {
        "model": "BAAI/bge-reranker-v2-m3",
        "query": "Apple",
        "documents": ["apple", "banana", "fruit", "vegetable"],
        "top_n": 4,
        "return_documents": False,
        "max_chunks_per_doc": 1024,
        "overlap_tokens": 80,
    }
    with server.client() as client:
        response = client.post("/v1/rerank", json=body, headers={
            "Authorization": "Bearer sk-test", "Content-Type": "application/json"})
    assert response.status_code == 200
    got = response.json()
    # SiliconFlow's keys, with Jina's `usage` and `model` and Cohere's `meta` beside them
    # (tests/reranker/test_rerank_dialects.py).
    assert set(got) == {"id", "model", "results", "tokens", "usage", "meta"} and isinstance(got["id"], str)
    assert got["model"] == "BAAI/bge-reranker-v2-m3"
    assert set(got["tokens"]) == {"input_tokens", "output_tokens"}
    assert sorted(r["index"] for r in got["results"]) == [0, 1, 2, 3]
    for r in got["results"]:
        assert set(r) == {"index", "relevance_score"} and 0 < r["relevance_score"] < 1


def test_both_model_names_and_unknown_model(server):
    short = rerank(server, {"model": "bge-reranker-v2-m3", "query": "q", "documents": ["d"]})
    assert short["results"][0]["index"] == 0
    # The answer names the model as the request did (Jina, vLLM and Infinity answer with it).
    assert short["model"] == "bge-reranker-v2-m3"
    assert rerank(server, {"model": "BAAI/bge-reranker-v2-m3", "query": "q", "documents": ["d"]})["model"] == \
        "BAAI/bge-reranker-v2-m3"
    unknown = rerank(server, {"model": "rerank-english-v3.0", "query": "q", "documents": ["d"]}, status=404)
    assert unknown["error"]["code"] == "model_not_found"


def test_a_score_does_not_depend_on_its_batch_mates(server):
    rng = random.Random(11)
    words = "panda bear bamboo 你好 世界 river mountain 한국어 テキスト quick brown fox".split()
    probe = {"query": "where do pandas live", "documents": [DOCS[0], DOCS[2]], "top_n": 2}
    alone = by_index(rerank(server, probe))

    def one_client(seed: int) -> dict[int, float]:
        noise = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 700))) for _ in range(6)]
        body = {"query": probe["query"], "documents": noise + probe["documents"], "top_n": 8}
        scores = by_index(rerank(server, body))
        return {0: scores[6], 1: scores[7]}

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one_client, range(20)))
    for scores in results:
        assert abs(scores[0] - alone[0]) <= 1e-5 and abs(scores[1] - alone[1]) <= 1e-5


# ---- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, param",
    [
        ({"query": "", "documents": ["a"]}, "query"),
        ({"query": "   ", "documents": ["a"]}, "query"),
        ({"query": "q", "documents": []}, "documents"),
        ({"query": "q", "documents": ["a", 5]}, "documents"),
        ({"query": "q", "documents": [{"txt": "a"}]}, "documents"),
        ({"query": "q", "documents": "a"}, "documents"),
        ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
        ({"query": "q", "documents": ["a"], "top_n": "3"}, "top_n"),
        ({"query": "q", "documents": ["a"], "max_chunks_per_doc": 0}, "max_chunks_per_doc"),
        ({"query": "q", "documents": ["a"], "overlap_tokens": 81}, "overlap_tokens"),
        ({"query": "q", "documents": ["a"], "overlap_tokens": -1}, "overlap_tokens"),
        ({"query": 3, "documents": ["a"]}, "query"),
        ({"documents": ["a"]}, "query"),
    ],
)
def test_bad_requests_are_400(server, body, param):
    error = rerank(server, body, status=400)["error"]
    assert error["param"].split(".")[0] == param and error["type"] == "invalid_request_error"
    assert "[" not in error["param"] and "Object" not in error["param"]


def test_request_limits_are_settings(reranker_dir):
    with live_server(reranker_model=str(reranker_dir), reranker_max_documents=3, reranker_max_tokens=200) as srv:
        with srv.client() as client:
            many = client.post("/v1/rerank", json={"model": MODEL, "query": "q", "documents": ["a"] * 4})
            heavy = client.post("/v1/rerank", json={"model": MODEL, "query": "q", "documents": ["panda " * 300]})
    assert many.status_code == 400 and many.json()["error"]["param"] == "documents"
    assert heavy.status_code == 413 and heavy.json()["error"]["code"] == "payload_too_large"


def test_priority_is_accepted_and_changes_no_score(server):
    body = {"query": "where do pandas live", "documents": ["bamboo forests", "the sea", "mountains"], "top_n": 3}
    scores = {p: rerank(server, {**body, "priority": p})["results"] for p in ("interactive", "normal", "background")}
    for p in ("interactive", "background"):  # equal up to float noise: batch mates may differ
        assert [r["index"] for r in scores[p]] == [r["index"] for r in scores["normal"]]
        assert all(abs(a["relevance_score"] - b["relevance_score"]) < 1e-6 for a, b in zip(scores[p], scores["normal"]))


def test_vllm_s_use_activation_false_is_raw_scores(server):
    body = {"model": "bge-reranker-v2-m3", "query": "q", "documents": ["a", "b c"]}
    raw = rerank(server, {**body, "raw_scores": True})["results"]
    assert rerank(server, {**body, "use_activation": False})["results"] == raw
    assert rerank(server, {**body, "use_activation": True})["results"] == rerank(server, body)["results"] != raw
    clash = rerank(server, {**body, "use_activation": False, "raw_scores": False}, status=400)
    assert clash["error"]["message"].startswith("use_activation and raw_scores")
