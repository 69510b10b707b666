"""Request preparation for /v1/embeddings: validate, tokenize (off the event loop), check lengths,
queue one batcher item per input, and shape the answer. TEI's /embed and /embed_sparse are
translated onto ``EmbeddingService.create`` (server/embedding/tei.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from server.config import Settings
from server.embedding.model import BgeM3, EmbedItem, EmbedResult
from server.embedding.schema import EmbeddingRequest
from server.embedding.settings import EmbeddingSettings
from server.engine.batching import Batcher, gather_results
from server.engine.deadlines import Terms
from server.errors import InvalidRequest
from server.family import Usage
from server.compute.xlmr_common import TextModelDescription, Token, tokens_within


@dataclass(frozen=True)
class Embedded:
    """One request's vectors, in its inputs' order, and what it fed the model."""

    results: list[EmbedResult]
    usage: Usage


class EmbeddingService:
    def __init__(self, model: BgeM3, batcher: Batcher, *, max_tokens: int, max_inputs: int):
        self.model = model
        self.batcher = batcher
        self.max_tokens = min(max_tokens, model.max_tokens)
        self.max_inputs = max_inputs

    @classmethod
    def from_settings(cls, model: BgeM3, batcher: Batcher, own: EmbeddingSettings,
                      settings: Settings) -> EmbeddingService:
        return cls(model, batcher, max_tokens=own.max_tokens, max_inputs=settings.max_inputs_per_request)

    def describe(self) -> TextModelDescription:
        return TextModelDescription("embedding", self.model.device, self.max_tokens, self.max_inputs, pooling="cls")

    async def tokenize(self, texts: list[str], add_special_tokens: bool) -> list[list[Token]]:
        """Each text's tokens as a person reads them (TEI's /tokenize)."""
        return await self.batcher.gate.run_preparation(tokens_within, self.model.tokenizer, texts, add_special_tokens,
                                                       self.max_tokens * self.model.max_piece_chars)

    async def create(self, req: EmbeddingRequest, terms: Terms,
                     is_gone: Callable[[], Awaitable[bool]] | None = None, ids_as_given: bool = False) -> Embedded:
        """Token ids are embedded as given when they carry <s> ... </s> already (as /tokenize gives
        them), else wrapped in them, as a text is; ``ids_as_given`` (TEI's /embed): always as given."""
        if req.dimensions is not None and req.dimensions != self.model.dim:
            raise InvalidRequest(
                f"dimensions={req.dimensions} is not supported: bge-m3 vectors have {self.model.dim} dimensions.",
                param="dimensions",
            )
        inputs = self._as_list(req.input)
        keep_last = self._keep_last(req.truncate_prompt_tokens)
        with self.batcher.admission(terms) as admission:
            token_ids = await self.batcher.gate.run_preparation(
                self._tokenize, inputs, req.truncate, ids_as_given, keep_last is not None)
            if keep_last is not None:
                token_ids = [self._last_tokens(ids, keep_last) for ids in token_ids]
            token_ids = [self._fit(ids, i, req.truncate) for i, ids in enumerate(token_ids)]
            items = [(EmbedItem(ids, sparse=req.return_sparse, colbert=req.return_colbert, normalize=req.normalize),
                      len(ids)) for ids in token_ids]
            futures = admission.submit(items)
        results: list[EmbedResult] = await gather_results(futures, terms, is_gone)
        return Embedded(results, Usage(sum(len(ids) for ids in token_ids)))

    def token_text(self, token_id: int) -> str:
        return self.model.token_text(token_id)

    def _as_list(self, raw: str | list) -> list[str | list[int]]:
        if isinstance(raw, str):
            inputs: list = [raw]
        elif raw and isinstance(raw[0], int):
            inputs = [raw]  # one list of token ids
        else:
            inputs = list(raw)
        if not inputs:
            raise InvalidRequest("input must not be an empty list.", param="input")
        if len(inputs) > self.max_inputs:
            raise InvalidRequest(
                f"input has {len(inputs)} items; at most {self.max_inputs} per request.", param="input"
            )
        for i, value in enumerate(inputs):
            if len(value) == 0:
                raise InvalidRequest(f"input[{i}] is empty.", param="input")
        return inputs

    def _keep_last(self, truncate_prompt_tokens: int | None) -> int | None:
        """vLLM's truncate_prompt_tokens: the last k tokens, <s> and </s> counted (-1: the model's limit)."""
        if truncate_prompt_tokens is None:
            return None
        keep = self.max_tokens if truncate_prompt_tokens == -1 else truncate_prompt_tokens
        if not 2 <= keep <= self.max_tokens:
            raise InvalidRequest(f"truncate_prompt_tokens must be -1 or from 2 (<s> and </s>) to {self.max_tokens}, "
                                 f"not {truncate_prompt_tokens}.", param="truncate_prompt_tokens")
        return keep

    def _last_tokens(self, ids: list[int], keep: int) -> list[int]:
        """The last ``keep`` tokens, as vLLM's left truncation keeps them: <s> and </s> stay, the
        text's start goes."""
        if len(ids) <= keep:
            return ids
        if self.model.is_wrapped(ids):
            return ids[:1] + ids[len(ids) - keep + 1:-1] + ids[-1:]
        return ids[-keep:]

    def _bounded(self, text: str, index: int, truncate: bool, from_end: bool = False) -> str:
        """Refuse or cut, by characters, a text far over the token limit before tokenizing it:
        tokenizing a 16 MB string would cost ~20 s and ~2 GB to learn it is too long. ``from_end``:
        only its last tokens will be kept, so its end is what is kept."""
        max_chars = self.max_tokens * self.model.max_piece_chars
        if from_end and len(text) > max_chars:
            return text[-max_chars:]
        sent = len(text)
        text = self.model.cut_chars(text, max_chars + 1)
        if len(text) <= max_chars:
            return text
        if truncate:
            return text[:max_chars]
        raise InvalidRequest(
            f"input[{index}] has {sent} characters, more than {self.max_tokens} tokens can hold; "
            "shorten it, or send truncate=true to cut it.",
            param="input",
            code="context_length_exceeded",
        )

    def _tokenize(self, inputs: list[str | list[int]], truncate: bool, ids_as_given: bool = False,
                  from_end: bool = False) -> list[list[int]]:
        texts = [(i, self._bounded(v, i, truncate, from_end)) for i, v in enumerate(inputs) if isinstance(v, str)]
        out: list = list(inputs)
        if texts:
            for (i, _), ids in zip(texts, self.model.tokenize([t for _, t in texts])):
                out[i] = ids
        vocab = self.model.vocab_size
        for i, value in enumerate(inputs):
            if not isinstance(value, str):
                bad = next((t for t in value if t >= vocab), None)
                if bad is not None:
                    raise InvalidRequest(f"input[{i}] has token id {bad}; the vocabulary has {vocab}.", param="input")
                out[i] = value if ids_as_given or self.model.is_wrapped(value) else self.model.wrap_ids(value)
        return out

    def _fit(self, ids: list[int], index: int, truncate: bool) -> list[int]:
        if len(ids) <= self.max_tokens:
            return ids
        if not truncate:
            raise InvalidRequest(
                f"input[{index}] has {len(ids)} tokens; bge-m3 accepts at most {self.max_tokens}. "
                "Shorten it, or send truncate=true to cut it.",
                param="input",
                code="context_length_exceeded",
            )
        # Same as the tokenizer's own truncation of one sequence: keep <s> and the head, end with </s>;
        # ids given without them (TEI's /embed) keep their head.
        return ids[: self.max_tokens - 1] + ids[-1:] if self.model.is_wrapped(ids) else ids[: self.max_tokens]
