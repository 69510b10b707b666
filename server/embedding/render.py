"""An embeddings request's vectors in OpenAI's answer (``/v1/embeddings``), with bge-m3's sparse and
ColBERT outputs as extensions; TEI's shapes are rendered by server/embedding/tei.py."""

from __future__ import annotations

import base64
from collections.abc import Callable

import numpy as np

from server.embedding.model import EmbedResult
from server.embedding.schema import EmbeddingRequest
from server.embedding.service import Embedded


def encode_vector(vector: np.ndarray, encoding_format: str) -> np.ndarray | str:
    """base64: OpenAI's raw little-endian float32 bytes. float: the array itself, which the JSON
    encoder writes as numbers (server/api/responses.py)."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return np.ascontiguousarray(vector, dtype=np.float32)


def openai_body(embedded: Embedded, req: EmbeddingRequest, token_text: Callable[[int], str]) -> dict:
    """``token_text``: a token id's text, for lexical weights keyed by token (sparse_format token)."""
    tokens = embedded.usage.input_tokens
    return {
        "object": "list",
        "data": [_data(i, r, req, token_text) for i, r in enumerate(embedded.results)],
        "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _data(index: int, result: EmbedResult, req: EmbeddingRequest, token_text: Callable[[int], str]) -> dict:
    data = {"object": "embedding", "index": index, "embedding": encode_vector(result.dense, req.encoding_format)}
    if result.sparse is not None:
        key = token_text if req.sparse_format == "token" else str
        data["sparse_embedding"] = {key(token_id): w for token_id, w in result.sparse.items()}
    if result.colbert is not None:
        colbert = result.colbert
        data["colbert_embedding"] = (
            [encode_vector(v, "base64") for v in colbert] if req.encoding_format == "base64"
            else encode_vector(colbert, "float")
        )
    return data
