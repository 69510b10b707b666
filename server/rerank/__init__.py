"""bge-reranker-v2-m3, POST /v1/rerank (SiliconFlow shape): long documents scored by their best
window. The declaration the engine serves it by."""

from server.config import Settings
from server.family import Family
from server.models.store import ModelSpec

SPEC = ModelSpec(
    kind="reranker",
    served_name="BAAI/bge-reranker-v2-m3",
    aliases=("bge-reranker-v2-m3",),
    repo_id="BAAI/bge-reranker-v2-m3",
    required_files=("config.json", "model.safetensors|pytorch_model.bin", "tokenizer.json|sentencepiece.bpe.model"),
    download_size=2_300_000_000,  # approximate: model.safetensors 2.27 GB, tokenizer ~22 MB
)
FAMILY = Family(
    spec=SPEC,
    adapter="server.rerank.model:BgeReranker",
    service="server.rerank.service:RerankService",
    route="server.rerank.route",
    batch_budget=Settings.batch_tokens,
    tiny="server.models.tiny_xlmr:build_tiny_reranker",
)
