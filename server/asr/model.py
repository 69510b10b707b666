"""SenseVoiceSmall through funasr, on batches of audio segments we form ourselves.

funasr's ``AutoModel`` loads the model, its front end (fbank + LFR + CMVN) and tokenizer exactly as
for ``generate``; ``generate`` itself is not thread-safe, takes one language for a whole call and
does no cross-request batching, so ``run_batch`` repeats ``SenseVoiceSmall.inference`` with a
language and text-norm query per item: four query frames (language, emotion, event, text norm)
before the features, encoder, CTC greedy decoding, BPE decoding. Each result also carries the text
tokens with the frames the path emitted them at (word timestamps) and, when the item asks, their
log-posteriors (avg_logprob, no_speech_prob).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from server.errors import StartupError
from server.compute.cpu_bf16 import SanmEncoder, fast_path
from server.compute.finite import finite_rows, non_finite
from server.asr.ctc import CtcBestPath, best_path
from server.asr.audio import SAMPLE_RATE
from server.asr.tags import is_tag_piece, split_rich_text


@dataclass(frozen=True)
class AsrItem:
    audio: np.ndarray  # float32 mono 16 kHz
    language: str = "auto"  # auto | zh | en | yue | ja | ko
    use_itn: bool = True
    # The front end's features of `audio` (SenseVoice.features), when request preparation computed
    # them in its thread pool; run_batch computes them otherwise. On a CPU the front end is a
    # single-threaded share of a forward pass (~25% at small size), better spent in parallel with it.
    features: torch.Tensor | None = None
    # Read the log-posteriors of the emitted tokens (AsrResult.logprobs, no_speech_prob): a row of
    # the CTC head as wide as the vocabulary per token, ~15% of a pass at small size, so only for
    # the answers that report them (verbose_json).
    posteriors: bool = False


@dataclass(frozen=True)
class AsrResult:
    text: str  # without tags
    language: str | None
    emotion: str | None
    event: str | None
    raw: str  # as the model decoded it, tags included
    # The text's tokens (tags excluded) as the CTC path emitted them: ids, vocabulary pieces, the
    # run [first, end) of encoder frames (query frames included) each was emitted over, and each
    # one's log-probability under the model's posteriors at the frame that emitted it (its first).
    # The log-probabilities and no_speech_prob are None unless the item asked for posteriors.
    tokens: tuple[int, ...] = ()
    pieces: tuple[str, ...] = ()
    frames: tuple[tuple[int, int], ...] = ()
    logprobs: tuple[float, ...] | None = None
    emitted: int = 0  # tokens the path emitted, tags included
    encoder_frames: int = 0  # frames the encoder read: 4 query frames, then 60 ms frames of audio
    no_speech_prob: float | None = None  # the model's probability of <|nospeech|> on the language query frame

    @property
    def avg_logprob(self) -> float | None:
        """The mean of ``logprobs``; 0.0 without text tokens (nothing emitted to doubt)."""
        if self.logprobs is None:
            return None
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else 0.0


class SenseVoice:
    """The model contract: ``cost(item)`` (in 10 ms frames) and ``run_batch(items)``."""

    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype):
        import server.asr.quiet_funasr  # noqa: F401 - first: keeps funasr's notices out
        from funasr import AutoModel

        try:
            # disable_update: no call to the package index; ncpu: keep torch's thread count as it is.
            auto = AutoModel(model=str(path), device=str(device), disable_update=True,
                             ncpu=torch.get_num_threads(), disable_pbar=True)
        except Exception as err:  # a bad config or weight file: say which directory
            raise StartupError(f"Could not load SenseVoiceSmall from {path}: {type(err).__name__}: {err}") from err
        self.fast = fast_path(device, dtype)
        if self.fast:
            # bfloat16 on CPU: packed oneDNN GEMMs around a float32 residual stream (cpu_bf16);
            # features, query embeddings and the encoder output stay float32.
            self.model = auto.model.to(device=device).eval()
            self.model.encoder = SanmEncoder(self.model.encoder, dtype)
            self.best_path: Callable[[torch.Tensor], torch.Tensor] = CtcBestPath(self.model.ctc.ctc_lo, dtype)
        elif dtype != torch.float32:
            # Eager float16/bfloat16 (CUDA): the head's float32 weights are kept, before the cast,
            # to score near-tied frames again.
            self.model = auto.model.to(device=device).eval()
            self.best_path = CtcBestPath(self.model.ctc.ctc_lo, dtype, packed=False)
            self.model.to(dtype=dtype)
        else:
            self.model = auto.model.to(device=device, dtype=dtype).eval()
            self.best_path = partial(best_path, self.model.ctc.ctc_lo)
        self.frontend = auto.kwargs["frontend"]
        # funasr's front end dithers (adds noise) by default: the same clip would give different
        # features, and so possibly different text, on every call. The server is reproducible.
        self.frontend.dither = 0.0
        # Shorter than one analysis window (25 ms) has no features (the fbank refuses it), and no speech.
        self.min_samples = int(self.frontend.frame_length * self.frontend.fs / 1000)
        self.tokenizer = auto.kwargs["tokenizer"]
        self.device = device
        self.dtype = dtype
        self.input_dtype = torch.float32 if self.fast else dtype  # of the features fed to the encoder
        self.languages = set(self.model.lid_dict)
        sp = self.tokenizer.sp
        nospeech = sp.piece_to_id("<|nospeech|>")
        self.no_speech_id = None if nospeech == sp.unk_id() else nospeech
        # Encoder frames in ms: fbank frames (10 ms) stacked by LFR (6): 60 ms.
        self.frame_ms = int(self.frontend.frame_shift * self.frontend.lfr_n)

    @staticmethod
    def cost(item: AsrItem) -> int:
        return max(1, len(item.audio) * 100 // SAMPLE_RATE)

    @torch.inference_mode()
    def features(self, audio: np.ndarray) -> torch.Tensor:
        """fbank + LFR + CMVN of one clip, (frames, dim) float32 on the CPU: what funasr's
        ``extract_fbank`` computes for each clip of a batch (it pads them afterwards)."""
        from funasr.utils.load_utils import extract_fbank

        wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        speech, _ = extract_fbank([wave], data_type="sound", frontend=self.frontend)
        return speech[0]

    def with_features(self, item: AsrItem) -> AsrItem:
        return replace(item, features=self.features(item.audio))

    @torch.inference_mode()
    def run_batch(self, items: list[AsrItem]) -> list[AsrResult | Exception]:
        feats = [it.features if it.features is not None else self.features(it.audio) for it in items]
        speech = pad_sequence(feats, batch_first=True, padding_value=0.0)
        speech = speech.to(device=self.device, dtype=self.input_dtype)
        lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.int32, device=self.device)

        model = self.model
        ids = lambda rows: torch.tensor(rows, dtype=torch.long, device=self.device)  # noqa: E731
        language = model.embed(ids([[model.lid_dict.get(it.language, 0)] for it in items]))
        textnorm = model.embed(ids([[model.textnorm_dict["withitn" if it.use_itn else "woitn"]] for it in items]))
        event_emotion = model.embed(ids([[1, 2]] * len(items)))
        speech = torch.cat((language, event_emotion, textnorm, speech), dim=1)
        lengths = lengths + 4

        if self.input_dtype == torch.float32:
            encoder_out, encoder_lengths = model.encoder(speech, lengths)
        else:
            encoder_out, encoder_lengths = _encode_reduced(model.encoder, speech, lengths)
        if isinstance(encoder_out, tuple):
            encoder_out = encoder_out[0]
        best = self.best_path(encoder_out)
        lengths = encoder_lengths.tolist()
        finite = finite_rows(encoder_out, lengths)  # NaN frames decode as some token: no empty 200
        return [self._decode(encoder_out[row, :length], best[row, :length], item.posteriors)
                if finite[row] else non_finite("SenseVoiceSmall")
                for row, (item, length) in enumerate(zip(items, lengths))]

    def _decode(self, hidden: torch.Tensor, path: torch.Tensor, posteriors: bool = True) -> AsrResult:
        """One item's best path (its frames only) -> text, tags, and its text tokens with the frames
        (and, with ``posteriors``, the log-probabilities) they were emitted at."""
        runs, lengths = torch.unique_consecutive(path, return_counts=True)
        ends = lengths.cumsum(0)
        emitted = runs != self.model.blank_id
        ids = runs[emitted].tolist()
        raw = self.tokenizer.decode(ids)  # the whole path, tags included: exactly funasr's text
        text, tags = split_rich_text(raw)
        pieces = self.tokenizer.sp.id_to_piece(ids) if ids else []
        spoken = [i for i, piece in enumerate(pieces) if not is_tag_piece(piece)]
        firsts = (ends - lengths)[emitted].tolist()
        lasts = ends[emitted].tolist()
        text_ids = [ids[i] for i in spoken]
        logprobs = no_speech = None
        if posteriors:
            # On the language query frame (for <|nospeech|>) and on each text token's first frame.
            rows = self._log_posteriors(hidden, [0, *(firsts[i] for i in spoken)])
            chosen = rows[1:].gather(1, torch.tensor(text_ids, dtype=torch.long, device=hidden.device)[:, None])
            logprobs = tuple(chosen[:, 0].tolist())
            no_speech = rows[0, self.no_speech_id].exp().item() if self.no_speech_id is not None else 0.0
        return AsrResult(
            text=text, language=tags.language, emotion=tags.emotion, event=tags.event, raw=raw,
            tokens=tuple(text_ids), pieces=tuple(pieces[i] for i in spoken),
            frames=tuple((firsts[i], lasts[i]) for i in spoken), logprobs=logprobs,
            emitted=len(ids), encoder_frames=int(path.shape[0]), no_speech_prob=no_speech,
        )

    def _log_posteriors(self, hidden: torch.Tensor, frames: list[int]) -> torch.Tensor:
        """log_softmax of the CTC head's logits on ``frames`` of one item, in float32: what funasr's
        ``ctc.log_softmax`` gives there. Only these few rows: the whole (frames x 25055) would cost
        as much as the head's pass again."""
        rows = hidden[torch.tensor(frames, dtype=torch.long, device=hidden.device)]
        if isinstance(self.best_path, CtcBestPath):  # the head's float32 weights
            logits = torch.nn.functional.linear(rows.float(), self.best_path.weight, self.best_path.bias)
        else:
            logits = self.model.ctc.ctc_lo(rows)
        return torch.log_softmax(logits.float(), dim=-1)

    def warm_up(self) -> None:
        self.run_batch([AsrItem(np.zeros(SAMPLE_RATE, dtype=np.float32))])


