"""Self-hosted, hosted-API-compatible inference server: embeddings, rerank, transcription."""

__version__ = "0.1.0"
