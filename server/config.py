"""The one settings object. Every field is an env var (``INFERENCE_<FIELD>``) and a CLI flag.

The CLI (server/cli.py) builds its flags from these fields, so a setting is declared once, here,
with its help text. Nothing is built at import time: ``create_app(settings)`` takes an instance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "INFERENCE_"

# Hub ids served by default; "none" turns a model off.
DEFAULT_EMBEDDING_MODEL = "BAAI/bge-m3"
DEFAULT_RERANKER_MODEL = "BAAI/bge-reranker-v2-m3"
DEFAULT_ASR_MODEL = "FunAudioLLM/SenseVoiceSmall"

# Padded tokens per forward pass when --max-batch-tokens is 0, by device type. On a CPU a pass costs
# more per token once it holds more than 1-2k padded tokens (its activations no longer stay in cache:
# +20-50% per token at 4k than at 1k, at small and base size), so bigger batches only add latency
# there; a GPU needs big passes to be kept busy.
AUTO_BATCH_TOKENS = {"cpu": 1024, "cuda": 16384}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- network ---
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")

    # --- compute ---
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N. auto picks cuda when available.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="Weights/activations dtype. auto = float16 on CUDA, float32 on CPU (float16 is refused on "
        "CPU). bfloat16 on a CPU with AVX512-BF16 or AMX runs packed oneDNN kernels around a float32 "
        "residual stream: about 2x float32's throughput and half its weight memory, outputs close to "
        "float32's but not identical.",
    )
    cpu_threads: int = Field(0, ge=0, description="torch intra-op threads on CPU (0 = torch's default).")

    # --- models ---
    embedding_model: str = Field(
        DEFAULT_EMBEDDING_MODEL, description="bge-m3: a local directory, a hub id, or none."
    )
    reranker_model: str = Field(
        DEFAULT_RERANKER_MODEL, description="bge-reranker-v2-m3: a local directory, a hub id, or none."
    )
    asr_model: str = Field(
        DEFAULT_ASR_MODEL, description="SenseVoiceSmall: a local directory, a hub id, or none."
    )
    models_dir: Path = Field(Path("models"), description="Where models/<name> are looked up and downloaded to.")
    offline: bool = Field(False, description="Never touch the network; fail at start if a model is missing.")
    demo: bool = Field(
        False, description="Serve tiny random-weight models (meaningless outputs) to try the API without weights."
    )

    # --- access ---
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Accepted Bearer keys (flag repeatable; env comma-separated). None = open server.",
    )

    protect_metrics: bool = Field(
        False, description="Require an API key on /metrics too (the /health and /ready probes stay open)."
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins whose web pages may call the API from a browser (CORS), comma-separated; * = any. "
        "None = CORS off. Preflights never need the API key; the calls themselves still do.",
    )

    # --- batching and limits ---
    max_batch_tokens: int = Field(
        0, ge=0, description="Padded tokens per forward pass (rows x longest row); a longer item runs alone. "
        "0 = by device: 16384 on a GPU, 1024 on CPU, where bigger passes are slower per token.",
    )
    max_batch_size: int = Field(32, ge=1, description="Items per forward pass.")
    max_queue: int = Field(4096, ge=1, description="Items waiting per model before new work gets 503.")
    batch_lookahead: int = Field(
        64, ge=1, description="Queued items considered when grouping by length; bounds reordering."
    )
    batch_min_padding_efficiency: float = Field(
        0.85, ge=0, le=1,
        description="A batch grows only while padding stays under 1 minus this share of a forward pass's time, "
        "counting the pass's fixed cost, which the batcher learns (padding is wasted compute).",
    )
    max_pass_seconds: float = Field(
        3.0, ge=0, description="A forward pass stops growing once the batcher's fit of past passes says it would "
        "take longer (0 = no bound; one item always runs): a request that arrives mid-pass waits for the pass in "
        "flight, and at full size on a CPU a pass over the whole audio budget takes 16 s.",
    )
    batch_scheduling: Literal["fair", "fifo"] = Field(
        "fair", description="fair: every request with work waiting gets its share of each forward pass, weighed by "
        "its priority, so a short request never waits behind a long one; fifo: oldest items first, priorities "
        "ignored.",
    )
    deadline_scheduling: bool = Field(
        True, description="Every request has a deadline (--request-timeout, or sooner with the header "
        "X-Request-Timeout): refuse at once (503 + Retry-After) a request the batcher forecasts would miss it, "
        "serve the earliest deadlines first when the load would make some late, and fail early (503 "
        "deadline_exceeded) a request that can no longer make it. Off: queue while there is room, 504 at the "
        "deadline.",
    )
    request_timeout: float = Field(
        300.0, gt=0, description="Seconds a request may take before 504: its deadline, unless it asks for a shorter "
        "one (X-Request-Timeout, or the openai SDK's own timeout: X-Stainless-Read-Timeout).",
    )
    shutdown_timeout: float = Field(
        30.0, gt=0, description="Seconds to finish in-flight and queued work after SIGTERM before exiting."
    )
    max_inputs_per_request: int = Field(2048, ge=1, description="Inputs in one embeddings request.")
    embedding_max_tokens: int = Field(
        8192, ge=2, description="Longest input (tokens, incl. <s></s>) bge-m3 accepts; longer is 400 unless truncated."
    )
    reranker_max_length: int = Field(
        512, ge=64, le=8192,
        description="Tokens of one (query, document window) pair fed to the reranker, as FlagReranker's max_length.",
    )
    rerank_max_documents: int = Field(1000, ge=1, description="Documents in one rerank request.")
    rerank_max_tokens: int = Field(
        1_000_000, ge=1, description="Tokens one rerank request may feed the model, over all its pairs (413 past it)."
    )
    asr_max_upload_bytes: int = Field(
        50 * 1024 * 1024, ge=1024, description="Largest audio upload, in bytes (413 past it, checked while it streams)."
    )
    asr_max_audio_seconds: float = Field(3600.0, gt=0, description="Longest audio accepted, in decoded seconds.")
    asr_max_decoding: int = Field(
        0, ge=0, description="Uploads prepared (decoded, checked for speech) at once (0 = twice the CPU cores); "
        "others wait by priority, up to 64 per slot, past that 503 + Retry-After."
    )
    asr_max_audio_held_seconds: float = Field(
        14400.0, gt=0, description="Decoded audio the uploads being prepared may hold in memory together, in "
        "seconds (64 KB each); past it, 503 + Retry-After. At least --asr-max-audio-seconds.",
    )
    asr_max_segment_seconds: float = Field(
        30.0, gt=1, le=120, description="Longest piece long audio is cut into at speech pauses."
    )
    asr_max_batch_seconds: float = Field(
        240.0, gt=0, description="Audio seconds per SenseVoice forward pass (rows x longest row)."
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest JSON request body, in bytes (413 past it)."
    )
    header_read_timeout: float = Field(
        10.0, gt=0, description="Seconds a request's line and headers may take to arrive, from the connection or "
        "its first byte; then the connection is closed.",
    )
    body_read_timeout: float = Field(
        30.0, gt=0, description="Seconds a request body may go without a byte arriving: 408 and the connection closed.",
    )
    max_connections: int = Field(
        1000, ge=1, description="Open connections (and requests in flight) at most; past it, 503 at once.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")

    def batch_tokens(self, device_type: str) -> int:
        """The padded-token budget of one forward pass on this kind of device ("cpu" or "cuda")."""
        return self.max_batch_tokens or AUTO_BATCH_TOKENS[device_type]

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys(cls, value: object) -> object:
        """An empty key refuses to start, from either source: an empty Secret mounted as
        INFERENCE_API_KEYS would otherwise open the API to anyone (with only a warning), and an
        empty --api-key would start a server that refuses every request. The error names the
        source, never a key."""
        if isinstance(value, str):  # the environment: comma-separated
            keys = [k.strip() for k in value.split(",")]
            if not all(keys):
                raise ValueError(f"{ENV_PREFIX}API_KEYS is set but holds an empty key (an empty value, or an empty "
                                 "entry between commas): unset it for an open server, or give every key")
            return keys
        if isinstance(value, list) and not all(isinstance(k, str) and k.strip() for k in value):
            raise ValueError("--api-key was given an empty key: leave the flag out for an open server")
        return [k.strip() for k in value] if isinstance(value, list) else value

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        # A batch budget bounds batches, not items: one item costlier than it still runs, alone.
        if self.asr_max_audio_held_seconds < self.asr_max_audio_seconds:
            raise ValueError("--asr-max-audio-held-seconds must be at least --asr-max-audio-seconds, or the longest "
                             "upload accepted could never be prepared")
        if self.max_inputs_per_request > self.max_queue:
            raise ValueError("--max-inputs-per-request must be at most --max-queue, or a request of the largest "
                             "size could never be queued")
        return self