def _encode_reduced(encoder, xs_pad: torch.Tensor, ilens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``SenseVoiceEncoderSmall.forward`` for float16/bfloat16 weights (the eager path, where
    ``cpu_bf16`` does not apply: CUDA, or a CPU without bfloat16 support in oneDNN). funasr builds
    the padding mask in float32, and half-precision values times it become float32, which the FSMN
    convolution's half-precision weight then refuses; here the mask has the values' dtype. The
    positional encoding is computed in float32 (bfloat16 holds integers exactly only up to 256)."""
    from funasr.models.sense_voice.model import sequence_mask

    present = sequence_mask(ilens, maxlen=xs_pad.shape[1], dtype=torch.bool, device=ilens.device)
    masks = present.to(xs_pad.dtype)[:, None, :]
    positions = SanmEncoder.positions(xs_pad.shape[1], xs_pad.shape[2], xs_pad.device)
    xs_pad = xs_pad * encoder.output_size() ** 0.5 + positions.to(xs_pad.dtype)
    for layer in [*encoder.encoders0, *encoder.encoders]:
        xs_pad = layer(xs_pad, masks)[0]
    xs_pad = encoder.after_norm(xs_pad)
    for layer in encoder.tp_encoders:
        xs_pad = layer(xs_pad, masks)[0]
    # Counted from the boolean mask: a sum in bfloat16 is exact only to 256 (float16: 2048).
    return encoder.tp_norm(xs_pad), present.sum(1).int()
