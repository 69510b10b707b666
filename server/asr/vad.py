"""Cut long audio into segments at speech pauses, with silero-vad (its TorchScript model, on CPU).

Thread safety: the silero model is stateful (forward() keeps the LSTM state and the last chunk's
context on the module), so threads sharing one model corrupt each other's state; 8 threads sharing
one crashed the process (segfault). A lock around one model would serialise all VAD on one core.
So each call borrows a model no other call is using from a pool, loading one (~4 MB, ~0.05 s) only
when all are busy: as many models as concurrent calls. A pool, not threading.local, because the
server's thread pool (anyio) retires threads idle for 10 s and would reload per-thread models.

Why TorchScript and not ONNX: silero-vad ships both, but ONNX needs onnxruntime, which is not a
dependency of this server; the .jit file loads offline with torch alone.
"""

from __future__ import annotations

import functools
import inspect
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from server.engine.torch_threads import one_torch_thread

# Gaps shorter than this are pauses inside an utterance (commas, breaths): keep them in one segment.
_MERGE_GAP_S = 1.0
# How far a segment reaches into the silence around it, so a word's onset/decay is not clipped.
_PAD_S = 0.2
# A speech stretch longer than the limit is cut at its quietest 20 ms within the last 2 s before it.
_CUT_SEARCH_S, _CUT_FRAME_S = 2.0, 0.02

_lock = threading.Lock()
_silero = None
_idle_models: list = []


# Peak amplitude under which audio is taken as silence without running the model (-80 dBFS; a
# 16-bit file's quietest step is 3e-5).
SILENT_PEAK = 1e-4


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float


@dataclass(frozen=True)
class Chunking:
    """How speech is found and cut: silero's threshold and the silence that ends speech (its
    defaults), which pauses stay inside one segment, and how far a segment reaches into the silence
    before and after its speech."""

    threshold: float = 0.5
    min_silence_ms: int = 100
    merge_gap_s: float = _MERGE_GAP_S
    pad_before_s: float = _PAD_S
    pad_after_s: float = _PAD_S


AUTO = Chunking()  # the server's own choice: segments as long as the limit allows, cut at pauses


def server_vad(threshold: float, prefix_padding_ms: int, silence_duration_ms: int) -> Chunking:
    """OpenAI's ``server_vad`` chunking: a silence of ``silence_duration_ms`` ends a segment (no
    pause that long is kept inside one), which starts ``prefix_padding_ms`` before its speech."""
    return Chunking(threshold, silence_duration_ms, merge_gap_s=0.0, pad_before_s=prefix_padding_ms / 1000)


def split_on_pauses(audio: np.ndarray, *, max_segment_s: float = 30.0, sample_rate: int = 16000,
                    chunking: Chunking = AUTO) -> list[Segment]:
    """Segments of ``audio`` (1-D float32 mono) that hold speech, each at most ``max_segment_s`` long.

    Neighbouring speech closer than 1 s is merged while the result fits the limit; longer speech is
    cut at its quietest point near the limit. Boundaries sit in the pauses, padded up to 0.2 s into
    the silence without overlapping. Returns [] when there is no speech, so it doubles as the
    "is there any speech" check. Same audio, same segments. Safe to call from many threads.
    """
    samples = _mono_tensor(audio, sample_rate)
    regions = []
    # A tiny network on 32 ms chunks: intra-op threads cost more than they give (90x real time on
    # 1 thread, 40-100x on 2, worse the busier the CPU).
    with borrowed_model() as model, one_torch_thread():
        # Digital silence holds no speech, and the VAD would cost ~0.7 s per minute of it to say so:
        # it only runs over the stretches that are not silent.
        for start, end in _audible_stretches(samples, sample_rate):
            # get_speech_timestamps resets the model's state first: a borrowed model carries nothing over.
            found = silero_module().get_speech_timestamps(
                samples[start:end], model, sampling_rate=sample_rate, threshold=chunking.threshold,
                min_silence_duration_ms=chunking.min_silence_ms)
            regions += [{"start": r["start"] + start, "end": r["end"] + start} for r in found]
    spans = plan_segments([(r["start"], r["end"]) for r in regions], samples.numpy(),
                          max_len=int(max_segment_s * sample_rate), sample_rate=sample_rate, chunking=chunking)
    return [Segment(start / sample_rate, end / sample_rate) for start, end in spans]


