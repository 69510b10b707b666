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
    # auto stays float32 on CPU, even where bfloat16 is 2-3x faster (full size with AMX: bge-m3 2.1-3.2x at
    # cosine 0.99995, the reranker 2.3-3.0x, SenseVoice 2.1x with transcripts that change): float32
    # reproduces the reference libraries, does not depend on the CPU's instruction set, and one dtype
    # serves all three models. bfloat16 is one flag away (README, CPU bfloat16).
    if value == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if value == "float16" and device.type == "cpu":
        # CPU kernels for float16 are slow or missing; bfloat16 is the reduced precision CPUs support.
        raise StartupError("--dtype float16 is not supported on CPU; use bfloat16 or float32.")
    return _DTYPES[value]
