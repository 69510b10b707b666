"""LangChain's integrations, unmodified: ``OpenAIEmbeddings`` (offline: ``check_embedding_ctx_length=False``)
and the community ``JinaRerank``, which sends ``top_n: null``.

Not here: ``langchain-siliconflow`` requires openai<3, which the pinned openai SDK excludes; and
``langchain_huggingface.HuggingFaceEndpointEmbeddings`` refuses a URL as its model (1.x), so it cannot
be pointed at a TEI server (huggingface_hub's InferenceClient, which it wraps, is tested in
test_huggingface_hub.py)."""

from __future__ import annotations

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


def test_openai_embeddings_offline(server):
    langchain_openai = client_module("langchain_openai")
    # check_embedding_ctx_length=False: by default LangChain downloads OpenAI's tiktoken vocabulary and
    # sends OpenAI token ids, which mean nothing to bge-m3; off, it sends the texts.
    client = langchain_openai.OpenAIEmbeddings(model="bge-m3", base_url=f"{server.url}/v1", api_key=KEY,
                                               check_embedding_ctx_length=False, max_retries=0)
    docs = client.embed_documents(TEXTS)
    query = client.embed_query(QUERY)
    assert all(close(d, w) for d, w in zip(docs, vectors(server, TEXTS)))
    assert close(query, vectors(server, [QUERY])[0])


def test_openai_embeddings_sending_the_model_s_own_token_ids(server, bge_m3_dir):
    """With tiktoken_enabled=False LangChain tokenizes with the model's own tokenizer
    (``tokenizer.encode(text, add_special_tokens=False)``) and sends the ids: bare ids, which
    /v1/embeddings wraps in <s> ... </s> as it does a text, so the vectors are the texts'."""
    langchain_openai = client_module("langchain_openai")
    client = langchain_openai.OpenAIEmbeddings(model="bge-m3", base_url=f"{server.url}/v1", api_key=KEY,
                                               tiktoken_enabled=False, tiktoken_model_name=str(bge_m3_dir),
                                               max_retries=0)
    docs = client.embed_documents(TEXTS)
    assert all(close(d, w) for d, w in zip(docs, vectors(server, TEXTS)))


def test_jina_rerank_with_null_top_n(server, monkeypatch):
    jina_rerank = client_module("langchain_community.document_compressors.jina_rerank")
    from langchain_core.documents import Document

    # JinaRerank has no base-URL option: its endpoint is this module constant, read at each call.
    monkeypatch.setattr(jina_rerank, "JINA_API_URL", f"{server.url}/v1/rerank")
    client = jina_rerank.JinaRerank(model=RERANK_MODEL, jina_api_key=KEY, top_n=None)  # sent as "top_n": null
    got = client.rerank(TEXTS, QUERY)
    want = rerank(server, QUERY, TEXTS)["results"]
    assert [r["index"] for r in got] == [r["index"] for r in want] and len(got) == len(TEXTS)
    assert all(abs(g["relevance_score"] - w["relevance_score"]) <= 1e-6 for g, w in zip(got, want))
    compressed = client.compress_documents([Document(page_content=t) for t in TEXTS], QUERY)
    assert [d.page_content for d in compressed] == [TEXTS[r["index"]] for r in want]