def has_speech(audio: np.ndarray, *, sample_rate: int = 16000) -> bool:
    """Whether ``split_on_pauses(audio)`` would find any speech (the same answer, always), but
    usually from the first second or two of the audio, where the full pass reads all of it.

    silero's probability for a window does not depend on the windows after it, and neither does
    its verdict on a speech region that is already settled within the first N windows. So the
    probabilities are computed window by window, exactly as ``get_speech_timestamps`` does, and
    silero's own ``get_speech_timestamps_from_probs`` is asked every few windows (8, 16, ... 64,
    then 128, 256, ...: a bounded share of the work) whether a settled region exists yet. Only
    audio without speech is read to its end."""
    samples = _mono_tensor(audio, sample_rate)
    with borrowed_model() as model, one_torch_thread():
        return any(_windows_to_find_speech(samples[start:end], model, sample_rate) is not None
                   for start, end in _audible_stretches(samples, sample_rate))


def _windows_to_find_speech(samples: torch.Tensor, model, sample_rate: int) -> int | None:
    """How many VAD windows it took to be sure ``samples`` hold speech, or None if they hold none."""
    silero = silero_module()
    window = 512 if sample_rate == 16000 else 256  # as get_speech_timestamps
    settled = _settled_length(sample_rate, window)
    model.reset_states()
    probs: list[float] = []
    check_at = 8
    for start in range(0, samples.numel(), window):
        chunk = samples[start: start + window]
        if chunk.numel() < window:
            chunk = torch.nn.functional.pad(chunk, (0, window - chunk.numel()))
        probs.append(model(chunk, sample_rate).item())
        seen = len(probs) * window
        if len(probs) == check_at and seen < samples.numel():
            check_at += 8 if check_at < 64 else check_at
            found = silero.get_speech_timestamps_from_probs(probs, sampling_rate=sample_rate, audio_length_samples=seen)
            # A region that ends before `seen` was closed by a pause: final. One still open at `seen`
            # is final once it is longer than `settled`: a pause from here on can end it no earlier
            # than where the pause began, less than `min_silence` ago, and it would still be kept.
            if any(region["end"] < seen or region["end"] - region["start"] > settled for region in found):
                return len(probs)
    found = silero.get_speech_timestamps_from_probs(probs, sampling_rate=sample_rate,
                                                   audio_length_samples=samples.numel())
    return len(probs) if found else None


@functools.cache
def _settled_length(sample_rate: int, window: int) -> int:
    """Samples after which an open speech region (as reported, its start padded earlier) is sure to
    be kept: silero's minimum speech, plus the minimum silence that closes a region, the start's
    padding and one window of rounding (silero's defaults, which split_on_pauses uses too)."""
    defaults = inspect.signature(silero_module().get_speech_timestamps_from_probs).parameters
    ms = (defaults["min_speech_duration_ms"].default + defaults["min_silence_duration_ms"].default
          + defaults["speech_pad_ms"].default)
    return int(sample_rate * ms / 1000) + window


def _mono_tensor(audio: np.ndarray, sample_rate: int) -> torch.Tensor:
    if sample_rate not in (8000, 16000):
        raise ValueError(f"silero-vad works at 8000 or 16000 Hz, not {sample_rate}")
    samples = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {tuple(samples.shape)}")
    return samples


