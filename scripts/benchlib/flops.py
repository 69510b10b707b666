"""How many FLOPs a forward pass does, and how many this machine can do: for the benchmark's figures.

``forward_flops`` counts a model's forward pass over rows of given costs from the architecture in
its directory; ``matmul_peak_flops`` measures this device's FLOP/s on a large square matmul. Their
ratio is how close a model runs to the hardware (its model FLOPs utilisation).

What is counted: matrix products, at 2 FLOPs per multiply-add: every linear layer, attention's
scores (Q K^T) and weighted values (A V), SenseVoice's FSMN memory (a depthwise convolution), and
the output heads. What is not: element-wise work (LayerNorm, GELU/ReLU, softmax, masking, residual
adds, the positional encoding), embedding look-ups (gathers), and SenseVoice's audio front end
(fbank, LFR, CMVN), which the server computes during request preparation, before the batcher. These
are the same operations ``torch.utils.flop_counter.FlopCounterMode`` counts (mm, addmm, bmm, sdpa,
convolution), which tests/test_flops.py checks this count against on the real adapters.

Per layer, for a row of T positions (tokens, or encoder frames), hidden size H (SenseVoice: D),
feed-forward width I (SenseVoice: U):

* XLM-R (bge-m3, bge-reranker-v2-m3): Q, K, V 6*T*H^2, attention output 2*T*H^2, feed-forward
  4*T*H*I, attention scores and values 2 * 2*T^2*H;
* SenseVoice (EncoderLayerSANM): fused Q/K/V 2*T*Din*3D (Din: 560 = 80 mels x LFR 7 for the first
  layer, D after), FSMN depthwise convolution 2*T*D*K (K: kernel size), attention output 2*T*D^2,
  feed-forward 4*T*D*U, attention scores and values 2 * 2*T^2*D; num_blocks + tp_blocks layers.

Heads, per row:

* bge-m3: the dense vector is the CLS token's hidden state (no matmul). XLMRobertaModel's pooler
  (dense H->H on CLS, 2*H^2) runs in the eager model although FlagEmbedding never reads it: counted
  unless ``pooler=False`` (the bfloat16 CPU path, server.compute.cpu_bf16, skips it). Sparse weights
  (``sparse=True``: H->1 on every token, 2*T*H) and ColBERT vectors (``colbert=True``: H->H on every
  token but <s>, 2*(T-1)*H^2) only when asked: the server runs them only for a batch with an item
  that asked for them, and the default (and the benchmark's requests) is the dense vector alone.
* reranker: classifier dense H->H and out_proj H->labels, on <s> only: 2*H^2 + 2*H*labels.
* SenseVoice: the CTC head, D->vocabulary on every encoder frame: 2*T*D*V (greedy decoding reads
  the arg max of every frame's logits). The log-posteriors verbose_json asks for (a few rows) are
  left out.

Costs are in the server's cost unit (the adapters' ``cost``): tokens per row for the text models
(len(input_ids), specials included), 10 ms audio frames for SenseVoice. SenseVoice's encoder reads
4 query frames and then the LFR frames of the fbank (25 ms windows every 10 ms, snip_edges: a clip
of c whole 10 ms frames has c - 2 of them; LFR stacks 7 every 6, rounding up): T = ceil((c - 2) / 6)
+ 4. A clip whose length is not a whole number of 10 ms frames may have one fbank frame more, so
one LFR frame more in one case of six.

Real FLOPs: ``forward_flops(kind, dir, costs)``; padded FLOPs of one batch (every row computed at the
longest row's length, as a padded forward pass does): ``forward_flops(kind, dir, [max(costs)] *
len(costs))``. The count is a sum over rows, so rows padded in different batches can be passed
together, each at its batch's longest length.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

KINDS = ("embedding", "reranker", "asr")
QUERY_FRAMES = 4  # SenseVoice's language, emotion, event and text-norm query frames
SAMPLES_PER_COST = 160  # the cost unit of SenseVoice: 10 ms at 16 kHz (SenseVoice.cost)
DEFAULT_VOCAB = 25055  # SenseVoiceSmall's tokenizer, when the directory's cannot be read


@dataclass(frozen=True)
class Xlmr:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    labels: int


@dataclass(frozen=True)
class Sanm:
    input_size: int  # of the first layer: mels x lfr_m
    hidden: int  # output_size
    heads: int
    units: int  # linear_units
    layers: int  # num_blocks + tp_blocks
    kernel: int  # FSMN kernel size
    vocab: int  # CTC head's outputs
    lfr_n: int
    window: int  # fbank samples per frame
    shift: int  # fbank samples between frames


def _xlmr(model_dir: Path) -> Xlmr:
    config = json.loads((model_dir / "config.json").read_text())
    labels = config.get("num_labels") or len(config.get("id2label") or {}) or 1
    return Xlmr(config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"],
                config["num_attention_heads"], labels)


def _sanm(model_dir: Path) -> Sanm:
    import yaml

    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    enc, front = config.get("encoder_conf", {}), config.get("frontend_conf", {})
    fs = front.get("fs", 16000)
    return Sanm(
        input_size=config.get("input_size") or front.get("n_mels", 80) * front.get("lfr_m", 7),
        hidden=enc.get("output_size", 256), heads=enc.get("attention_heads", 4),
        units=enc.get("linear_units", 2048), layers=enc.get("num_blocks", 6) + enc.get("tp_blocks", 0),
        kernel=enc.get("kernel_size", 11), vocab=_sensevoice_vocab(model_dir, config),
        lfr_n=front.get("lfr_n", 6), window=int(fs * front.get("frame_length", 25) / 1000),
        shift=int(fs * front.get("frame_shift", 10) / 1000),
    )


def _sensevoice_vocab(model_dir: Path, config: dict) -> int:
    """The CTC head's width: funasr sizes it from the tokenizer (config.yaml has no vocab_size in
    the real model; the BPE file is named in configuration.json's file_path_metas)."""
    if config.get("vocab_size"):
        return int(config["vocab_size"])
    names = []
    meta = model_dir / "configuration.json"
    if meta.is_file():
        bpe = json.loads(meta.read_text()).get("file_path_metas", {}).get("tokenizer_conf", {}).get("bpemodel")
        if bpe:
            names.append(model_dir / bpe)
    names += sorted(model_dir.glob("*.bpe.model"))
    for path in names:
        if path.is_file():
            import sentencepiece as spm

            return spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()
    return DEFAULT_VOCAB


