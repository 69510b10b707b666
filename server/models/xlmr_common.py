"""Helpers shared by the XLM-R adapters: batch padding, and the longest text worth tokenizing."""

from __future__ import annotations

import torch


def pad_right(rows: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad with ``pad_id`` and mask it, as the tokenizer's own ``pad()`` does (without its
    per-call warning and Python overhead)."""
    longest = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def longest_piece(tokenizer) -> int:
    """Characters in the vocabulary's longest piece: a text of n tokens has at most about n times
    this many characters, so longer text can be refused or cut before it is tokenized at all."""
    return max(len(piece) for piece in tokenizer.get_vocab())


def normalize(tokenizer, text: str) -> str:
    """The text as the tokenizer's normalizer leaves it (tokenizing it again gives the same ids).
    XLM-R's collapses runs of spaces, which hold no token, so lengths are measured after it."""
    normalizer = tokenizer.backend_tokenizer.normalizer
    return normalizer.normalize_str(text) if normalizer is not None else text


def cut_chars(tokenizer, text: str, max_chars: int) -> str:
    """At most ``max_chars`` characters of the normalized text; cheap when the text is short."""
    if len(text) <= max_chars:
        return text
    return normalize(tokenizer, text)[:max_chars]
