"""Greedy CTC decoding of SenseVoice's encoder output: per frame, the arg max of the CTC head.

funasr takes the arg max of the log-softmax of the head's logits, which subtracts the same
normaliser from every logit of a frame and so keeps their order: the arg max of the logits is the
same token. Two ways to compute it:

* ``best_path``, in float32: exact, a slice of the vocabulary at a time;
* ``CtcBestPath``, in a reduced precision (bfloat16 on a CPU, float16 or bfloat16 on CUDA): a
  reduced-precision logit is only good to a few hundredths, so near-tied frames are scored again
  in float32 and keep float32's choice (in float16 the tiny model's tags flipped without it).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from server.compute.cpu_bf16 import PackedLinear


def best_path(head: nn.Linear, hidden: torch.Tensor, vocabulary_slice: int = 1024) -> torch.Tensor:
    """The head is as wide as the vocabulary (25055): written out whole, the logits of a batch are
    tens of MB that the arg max reads back from memory, which on a CPU took as long as the GEMM
    itself (small size, 4 x 10 s: 120 ms, 58-63 ms a slice at a time, flat over slices of
    256-2048). So the head runs a slice of the vocabulary at a time, keeping each frame's best so
    far; a tie keeps the earlier token, as ``argmax`` does.
    ``hidden``: (batch, frames, features) -> (batch, frames) token ids."""
    rows = hidden.reshape(-1, hidden.shape[-1])
    best_logit = best_token = None
    for start in range(0, head.out_features, vocabulary_slice):
        end = start + vocabulary_slice
        bias = None if head.bias is None else head.bias[start:end]
        logit, token = F.linear(rows, head.weight[start:end], bias).max(dim=-1)
        if best_logit is None:
            best_logit, best_token = logit, token
        else:
            better = logit > best_logit
            best_logit = torch.where(better, logit, best_logit)
            best_token = torch.where(better, token + start, best_token)
    assert best_token is not None  # the loop ran: the vocabulary has a chunk
    return best_token.view(hidden.shape[:-1])


class CtcBestPath(nn.Module):
    """The head in ``dtype``, with frames whose two best logits are closer than ``margin`` scored
    again in float32 from the head's float32 weights (a copy taken before the model is cast).

    ``packed``: the head runs as a oneDNN-packed GEMM (the bfloat16 path on a CPU, cpu_bf16);
    otherwise as the module itself in ``dtype`` (CUDA, or a CPU without oneDNN bfloat16)."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype = torch.bfloat16, margin: float = 0.25,
                 packed: bool = True, rows_per_chunk: int = 8192):
        super().__init__()
        self.dtype, self.margin, self.rows_per_chunk = dtype, margin, rows_per_chunk
        self.head = PackedLinear.of(linear, dtype=dtype) if packed else copy.deepcopy(linear).to(dtype)
        self.weight = nn.Parameter(linear.weight.detach().float().clone(), requires_grad=False)
        self.bias = nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h``: (batch, frames, features), float32 or ``dtype`` -> (batch, frames) token ids."""
        rows = h.reshape(-1, h.shape[-1])
        # Whole logits, a chunk of frames at a time: on a GPU a batch's full logits would take GBs.
        best = torch.cat([self._chunk(rows[start:start + self.rows_per_chunk])
                          for start in range(0, max(1, rows.shape[0]), self.rows_per_chunk)])
        return best.view(h.shape[:-1])

    def _chunk(self, rows: torch.Tensor) -> torch.Tensor:
        top = self.head(rows.to(self.dtype)).topk(2, dim=-1)
        best = top.indices[:, 0]
        if self.dtype != torch.float32:
            close = (top.values[:, 0] - top.values[:, 1]).float() < self.margin
            if bool(close.any()):
                best[close] = F.linear(rows[close].float(), self.weight, self.bias).argmax(dim=-1)
        return best
