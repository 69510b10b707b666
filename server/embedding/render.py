"""An embeddings request's vectors in OpenAI's answer (``/v1/embeddings``), with bge-m3's sparse and
ColBERT outputs as extensions; TEI's shapes are rendered by server/embedding/tei.py."""

from __future__ import annotations

import base64
from collections.abc import Callable

import numpy as np
import torch

from server.embedding.model import EmbedResult
from server.embedding.schema import EmbeddingRequest
from server.embedding.service import Embedded


def encode_vector(vector: np.ndarray, encoding_format: str, embed_dtype: str = "float32",
                  endianness: str = "native") -> np.ndarray | str:
    """base64: the raw bytes, float32 little-endian by default (OpenAI's), else in vLLM's
    ``embed_dtype`` and ``endianness`` (native is this server's: little on every CPU it runs on).
    float: the array itself, which the JSON encoder writes as numbers (server/api/responses.py),
    rounded to ``embed_dtype`` first."""
    vector = np.ascontiguousarray(vector, dtype=np.float32)
    if embed_dtype == "bfloat16":  # numpy has no bfloat16: torch rounds to it, its bits are the top half of float32's
        rounded = torch.from_numpy(vector).to(torch.bfloat16)
        bits, as_float = rounded.view(torch.int16).numpy().view(np.uint16), rounded.float().numpy()
    else:  # float32, the default, is taken as it is: no copy on the common path
        bits = vector.astype(np.float16 if embed_dtype == "float16" else np.float32, copy=False)
        as_float = bits.astype(np.float32, copy=False)
    if encoding_format == "base64":
        order = ">" if endianness == "big" else "<"
        return base64.b64encode(bits.astype(bits.dtype.newbyteorder(order)).tobytes()).decode("ascii")
    return as_float


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
    data = {"object": "embedding", "index": index,
            "embedding": encode_vector(result.dense, req.encoding_format, req.embed_dtype, req.endianness)}
    if result.sparse is not None:
        key = token_text if req.sparse_format == "token" else str
        data["sparse_embedding"] = {key(token_id): w for token_id, w in result.sparse.items()}
    if result.colbert is not None:
        colbert = result.colbert
        data["colbert_embedding"] = (
            [encode_vector(v, "base64", req.embed_dtype, req.endianness) for v in colbert]
            if req.encoding_format == "base64" else encode_vector(colbert, "float", req.embed_dtype)
        )
    return data
