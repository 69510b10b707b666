"""text-embeddings-inference (TEI)'s native API on the same models: its clients (huggingface_hub's
``InferenceClient``, LangChain's and Haystack's Hugging Face embedders, LlamaIndex's
``TextEmbeddingsInference``, LiteLLM's ``huggingface`` rerank) point at this server unchanged.

Each route is a thin translation onto a family's service: /embed, / and /embed_sparse live in
server/embedding/tei.py, /rerank in server/reranker/tei.py. This folder holds what spans both
families: /info and /tokenize (either model may be the one served), TEI's error body, and the paths
that answer errors in that body. Kept apart from the families because a TEI server serves one model,
and here either of two may be the one asked about.
"""

from __future__ import annotations

from server.family import Usage

# Every path TEI's clients call on this server. Errors on them (a 401 and a 413 included) use TEI's
# body {"error", "error_type"}, which its clients read, instead of OpenAI's.
PATHS = frozenset({"/", "/embed", "/embed_sparse", "/rerank", "/tokenize", "/info"})


def compute_headers(usage: Usage, characters: int) -> dict[str, str]:
    """TEI's counts in its response headers: tokens fed to the model, characters sent."""
    return {"x-compute-tokens": str(usage.input_tokens), "x-compute-characters": str(characters)}
