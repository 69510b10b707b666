"""The model rows a throughput workload makes, in the adapters' cost unit (tokens; 10 ms audio
frames), computed as the server computes them: for the FLOP figures (benchlib/workload_flops.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchlib.endpoint import Request
from server.asr.audio import SAMPLE_RATE


@dataclass(frozen=True)
class Costs:
    """What a workload asks of the model, in the adapters' cost unit (tokens; 10 ms audio frames)."""

    rows: list[int]  # every row (text, (query, window) pair, audio segment) the server computes
    # Each row's length as the offline reference's batches pad it (its longest row's), where known.
    offline_padded: list[int] | None = None


def sorted_batches(costs: list[int], batch_size: int) -> list[int]:
    """Each row's padded length when rows are sorted longest first and cut into batches of
    ``batch_size`` (what FlagEmbedding's encode and compute_score do before their passes)."""
    ordered = sorted(costs, reverse=True)
    return [ordered[start] for start in range(0, len(ordered), batch_size)
            for _ in ordered[start:start + batch_size]]


def text_costs(texts: list[str], batch_size: int) -> Callable[[Path], Costs]:
    """bge-m3's rows: each text's tokens with <s> and </s>, as the server tokenizes them."""
    def costs(model_dir: Path) -> Costs:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        rows = [len(ids) for ids in tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]]
        return Costs(rows, sorted_batches(rows, batch_size))

    return costs


def rerank_costs(bodies: list[dict], batch_size: int | None) -> Callable[[Path], Costs]:
    """The reranker's rows: the (query, window) pairs the server's own RerankService._pairs makes of
    each request (windows, query cut, pair template), from the tokenizer alone. ``batch_size``: the
    offline reference's, where it scores the same pairs."""
    def costs(model_dir: Path) -> Costs:
        from transformers import AutoConfig, AutoTokenizer

        from server.families import make_settings
        from server.compute.xlmr_common import longest_piece
        from server.reranker import FAMILY
        from server.reranker.model import BgeReranker
        from server.reranker.schema import RerankRequest
        from server.reranker.service import RerankService

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = object.__new__(BgeReranker)  # the adapter's tokenizing methods, without its weights
        model.tokenizer, model.max_piece_chars = tokenizer, longest_piece(tokenizer)
        model.pair_overhead = len(tokenizer.build_inputs_with_special_tokens([], []))
        model.max_tokens = AutoConfig.from_pretrained(str(model_dir)).max_position_embeddings - 2
        settings = make_settings()
        service = RerankService.from_settings(model, None, FAMILY.settings_of(settings), settings)
        rows = []
        for body in bodies:
            req = RerankRequest(**body)
            pairs, _ = service._pairs(req, [d if isinstance(d, str) else d.text for d in req.documents])
            rows += [len(p) for p in pairs]
        return Costs(rows, sorted_batches(rows, batch_size) if batch_size else None)

    return costs


def audio_costs(requests: list[Request], offline_batch: int | None) -> Callable[[Path], Costs]:
    """SenseVoice's rows: each upload decoded as the server decodes it, whole up to the longest
    segment, else cut at pauses by the server's own VAD (split_on_pauses), in 10 ms frames
    (SenseVoice.cost). ``offline_batch``: funasr's generate batch, where it runs these clips."""
    def costs(model_dir: Path) -> Costs:
        from server.asr.audio import decode_audio
        from server.families import make_settings
        from server.asr.model import AsrItem, SenseVoice
        from server.asr.vad import split_on_pauses

        settings = make_settings()
        rows = []
        for req in requests:
            audio = decode_audio(req.audio, max_seconds=settings.asr_max_audio_seconds)
            if len(audio) <= settings.asr_max_segment_seconds * SAMPLE_RATE:
                spans = [(0, len(audio))]
            else:
                spans = [(round(s.start * SAMPLE_RATE), round(s.end * SAMPLE_RATE))
                         for s in split_on_pauses(audio, max_segment_s=settings.asr_max_segment_seconds)]
            rows += [SenseVoice.cost(AsrItem(audio[start:end])) for start, end in spans]
        # funasr's generate pads each batch of clips, in their order, to its longest.
        padded = None
        if offline_batch:
            padded = [max(rows[start:start + offline_batch]) for start in range(0, len(rows), offline_batch)
                      for _ in rows[start:start + offline_batch]]
        return Costs(rows, padded)

    return costs
