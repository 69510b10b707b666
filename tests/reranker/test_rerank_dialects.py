"""The rerank dialects on one tiny bge-reranker-v2-m3: SiliconFlow's /v1/rerank keeps its contract and
carries Jina's and Cohere's usage beside its own; null means "left out" (as Jina's and Cohere's clients
send it); Cohere's /v2/rerank and TEI's /rerank are translations that score exactly as /v1/rerank."""

from __future__ import annotations

import math

import pytest
from conftest import live_server

MODEL = "BAAI/bge-reranker-v2-m3"
DOCS = ["apple", "banana", "fruit", "vegetable", "car", "tree"]
HEADERS = {"Authorization": "Bearer sk-test"}


@pytest.fixture(scope="module")
def server(reranker_dir):
    with live_server(reranker_model=str(reranker_dir), api_keys=["sk-test"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def short_server(reranker_dir):
    """Pairs of 64 tokens, so long documents make many windows."""
    with live_server(reranker_model=str(reranker_dir), reranker_max_length=64) as srv:
        yield srv


def post(srv, path: str, body: dict, status: int = 200):
    with srv.client(headers=HEADERS) as client:
        response = client.post(path, json=body)
    assert response.status_code == status, response.text
    return response


def v1(srv, body: dict, status: int = 200) -> dict:
    return post(srv, "/v1/rerank", {"model": MODEL, **body}, status).json()


def scores(results: list[dict], key: str = "relevance_score") -> dict[int, float]:
    return {r["index"]: r[key] for r in results}


def assert_same(got: list[dict], want: list[dict], key: str = "relevance_score") -> None:
    """Same documents, order and texts; scores equal up to float32 rounding (a pair's logit may differ
    in its last bits with the batch it was computed in)."""
    assert [r["index"] for r in got] == [r["index"] for r in want]
    assert [r.get("document") for r in got] == [r.get("document") for r in want]
    assert all(abs(g[key] - w["relevance_score"]) <= 1e-6 for g, w in zip(got, want))


# ---- /v1/rerank: the seed's contract, nulls, and every client's usage field --------------------------


def test_null_top_n_returns_every_document_and_null_return_documents_is_the_default(server):
    """LangChain's JinaRerank (and Cohere's clients) send both as null; the seed answered 400."""
    got = v1(server, {"query": "fruit", "documents": DOCS, "top_n": None, "return_documents": None})
    assert sorted(r["index"] for r in got["results"]) == list(range(len(DOCS)))
    assert all("document" not in r for r in got["results"])


def test_null_in_any_optional_field_is_its_default(server):
    nulls = {"max_chunks_per_doc": None, "overlap_tokens": None, "priority": None, "max_tokens_per_doc": None,
             "raw_scores": None}
    plain = v1(server, {"query": "fruit", "documents": DOCS})
    with_nulls = v1(server, {"query": "fruit", "documents": DOCS, **nulls})
    assert_same(with_nulls["results"], plain["results"])
    assert len(plain["results"]) == 4  # the seed's top_n default


@pytest.mark.parametrize("field", ["query", "documents", "model"])
def test_null_in_a_required_field_is_still_a_400(server, field):
    body = {"model": MODEL, "query": "q", "documents": ["d"], field: None}
    error = post(server, "/v1/rerank", body, status=400).json()["error"]
    assert error["param"] == field


def test_jina_usage_and_cohere_meta_carry_the_siliconflow_count(server):
    got = v1(server, {"query": "fruit", "documents": DOCS})
    tokens = got["tokens"]["input_tokens"]
    assert got["tokens"] == {"input_tokens": tokens, "output_tokens": 0} and tokens > len(DOCS)
    assert got["usage"] == {"total_tokens": tokens, "prompt_tokens": tokens}
    assert got["meta"] == {"billed_units": {"search_units": 1}, "tokens": {"input_tokens": tokens, "output_tokens": 0}}


def test_search_units_count_windows_by_the_hundred(short_server):
    """Cohere bills one search unit per 100 documents, each chunk of a long one counting as one."""
    one_each = v1(short_server, {"query": "q", "documents": ["short"] * 100})
    assert one_each["meta"]["billed_units"] == {"search_units": 1}
    long_doc = " ".join(["water"] * 600)  # many 64-token windows
    windows = v1(short_server, {"query": "q", "documents": ["short"] * 99 + [long_doc]})
    assert windows["meta"]["billed_units"]["search_units"] >= 2


def test_raw_scores_are_the_logits_whose_sigmoid_is_the_score(server):
    normal = scores(v1(server, {"query": "fruit", "documents": DOCS, "top_n": None})["results"])
    raw = scores(v1(server, {"query": "fruit", "documents": DOCS, "top_n": None, "raw_scores": True})["results"])
    assert raw.keys() == normal.keys() and any(abs(raw[i] - normal[i]) > 1e-3 for i in raw)  # not the sigmoid
    for i, logit in raw.items():  # two requests: equal up to float32 rounding of the batch
        assert 1 / (1 + math.exp(-logit)) == pytest.approx(normal[i], abs=1e-6)


def test_max_tokens_per_doc_scores_only_the_head_of_each_document(server):
    head = " ".join(["panda"] * 10)
    doc = head + " " + " ".join(["river"] * 200)
    cut = v1(server, {"query": "bears", "documents": [doc], "max_tokens_per_doc": 10})
    alone = v1(server, {"query": "bears", "documents": [head]})
    assert cut["results"][0]["relevance_score"] == pytest.approx(alone["results"][0]["relevance_score"], abs=1e-6)
    assert cut["tokens"] == alone["tokens"]


# ---- Cohere's /v2/rerank ---------------------------------------------------------------------------


def test_cohere_v2_shape_defaults_and_scores(server):
    got = post(server, "/v2/rerank", {"model": "bge-reranker-v2-m3", "query": "fruit", "documents": DOCS}).json()
    assert set(got) == {"id", "results", "meta"}
    assert len(got["results"]) == len(DOCS)  # Cohere's default: every document
    assert all(set(r) == {"index", "relevance_score"} for r in got["results"])
    same = v1(server, {"query": "fruit", "documents": DOCS, "top_n": None})
    assert_same(got["results"], same["results"])
    assert got["meta"] == {"api_version": {"version": "2"}, "billed_units": {"search_units": 1},
                           "tokens": {"input_tokens": same["tokens"]["input_tokens"], "output_tokens": 0}}


def test_cohere_v2_top_n_max_tokens_per_doc_documents_and_integer_priority(server):
    doc = " ".join(["panda"] * 10) + " " + " ".join(["river"] * 200)
    body = {"model": MODEL, "query": "bears", "documents": [doc, "car", "tree"], "top_n": 2,
            "max_tokens_per_doc": 10, "priority": 0, "return_documents": True}
    got = post(server, "/v2/rerank", body).json()
    want = v1(server, {"query": "bears", "documents": [doc, "car", "tree"], "top_n": 2,
                       "max_tokens_per_doc": 10, "return_documents": True})
    assert_same(got["results"], want["results"])
    assert len(got["results"]) == 2
    assert got["meta"]["tokens"]["input_tokens"] == want["tokens"]["input_tokens"]


def test_cohere_v2_reads_4096_tokens_of_a_document_by_default(server):
    doc = " ".join(["panda"] * 5000)
    got = post(server, "/v2/rerank", {"model": MODEL, "query": "q", "documents": [doc]}).json()
    want = v1(server, {"query": "q", "documents": [doc], "max_tokens_per_doc": 4096})
    everything = v1(server, {"query": "q", "documents": [doc]})
    assert got["meta"]["tokens"]["input_tokens"] == want["tokens"]["input_tokens"]
    assert want["tokens"]["input_tokens"] < everything["tokens"]["input_tokens"]


def test_cohere_v2_errors_are_openai_shaped_400_and_404(server):
    assert post(server, "/v2/rerank", {"model": MODEL, "query": "q", "documents": []}, 400).json()["error"]["param"] \
        == "documents"
    error = post(server, "/v2/rerank", {"model": "rerank-v3.5", "query": "q", "documents": ["d"]}, 404).json()
    assert error["error"]["code"] == "model_not_found"


# ---- TEI's /rerank ---------------------------------------------------------------------------------


def test_tei_rerank_shape_order_and_scores(server):
    response = post(server, "/rerank", {"query": "fruit", "texts": DOCS})
    ranks = response.json()
    assert [set(r) for r in ranks] == [{"index", "score"}] * len(DOCS)  # every text, no text unless asked
    assert [r["score"] for r in ranks] == sorted((r["score"] for r in ranks), reverse=True)
    same = v1(server, {"query": "fruit", "documents": DOCS, "top_n": None})
    assert_same(ranks, same["results"], key="score")
    assert response.headers["x-compute-tokens"] == str(same["tokens"]["input_tokens"])


def test_tei_rerank_return_text_raw_scores_and_truncate(server):
    body = {"query": "fruit", "texts": DOCS, "return_text": True, "raw_scores": True, "truncate": True,
            "truncation_direction": "Right"}
    ranks = post(server, "/rerank", body).json()
    raw = v1(server, {"query": "fruit", "documents": DOCS, "top_n": None, "raw_scores": True})
    assert_same([{"index": r["index"], "score": r["score"]} for r in ranks], raw["results"], key="score")
    assert all(r["text"] == DOCS[r["index"]] for r in ranks)


def test_tei_rerank_errors_have_tei_body(server, tmp_path):
    empty = post(server, "/rerank", {"query": "q", "texts": []}, 400).json()
    assert empty == {"error": "`texts` cannot be empty", "error_type": "Empty"}
    missing = post(server, "/rerank", {"texts": ["a"]}, 400).json()
    assert set(missing) == {"error", "error_type"} and missing["error_type"] == "Validation"
    assert "query" in missing["error"]


def test_tei_rerank_without_a_reranker_is_a_tei_404(bge_m3_dir):
    with live_server(embedding_model=str(bge_m3_dir)) as srv, srv.client() as client:
        response = client.post("/rerank", json={"query": "q", "texts": ["a"]})
    assert response.status_code == 404
    assert response.json()["error_type"] == "Validation" and "BAAI/bge-reranker-v2-m3" in response.json()["error"]
