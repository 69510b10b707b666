"""The server every client test talks to: tiny bge-m3 and reranker behind an API key, and the raw HTTP
answers a client's figures are checked against. A helper module rather than a conftest.py: a second
conftest.py would replace tests/conftest.py's module under pytest's default import mode."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import ModuleType

import pytest
from conftest import LiveServer, live_server

KEY = "sk-local"
AUTH = {"Authorization": f"Bearer {KEY}"}
EMBEDDING_MODEL = "bge-m3"
RERANK_MODEL = "BAAI/bge-reranker-v2-m3"
TEXTS = ["The giant panda is a bear.", "大熊猫是一种熊。", "Rivers flow into the sea."]
QUERY = "What is a panda?"


def client_module(name: str) -> ModuleType:
    """A client from the [clients] extra. Without the extra its tests skip, saying how to install
    it; in CI (which installs the extra) a missing client is an error, never a silent skip."""
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} comes with the [clients] extra: pip install -e '.[clients]'")


@pytest.fixture(scope="module")
def server(bge_m3_dir, reranker_dir) -> Iterator[LiveServer]:
    """Both models, behind KEY: one server per client file, which imports this fixture by name."""
    with live_server(embedding_model=str(bge_m3_dir), reranker_model=str(reranker_dir), api_keys=[KEY]) as srv:
        yield srv


def embeddings(srv: LiveServer, texts: list[str], **extra) -> dict:
    """/v1/embeddings over raw HTTP: the vectors and usage a client must report."""
    with srv.client(headers=AUTH) as client:
        response = client.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": texts, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def vectors(srv: LiveServer, texts: list[str], **extra) -> list[list[float]]:
    return [d["embedding"] for d in embeddings(srv, texts, **extra)["data"]]


def rerank(srv: LiveServer, query: str, documents: list[str], **extra) -> dict:
    """/v1/rerank over raw HTTP, every document ranked: the scores and token count a client must report."""
    with srv.client(headers=AUTH) as client:
        response = client.post("/v1/rerank", json={"model": RERANK_MODEL, "query": query, "documents": documents,
                                                   "top_n": None, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def scores(srv: LiveServer, query: str, documents: list[str], **extra) -> dict[int, float]:
    return {r["index"]: r["relevance_score"] for r in rerank(srv, query, documents, **extra)["results"]}


def close(a, b, atol: float = 1e-6) -> bool:
    """Vectors equal up to float32 rounding (a batch's rows may differ in the last bits from a lone input's)."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return a.shape == b.shape and bool(np.abs(a - b).max() <= atol)
