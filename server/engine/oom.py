"""CUDA out of memory: how the batcher recognises it and frees what it can before it retries
smaller (server.engine.batching._run_isolated)."""

from __future__ import annotations

# What cuBLAS, cuDNN and the caching allocator say when an allocation fails outside the allocator's
# own check: these arrive as a plain RuntimeError, not torch.cuda.OutOfMemoryError.
_CUDA_ALLOCATION_FAILURES = ("CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
                             "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE", "cudaErrorMemoryAllocation")


def is_cuda_oom(err: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err) for text in _CUDA_ALLOCATION_FAILURES)


def free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
