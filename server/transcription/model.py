"""SenseVoiceSmall through funasr, on batches of audio segments we form ourselves.

funasr's ``AutoModel`` loads the model, its front end (fbank + LFR + CMVN) and tokenizer exactly as
for ``generate``; ``generate`` itself is not thread-safe, takes one language for a whole call and
does no cross-request batching, so ``run_batch`` repeats ``SenseVoiceSmall.inference`` with a
language and text-norm query per item: four query frames (language, emotion, event, text norm)
before the features, encoder, CTC greedy decoding, BPE decoding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from server.errors import StartupError
from server.models.cpu_bf16 import CtcBestPath, SanmEncoder, fast_path

SAMPLE_RATE = 16000
_TAG = re.compile(r"<\|([^|]*)\|>")


@dataclass(frozen=True)
class AsrItem:
    audio: np.ndarray  # float32 mono 16 kHz
    language: str = "auto"  # auto | zh | en | yue | ja | ko
    use_itn: bool = True
    # The front end's features of `audio` (SenseVoice.features), when request preparation computed
    # them in its thread pool; run_batch computes them otherwise. On a CPU the front end is a
    # single-threaded share of a forward pass (~25% at small size), better spent in parallel with it.
    features: torch.Tensor | None = None


@dataclass(frozen=True)
class AsrResult:
    text: str  # without tags
    language: str | None
    emotion: str | None
    event: str | None
    raw: str  # as the model decoded it, tags included


def parse_rich_text(raw: str) -> AsrResult:
    """Split SenseVoice's ``<|lang|><|emotion|><|event|><|itn|>text`` into text and tags."""
    tags = _TAG.findall(raw)
    text = _TAG.sub("", raw).strip()
    language, emotion, event = (tags + [None] * 3)[:3]
    return AsrResult(text=text, language=language, emotion=emotion, event=event, raw=raw)


class SenseVoice:
    """The model contract: ``cost(item)`` (in 10 ms frames) and ``run_batch(items)``."""

    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype):
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
            self.best_path = CtcBestPath(self.model.ctc.ctc_lo, dtype)
        else:
            self.model = auto.model.to(device=device, dtype=dtype).eval()
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
    def run_batch(self, items: list[AsrItem]) -> list[AsrResult]:
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
        if self.fast:
            best = self.best_path(encoder_out)
        else:
            best = best_path(model.ctc.ctc_lo, encoder_out)
        results = []
        for row in range(len(items)):
            tokens = torch.unique_consecutive(best[row, : int(encoder_lengths[row])])
            tokens = tokens[tokens != model.blank_id].tolist()
            results.append(parse_rich_text(self.tokenizer.decode(tokens)))
        return results

    def warm_up(self) -> None:
        self.run_batch([AsrItem(np.zeros(SAMPLE_RATE, dtype=np.float32))])


def best_path(head: torch.nn.Linear, hidden: torch.Tensor, vocabulary_slice: int = 1024) -> torch.Tensor:
    """Greedy CTC decoding: per frame, the arg max over the vocabulary of the head's logits. funasr
    takes it of their log-softmax, which subtracts the same normaliser from every logit of a frame
    and so keeps their order. The head is as wide as the vocabulary (25055): written out whole,
    the logits of a batch are tens of MB that the log-softmax and the arg max read back from memory,
    which on a CPU took as long as the GEMM itself (small size, 4 x 10 s: 120 ms, 58-63 ms a slice
    at a time, flat over slices of 256-2048). So the head runs a slice of the vocabulary at a time,
    keeping each frame's best so far; a tie keeps the earlier token, as ``argmax`` does.
    ``hidden``: (batch, frames, features) -> (batch, frames) token ids."""
    rows = hidden.reshape(-1, hidden.shape[-1])
    best_logit = best_token = None
    for start in range(0, head.out_features, vocabulary_slice):
        end = start + vocabulary_slice
        bias = None if head.bias is None else head.bias[start:end]
        logit, token = torch.nn.functional.linear(rows, head.weight[start:end], bias).max(dim=-1)
        if best_logit is None:
            best_logit, best_token = logit, token
        else:
            better = logit > best_logit
            best_logit = torch.where(better, logit, best_logit)
            best_token = torch.where(better, token + start, best_token)
    return best_token.view(hidden.shape[:-1])


def _encode_reduced(encoder, xs_pad: torch.Tensor, ilens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``SenseVoiceEncoderSmall.forward`` for float16/bfloat16 weights (the eager path, where
    ``cpu_bf16`` does not apply: CUDA, or a CPU without bfloat16 support in oneDNN). funasr builds
    the padding mask in float32, and half-precision values times it become float32, which the FSMN
    convolution's half-precision weight then refuses; here the mask has the values' dtype. The
    positional encoding is computed in float32 (bfloat16 holds integers exactly only up to 256)."""
    from funasr.models.sense_voice.model import sequence_mask

    masks = sequence_mask(ilens, maxlen=xs_pad.shape[1], dtype=xs_pad.dtype, device=ilens.device)[:, None, :]
    positions = SanmEncoder.positions(xs_pad.shape[1], xs_pad.shape[2], xs_pad.device)
    xs_pad = xs_pad * encoder.output_size() ** 0.5 + positions.to(xs_pad.dtype)
    for layer in [*encoder.encoders0, *encoder.encoders]:
        xs_pad = layer(xs_pad, masks)[0]
    xs_pad = encoder.after_norm(xs_pad)
    for layer in encoder.tp_encoders:
        xs_pad = layer(xs_pad, masks)[0]
    return encoder.tp_norm(xs_pad), masks.squeeze(1).sum(1).int()
