"""bge-m3 through FlagEmbedding: dense, sparse (lexical weights) and ColBERT vectors.

The model is loaded by FlagEmbedding's own ``BGEM3FlagModel`` (so weights, heads and tokenizer are
exactly the reference's); we call its inference module's ``forward`` on batches the batcher forms,
instead of ``encode``, which re-tokenizes, re-sorts, truncates at 512 and forces float32 on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from server.errors import StartupError
from server.compute.cpu_bf16 import XlmrEncoder, fast_path
from server.compute.finite import finite_rows, non_finite
from server.compute.xlmr_common import cut_chars, longest_piece, pad_right


@dataclass(frozen=True)
class EmbedItem:
    input_ids: list[int]  # with <s> ... </s>
    sparse: bool = False
    colbert: bool = False
    normalize: bool = True  # False: the dense vector before L2 normalization (TEI's normalize=false)


@dataclass
class EmbedResult:
    dense: np.ndarray  # float32, L2-normalized unless the item asked otherwise
    sparse: dict[int, float] | None = None  # token id -> weight, as FlagEmbedding's lexical_weights
    colbert: np.ndarray | None = None  # (tokens - 1, dim) float32, L2-normalized rows


class BgeM3:
    """The model contract: ``cost(item)`` and ``run_batch(items)``, on one device."""

    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype):
        from FlagEmbedding import BGEM3FlagModel

        try:
            reference = BGEM3FlagModel(
                str(path),
                use_fp16=dtype == torch.float16,
                use_bf16=dtype == torch.bfloat16,
                devices=[str(device)],
                normalize_embeddings=True,
            )
        except Exception as err:  # a bad config or weight file: say which directory, not a bare traceback
            raise StartupError(f"Could not load bge-m3 from {path}: {type(err).__name__}: {err}") from err
        self.tokenizer = reference.tokenizer
        self.model = reference.model.to(device=device, dtype=dtype).eval()
        # run_batch normalizes, with the same F.normalize the module would apply, so that an item may
        # also have its dense vector as it was before normalization.
        self.model.normalize_embeddings = False
        if fast_path(device, dtype):
            # bfloat16 on CPU: packed oneDNN GEMMs around a float32 residual stream (cpu_bf16); the
            # heads (a few GEMMs per token at most) run in float32 on its float32 output.
            self.model.model = XlmrEncoder(self.model.model, dtype)
            self.model.colbert_linear.float()
            self.model.sparse_linear.float()
        self.device = device
        self.max_piece_chars = longest_piece(self.tokenizer)
        self.dim = self.model.model.config.hidden_size
        # The reference drops these ids from lexical weights (FlagEmbedding's _process_token_weights).
        self._unused_ids = {
            self.tokenizer.convert_tokens_to_ids(self.tokenizer.special_tokens_map[name])
            for name in ("cls_token", "eos_token", "pad_token", "unk_token")
            if name in self.tokenizer.special_tokens_map
        }
        # Position embeddings hold max_length + 2 (XLM-R's padding offset): 8194 -> 8192 tokens.
        self.max_tokens = self.model.model.config.max_position_embeddings - 2

    # ---- request preparation helpers (run in a thread pool, never on the event loop) ----

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]

    def cut_chars(self, text: str, max_chars: int) -> str:
        return cut_chars(self.tokenizer, text, max_chars)

    def wrap_ids(self, ids: list[int]) -> list[int]:
        return self.tokenizer.build_inputs_with_special_tokens(ids)

    def is_wrapped(self, ids: list[int]) -> bool:
        """Whether token ids already carry the <s> ... </s> that ``wrap_ids`` adds (as /tokenize's do)."""
        return len(ids) >= 2 and ids[0] == self.tokenizer.cls_token_id and ids[-1] == self.tokenizer.sep_token_id

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    # ---- the batch contract ----

    @staticmethod
    def cost(item: EmbedItem) -> int:
        return len(item.input_ids)

    @torch.inference_mode()
    def run_batch(self, items: list[EmbedItem]) -> list[EmbedResult | Exception]:
        features = pad_right([it.input_ids for it in items], self.tokenizer.pad_token_id, self.device)
        want_sparse = any(it.sparse for it in items)
        want_colbert = any(it.colbert for it in items)
        out = self.model(
            features, return_dense=True, return_sparse=want_sparse, return_colbert_vecs=want_colbert
        )
        raw = out["dense_vecs"]
        # Finite, row by row, in each output (an item is judged on the outputs it asked for).
        lengths = [len(it.input_ids) for it in items]
        # The optional outputs (Any: each is read only for the items that asked for it).
        dense_ok = finite_rows(raw)
        sparse_ok: Any = finite_rows(out["sparse_vecs"], lengths) if want_sparse else None
        colbert_ok: Any = finite_rows(out["colbert_vecs"], [n - 1 for n in lengths]) if want_colbert else None  # no <s>
        dense = F.normalize(raw, dim=-1).float().cpu().numpy()
        unnormalized: Any = raw.float().cpu().numpy() if not all(it.normalize for it in items) else None
        weights: Any = out["sparse_vecs"].squeeze(-1).float().cpu().numpy() if want_sparse else None
        colbert: Any = F.normalize(out["colbert_vecs"], dim=-1).float().cpu().numpy() if want_colbert else None
        results: list[EmbedResult | Exception] = []
        for row, item in enumerate(items):
            if not (dense_ok[row] and (not item.sparse or sparse_ok[row]) and (not item.colbert or colbert_ok[row])):
                results.append(non_finite("bge-m3"))
                continue
            result = EmbedResult(dense=dense[row] if item.normalize else unnormalized[row])
            if item.sparse:
                result.sparse = self._lexical_weights(weights[row], item.input_ids)
            if item.colbert:
                # Row 0 of the ColBERT output is token 1 (<s> is skipped), so a text of n tokens has n - 1.
                result.colbert = colbert[row, : len(item.input_ids) - 1]
            results.append(result)
        return results

    def _lexical_weights(self, weights: np.ndarray, input_ids: list[int]) -> dict[int, float]:
        """Max weight per token id, without special tokens or zero weights (as the reference)."""
        result: dict[int, float] = {}
        for weight, token_id in zip(weights.tolist(), input_ids):
            if token_id not in self._unused_ids and weight > 0 and weight > result.get(token_id, 0.0):
                result[token_id] = weight
        return result

    def warm_up(self) -> None:
        self.run_batch([EmbedItem(self.tokenize(["warm up"])[0], sparse=True, colbert=True)])
