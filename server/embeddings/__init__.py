"""bge-m3 embeddings, POST /v1/embeddings (OpenAI shape): dense vectors, and bge-m3's sparse and
ColBERT outputs as an extension. The declaration the engine serves it by."""

from server.config import Settings
from server.family import Family
from server.models.store import ModelSpec

SPEC = ModelSpec(
    kind="embedding",
    served_name="bge-m3",
    aliases=("BAAI/bge-m3",),
    repo_id="BAAI/bge-m3",
    required_files=(
        "config.json",
        "model.safetensors|pytorch_model.bin",
        "tokenizer.json|sentencepiece.bpe.model",
        "colbert_linear.pt",
        "sparse_linear.pt",
    ),
    download_size=2_300_000_000,  # approximate: pytorch_model.bin 2.27 GB, tokenizer and heads ~25 MB
)
FAMILY = Family(
    spec=SPEC,
    adapter="server.embeddings.model:BgeM3",
    service="server.embeddings.service:EmbeddingService",
    route="server.embeddings.route",
    batch_budget=Settings.batch_tokens,
    tiny="server.models.tiny_xlmr:build_tiny_bge_m3",
)
