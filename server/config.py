"""The one settings object. Every field is an env var (``INFERENCE_<FIELD>``) and a CLI flag.

The server's own settings are declared here; each model family declares its own in its folder
(``FamilySettings``, as ``<family>/settings.py``), and ``with_families`` joins them into the class
the CLI and the environment fill: family ``asr``'s field ``max_decoding`` is the setting
``asr_max_decoding``, flag ``--asr-max-decoding``, env ``INFERENCE_ASR_MAX_DECODING``. The CLI
(server/cli.py) builds its flags from the fields, so a setting is declared once, with its help text.
Nothing is built at import time: ``create_app(settings)`` takes an instance.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "INFERENCE_"

# Padded tokens per forward pass when --max-batch-tokens is 0, by device type. On a CPU a pass costs
# more per token once it holds more than 1-2k padded tokens (its activations no longer stay in cache:
# +20-50% per token at 4k than at 1k, at small and base size), so bigger batches only add latency
# there; a GPU needs big passes to be kept busy.
AUTO_BATCH_TOKENS = {"cpu": 1024, "cuda": 16384}


class FamilySettings(BaseModel):
    """A model family's own settings, declared in its folder. Field ``f`` of family ``name`` is the
    setting ``<name>_<f>``; every family has ``model``, with its own default and description."""

    model_config = ConfigDict(extra="forbid")

    model: str  # a local directory, a hub id, or "none" (not served)
    # Names settings had before they took their family's prefix, still accepted as flags and env
    # variables so deployments keep working: {field: former setting name}.
    former_names: ClassVar[dict[str, str]] = {}


class Settings(BaseSettings):
    """The server's own settings; an instance also holds each family's (``Family.settings_of``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")
    # The families joined in by ``with_families``: {name: its settings class}.
    families: ClassVar[dict[str, type[FamilySettings]]] = {}

    def __init__(self, **values: Any) -> None:
        # A value given under a setting's former name (a keyword, or a flag: the CLI passes its
        # dest) counts as given under its name, and so beats the environment as a flag should.
        for name, former in self.former_names().items():
            if former in values:
                values.setdefault(name, values.pop(former))
        super().__init__(**values)

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

    # --- models (each family's own settings are declared in its folder: FamilySettings) ---
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

    @classmethod
    def former_names(cls) -> dict[str, str]:
        """{setting: the name it had before it took its family's prefix}, still accepted."""
        return {f"{name}_{field}": former for name, own in cls.families.items()
                for field, former in own.former_names.items()}

    def family_values(self, name: str) -> dict[str, Any]:
        """Family ``name``'s settings, by their own field names."""
        return {field: getattr(self, f"{name}_{field}") for field in self.families[name].model_fields}

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        # A batch budget bounds batches, not items: one item costlier than it still runs, alone.
        for name, own in self.families.items():  # each family's checks across its own fields
            try:
                own.model_validate(self.family_values(name))
            except ValidationError as err:
                raise ValueError("; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())) from None
        if self.max_inputs_per_request > self.max_queue:
            raise ValueError("--max-inputs-per-request must be at most --max-queue, or a request of the largest "
                             "size could never be queued")
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The former env names come after the current ones: a variable under its name wins.
        return init_settings, env_settings, FormerEnvNames(settings_cls), dotenv_settings, file_secret_settings


class FormerEnvNames(PydanticBaseSettingsSource):
    """Reads the env variables of settings under their former names (``FamilySettings.former_names``)."""

    def __call__(self) -> dict[str, Any]:
        environ = {key.upper(): value for key, value in os.environ.items()}
        formers = self.settings_cls.former_names() if issubclass(self.settings_cls, Settings) else {}
        return {name: environ[f"{ENV_PREFIX}{former}".upper()] for name, former in formers.items()
                if f"{ENV_PREFIX}{former}".upper() in environ}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every former name at once


def with_families(families: Mapping[str, type[FamilySettings]]) -> type[Settings]:
    """The settings class of a server serving these families: the server's own fields, then each
    family's as ``<name>_<field>``, with the same types, defaults, bounds and descriptions."""
    fields: dict[str, Any] = {}
    for name, own in families.items():
        for field, info in own.model_fields.items():
            fields[f"{name}_{field}"] = (info.annotation, info)
    joined = create_model("Settings", __base__=Settings, __module__=__name__, **fields)
    joined.families = dict(families)
    return joined