def _audible_stretches(samples: torch.Tensor, sample_rate: int) -> list[tuple[int, int]]:
    """Sample ranges not in digital silence: 0.5 s windows whose peak passes SILENT_PEAK, each
    widened by one window on both sides so the VAD sees speech onsets in context."""
    window = sample_rate // 2
    count = -(-samples.numel() // window)
    padded = torch.nn.functional.pad(samples.abs(), (0, count * window - samples.numel()))
    loud = (padded.view(count, window).amax(dim=1) >= SILENT_PEAK).tolist()
    keep = [any(loud[max(0, i - 1): i + 2]) for i in range(count)]
    stretches: list[tuple[int, int]] = []
    for i, on in enumerate(keep):
        if not on:
            continue
        start, end = i * window, min((i + 1) * window, samples.numel())
        if stretches and stretches[-1][1] == start:
            stretches[-1] = (stretches[-1][0], end)
        else:
            stretches.append((start, end))
    return stretches


def plan_segments(regions: list[tuple[int, int]], audio: np.ndarray, *, max_len: int,
                  sample_rate: int, chunking: Chunking = AUTO) -> list[tuple[int, int]]:
    """Speech regions (sample indices, sorted, disjoint) -> segments: cut, merged, then padded."""
    merged = merge_regions(regions, audio, max_len=max_len, sample_rate=sample_rate, chunking=chunking)
    return pad_segments(merged, len(audio), max_len=max_len, sample_rate=sample_rate, chunking=chunking)


def merge_regions(regions: list[tuple[int, int]], audio: np.ndarray, *, max_len: int, sample_rate: int,
                  chunking: Chunking = AUTO) -> list[tuple[int, int]]:
    """Speech longer than the limit cut at its quietest points, then neighbours closer than the
    merge gap joined while they fit the limit. Left to right: a segment depends only on the
    regions up to its own and on where the next one starts."""
    if max_len < sample_rate * 0.1:
        raise ValueError("max_segment_s must be at least 0.1 s")
    pieces: list[tuple[int, int]] = []
    for start, end in regions:
        while end - start > max_len:
            cut = _quietest_cut(audio, start, max_len, sample_rate)
            pieces.append((start, cut))
            start = cut
        pieces.append((start, end))

    merged: list[tuple[int, int]] = []
    for start, end in pieces:
        if merged and start - merged[-1][1] <= chunking.merge_gap_s * sample_rate and end - merged[-1][0] <= max_len:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def pad_segments(merged: list[tuple[int, int]], audio_length: int, *, max_len: int, sample_rate: int,
                 chunking: Chunking = AUTO) -> list[tuple[int, int]]:
    """Each segment reaches into the silence on each side, at most half of each gap (neighbours
    never overlap; pieces of one cut-up stretch touch) and never past the length limit."""
    pad_before, pad_after = int(chunking.pad_before_s * sample_rate), int(chunking.pad_after_s * sample_rate)
    out = []
    for i, (start, end) in enumerate(merged):
        before = start - merged[i - 1][1] if i > 0 else 2 * start
        after = merged[i + 1][0] - end if i + 1 < len(merged) else 2 * (audio_length - end)
        grow_start = min(pad_before, before // 2, max_len - (end - start))
        grow_end = min(pad_after, after // 2, max_len - (end - start) - grow_start)
        out.append((start - grow_start, end + grow_end))
    return out


def _quietest_cut(audio: np.ndarray, start: int, max_len: int, sample_rate: int) -> int:
    """Where to cut speech starting at ``start``: the centre of the quietest 20 ms frame in the
    last 2 s (at most half the limit) before ``start + max_len``, so the cut lands between words."""
    frame = max(1, int(_CUT_FRAME_S * sample_rate))
    lo = start + max_len - min(int(_CUT_SEARCH_S * sample_rate), max_len // 2)
    window = audio[lo: start + max_len]
    n = len(window) // frame
    if n == 0:
        return start + max_len
    energy = np.square(window[: n * frame].reshape(n, frame), dtype=np.float64).sum(axis=1)
    return lo + int(np.argmin(energy)) * frame + frame // 2  # first minimum: deterministic


def silero_module():
    """Import silero_vad once. Its import runs ``torch.set_num_threads(1)``, which would make the
    whole server's CPU inference single-threaded; put the thread count back."""
    global _silero
    with _lock:
        if _silero is None:
            threads = torch.get_num_threads()
            import silero_vad

            torch.set_num_threads(threads)
            _silero = silero_vad
    return _silero


@contextmanager
def borrowed_model():
    """A model no other call is using: an idle one from the pool, or a new one if all are busy."""
    with _lock:
        model = _idle_models.pop() if _idle_models else None
    if model is None:
        model = silero_module().load_silero_vad(onnx=False)
    try:
        yield model
    finally:
        with _lock:
            _idle_models.append(model)
