"""Helpers shared by the XLM-R adapters (and their services): batch padding, the longest text worth
tokenizing, a text's tokens as a person reads them, and what a served text model is."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Literal

import torch

from server.errors import InvalidRequest


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


@dataclass(frozen=True)
class Token:
    """One token of a text: special ones by their token text, the others by the span of the input
    they cover, as UTF-8 byte offsets (``start``, ``stop``; None for special tokens)."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


def tokens_of(tokenizer, text: str, add_special_tokens: bool) -> list[Token]:
    """``text``'s tokens with their spans (the tokenizer gives character offsets; these are bytes)."""
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                    return_special_tokens_mask=True)
    byte_at = [0, *accumulate(len(ch.encode("utf-8")) for ch in text)]
    pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    return [Token(token_id, piece, True, None, None) if special
            else Token(token_id, text[start:stop], False, byte_at[start], byte_at[stop])
            for token_id, (start, stop), special, piece in zip(
                enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"], pieces)]


def tokens_within(tokenizer, texts: list[str], add_special_tokens: bool, max_chars: int) -> list[list[Token]]:
    """Each text's tokens (TEI's /tokenize); a text longer than ``max_chars`` is refused before
    anything is tokenized, as the model's own routes refuse it."""
    for i, text in enumerate(texts):
        if len(text) > max_chars:
            raise InvalidRequest(f"inputs[{i}] has {len(text)} characters; at most {max_chars}.", param="inputs")
    return [tokens_of(tokenizer, t, add_special_tokens) for t in texts]


@dataclass(frozen=True)
class TextModelDescription:
    """What a served text model is and accepts (``describe()`` of its service)."""

    task: Literal["embedding", "reranker"]
    device: torch.device
    max_input_tokens: int  # the longest input it reads: a text, or a (query, document window) pair
    max_inputs_per_request: int  # texts, or documents
    pooling: str | None = None  # an embedding model's
    labels: dict[int, str] | None = None  # a classifier's outputs, by index
