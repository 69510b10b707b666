"""Turn the --device and --dtype settings into torch objects, with operator-facing errors."""

from __future__ import annotations

import torch

from server.errors import StartupError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(value: str) -> torch.device:
    value = value.strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except RuntimeError as err:
        raise StartupError(f"--device {value!r} is not a device; use auto, cpu, cuda or cuda:N.") from err
    if device.type not in ("cpu", "cuda"):
        raise StartupError(f"--device {value!r} is not supported; use auto, cpu, cuda or cuda:N.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise StartupError(f"--device {value} asked for CUDA, but this torch build or machine has no CUDA GPU.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise StartupError(f"--device {value}: only {torch.cuda.device_count()} CUDA device(s) are visible.")
    return device


def resolve_dtype(value: str, device: torch.device) -> torch.dtype:
    # auto stays float32 on CPU, even where bfloat16 is about 2x faster (scripts/bench_dtype.py: 2.0-2.2x
    # at full size on AVX512-BF16, embeddings within cosine 0.99995): float32 is what reproduces the
    # reference libraries, one dtype serves all three models, and SenseVoice's greedy transcripts do
    # change in bfloat16 (on random weights; no real-weight figures yet). bfloat16 is one flag away.
    if value == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if value == "float16" and device.type == "cpu":
        # CPU kernels for float16 are slow or missing; bfloat16 is the reduced precision CPUs support.
        raise StartupError("--dtype float16 is not supported on CPU; use bfloat16 or float32.")
    return _DTYPES[value]
