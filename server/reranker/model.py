"""bge-reranker-v2-m3 (an XLM-R cross-encoder with one logit) through FlagEmbedding.

FlagEmbedding's ``FlagReranker`` loads the model and tokenizer; we run the model on (query, window)
pairs the batcher groups, where ``compute_score`` would re-tokenize and truncate each document.
"""

from __future__ import annotations

from pathlib import Path

import torch

from server.errors import StartupError
from server.compute.cpu_bf16 import XlmrEncoder, fast_path
from server.compute.finite import finite_rows, non_finite
from server.compute.xlmr_common import cut_chars, longest_piece, pad_right


class BgeReranker:
    """The model contract: ``cost(pair)`` and ``run_batch(pairs) -> logits``."""

    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype):
        from FlagEmbedding import FlagReranker

        try:
            reference = FlagReranker(str(path), use_fp16=False, devices=[str(device)])
        except Exception as err:  # a bad config or weight file: say which directory
            raise StartupError(f"Could not load the reranker from {path}: {type(err).__name__}: {err}") from err
        self.tokenizer = reference.tokenizer
        if reference.model.config.num_labels != 1:
            raise StartupError(f"{path} is not a one-logit cross-encoder (num_labels={reference.model.config.num_labels}).")
        if fast_path(device, dtype):
            # bfloat16 on CPU: packed oneDNN GEMMs around a float32 residual stream (cpu_bf16); the
            # classification head (two small GEMMs on <s>) stays float32.
            self.model = reference.model.to(device=device).eval()
            self.model.roberta = XlmrEncoder(self.model.roberta, dtype)
        else:
            self.model = reference.model.to(device=device, dtype=dtype).eval()
        self.device = device
        self.max_piece_chars = longest_piece(self.tokenizer)
        # Position embeddings hold max_length + 2 (XLM-R's padding offset).
        self.max_tokens = self.model.config.max_position_embeddings - 2
        # <s> q </s></s> d </s>: the tokenizer's own pair template, measured once.
        self.pair_overhead = len(self.tokenizer.build_inputs_with_special_tokens([], []))

    def tokenize(self, texts: list[str], max_chars: int | None = None) -> list[list[int]]:
        """Token ids without specials; with ``max_chars``, of at most that many normalized characters
        (what lies past them is never fed to the model, so it is not tokenized)."""
        if max_chars is not None:
            texts = [cut_chars(self.tokenizer, t, max_chars) for t in texts]
        return self.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]

    @property
    def labels(self) -> dict[int, str]:
        """The classifier's output labels by index (one: the relevance logit)."""
        return {int(k): v for k, v in self.model.config.id2label.items()}

    def pair(self, query_ids: list[int], window: list[int]) -> list[int]:
        return self.tokenizer.build_inputs_with_special_tokens(query_ids, window)

    @staticmethod
    def cost(pair: list[int]) -> int:
        return len(pair)

    @torch.inference_mode()
    def run_batch(self, pairs: list[list[int]]) -> list[float | Exception]:
        features = pad_right(pairs, self.tokenizer.pad_token_id, self.device)
        logits = self.model(**features, return_dict=True).logits.view(-1).float()
        return [score if ok else non_finite("bge-reranker-v2-m3")
                for score, ok in zip(logits.cpu().tolist(), finite_rows(logits))]

    def warm_up(self) -> None:
        self.run_batch([self.pair(self.tokenize(["warm"])[0], self.tokenize(["up"])[0])])
