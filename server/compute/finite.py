"""Which items of a batch came out finite: a float16 overflow turns an item's output into NaN or
infinity, which would otherwise leave the server as ``null`` vectors, a 0.0 score or an empty
transcript with a 200. An item is judged on its own positions only: its padding is not its output."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from server.errors import NonFiniteOutput


def finite_rows(values: torch.Tensor, lengths: Sequence[int] | None = None) -> list[bool]:
    """For each row of ``values`` (batch first): whether it is all finite, within its first
    ``lengths[row]`` positions along dimension 1 when lengths are given."""
    ok = torch.isfinite(values)
    if lengths is not None:
        positions = torch.arange(values.shape[1], device=values.device)
        beyond = positions[None] >= torch.as_tensor(lengths, device=values.device)[:, None]
        ok |= beyond.view(*beyond.shape, *[1] * (values.dim() - 2))
    return ok.flatten(1).all(1).tolist() if values.dim() > 1 else ok.tolist()


def non_finite(model: str) -> NonFiniteOutput:
    return NonFiniteOutput(
        f"{model} computed a non-finite value (NaN or infinity) for this input. In float16 this is an "
        "overflow: the server's operator can serve it in bfloat16 or float32 (--dtype).")