def encoder_frames(cost: int, model_dir: Path) -> int:
    """Frames SenseVoice's encoder reads for a clip of ``cost`` 10 ms frames: 4 query frames, then
    ceil(fbank frames / lfr_n) LFR frames (funasr's apply_lfr), fbank frames counted with
    snip_edges on a clip of exactly ``cost`` x 10 ms."""
    return _frames(cost, _sanm(Path(model_dir)))


def _frames(cost: int, s: Sanm) -> int:
    samples = cost * SAMPLES_PER_COST
    fbank = max(1, 1 + (samples - s.window) // s.shift)
    return math.ceil(fbank / s.lfr_n) + QUERY_FRAMES


def flop_terms(kind: str, model_dir: Path, costs: Sequence[int], *, sparse: bool = False,
               colbert: bool = False, pooler: bool = True) -> dict[str, float]:
    """``forward_flops`` by part: its values add up to it. Keys: "linear" (Q/K/V, attention output,
    feed-forward), "attention" (scores and values), "fsmn" (SenseVoice), "head" (the output heads,
    the bge-m3 pooler included)."""
    model_dir = Path(model_dir)
    terms = dict.fromkeys(("linear", "attention", "fsmn", "head"), 0.0)
    if kind in ("embedding", "reranker"):
        m = _xlmr(model_dir)
        h, i = m.hidden, m.intermediate
        for t in costs:
            terms["linear"] += m.layers * (8 * t * h * h + 4 * t * h * i)
            terms["attention"] += m.layers * 4 * t * t * h
            if kind == "embedding":
                terms["head"] += (2 * h * h if pooler else 0) + (2 * t * h if sparse else 0)
                terms["head"] += 2 * max(0, t - 1) * h * h if colbert else 0
            else:
                terms["head"] += 2 * h * h + 2 * h * m.labels
    elif kind == "asr":
        s = _sanm(model_dir)
        d = s.hidden
        for cost in costs:
            t = _frames(cost, s)
            # The first layer reads the input features: its Q/K/V projection is input_size -> 3 D.
            terms["linear"] += 2 * t * s.input_size * 3 * d + (s.layers - 1) * 2 * t * d * 3 * d
            terms["linear"] += s.layers * (2 * t * d * d + 4 * t * d * s.units)
            terms["attention"] += s.layers * 4 * t * t * d
            terms["fsmn"] += s.layers * 2 * t * d * s.kernel
            terms["head"] += 2 * t * d * s.vocab
    else:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return {k: float(v) for k, v in terms.items()}


def forward_flops(kind: str, model_dir: Path, costs: Sequence[int], *, sparse: bool = False,
                  colbert: bool = False, pooler: bool = True) -> float:
    """FLOPs (a multiply-add is 2) of one forward pass of the model in ``model_dir`` over rows of
    ``costs``, each row computed at its own cost: pass ``[max(costs)] * len(costs)`` for the padded
    pass. ``kind``: "embedding" (bge-m3; ``sparse`` / ``colbert``: the heads the server runs only
    when an item of the batch asks; ``pooler``: XLMRobertaModel's unused pooler, see the module
    docstring), "reranker" or "asr" (SenseVoiceSmall; costs in 10 ms frames). Element-wise work
    is not counted (module docstring)."""
    return sum(flop_terms(kind, model_dir, costs, sparse=sparse, colbert=colbert, pooler=pooler).values())


def matmul_peak_flops(dtype: torch.dtype, device: torch.device, size: int = 0, seconds: float = 2.0) -> float:
    """Measured FLOP/s of ``size`` x ``size`` matmuls (2 * size^3 FLOPs each) in ``dtype`` on
    ``device``: warm-up, then the median of timed repeats, within about ``seconds`` (a few more at
    most). ``size`` 0: 8192 on CUDA, 2048 elsewhere; it is halved (down to 256) while one matmul
    would take over a tenth of ``seconds``, so a slow device or dtype stays bounded. On a CPU it uses
    torch's current thread count (set it first to match the server's ``--cpu-threads``) and the
    kernels torch picks for the dtype (bfloat16: oneDNN, with AMX or AVX512-BF16 where present); on
    CUDA it synchronizes around every timed repeat, and float32 uses TF32 only if torch's
    ``allow_tf32`` setting says so, as the server's own matmuls do."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    size = size or (8192 if cuda else 2048)
    budget_end = time.perf_counter() + seconds

    def timed(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, n: int) -> float:
        sync()
        started = time.perf_counter()
        for _ in range(n):
            torch.mm(a, b, out=out)
        sync()
        return time.perf_counter() - started

    with torch.inference_mode():
        while True:
            gen = torch.Generator(device="cpu").manual_seed(0)
            a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
            b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
            out = torch.empty(size, size, device=device, dtype=dtype)
            timed(a, b, out, 1)  # first call: kernel selection, handles, weight packing, page faults
            one = timed(a, b, out, 1)
            if one <= seconds / 10 or size <= 256:
                break
            size //= 2
        # Warm-up: a quarter of what is left, to bring clocks and caches to a steady state.
        warm_end = time.perf_counter() + max(0.0, budget_end - time.perf_counter()) / 4
        while time.perf_counter() < warm_end:
            one = min(one, timed(a, b, out, 1))
        # Each timed repeat runs enough matmuls to last ~1/20 of the budget (CUDA launch and
        # synchronization overhead amortized); at least 5 repeats, at most 50.
        per_repeat = max(1, int(seconds / 20 / max(one, 1e-6)))
        samples: list[float] = []
        while len(samples) < 5 or (len(samples) < 50 and time.perf_counter() < budget_end):
            samples.append(timed(a, b, out, per_repeat) / per_repeat)
    return 2 * size**3 / statistics.median(samples)


def report(args) -> None:
    """What ``scripts/flops.py`` prints: a forward pass's FLOPs, real and padded, and the matmul peak."""
    if args.kind and args.model_dir:
        real = forward_flops(args.kind, args.model_dir, args.costs)
        padded = forward_flops(args.kind, args.model_dir, [max(args.costs)] * len(args.costs))
        print(f"{args.kind}: {real / 1e9:.3f} GFLOP real, {padded / 1e9:.3f} GFLOP padded")
    if args.peak:
        peak = matmul_peak_flops(getattr(torch, args.dtype), torch.device(args.device))
        print(f"matmul peak, {args.dtype} on {args.device} ({torch.get_num_threads()} threads): {peak / 1e9:.1f} GFLOP/s")
