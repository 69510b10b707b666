"""``split_on_pauses`` over audio that arrives in pieces: each segment handed out as soon as no audio
still to come can change it, and every segment the same as ``split_on_pauses`` gives for the whole.

The whole-audio path runs three steps, and each can be run as the audio comes because each looks
only a bounded way ahead:

* the audible stretches (0.5 s windows whose peak passes SILENT_PEAK, widened by a window on each
  side): a window's fate is known once the window after it has arrived;
* silero's probabilities, window by window from the start of each stretch (its model state runs
  on), and silero's own ``get_speech_timestamps_from_probs`` over them. That is a state machine
  that starts afresh after it closes a speech region, so it is re-run only from the last region
  known final, never over the whole stretch again; silero's padding of the regions, which only
  looks at the neighbours, is applied here (``_pad_regions``) to the raw regions it returns;
* ``merge_regions``, left to right, and ``pad_segments``: a segment is final once the next one is
  known, or once no speech still to come could start close enough to join it or shorten its pad.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from server.asr.vad import (
    AUTO,
    SILENT_PEAK,
    Chunking,
    borrowed_model,
    silero_module,
    merge_regions,
    pad_segments,
)
from server.engine.torch_threads import one_torch_thread

# silero's defaults, which split_on_pauses keeps: the padding of a speech region, and the shortest
# speech it reports.
SPEECH_PAD_MS, MIN_SPEECH_MS = 30, 250


@dataclass
class _Stretch:
    """An audible stretch being read: its probabilities and the speech regions found so far."""

    start: int  # sample where it begins
    probs: list[float] = field(default_factory=list)
    idle_from: int = 0  # window from which silero's state machine starts afresh
    final: list[tuple[int, int]] = field(default_factory=list)  # raw regions, relative, that cannot change
    pending: list[tuple[int, int]] = field(default_factory=list)  # raw regions after them, that still may


class StreamingSegmenter:
    """Feed it the audio (``feed``), then ``finish``; each returns the segments, as sample ranges,
    that became final. Not thread-safe: one caller at a time (each call may run on any thread)."""

    def __init__(self, *, max_segment_s: float, sample_rate: int = 16000, chunking: Chunking = AUTO):
        if sample_rate not in (8000, 16000):
            raise ValueError(f"silero-vad works at 8000 or 16000 Hz, not {sample_rate}")
        self.sample_rate, self.chunking = sample_rate, chunking
        self.max_len = int(max_segment_s * sample_rate)
        self._loud_window = sample_rate // 2
        self._vad_window = 512 if sample_rate == 16000 else 256
        self._pad = sample_rate * SPEECH_PAD_MS / 1000
        self._min_silence = sample_rate * chunking.min_silence_ms / 1000
        self._min_speech = sample_rate * MIN_SPEECH_MS / 1000
        self._neg_threshold = max(chunking.threshold - 0.15, 0.01)  # silero's exit threshold
        self._audio = np.empty(sample_rate * 60, dtype=np.float32)
        self._length = 0
        self._loud: list[bool] = []
        self._decided = 0  # windows whose place (in a stretch or not) is known
        self._stretch: _Stretch | None = None
        self._regions: list[tuple[int, int]] = []  # padded, absolute: the closed stretches' and the final ones
        self._emitted = 0
        self._model: Any = None  # silero's: borrowed from the pool at the first stretch, given back by close()
        self._lease = ExitStack()

    @property
    def audio(self) -> np.ndarray:
        """The audio fed so far (a view: it changes as more is fed)."""
        return self._audio[: self._length]

    def feed(self, samples: np.ndarray) -> list[tuple[int, int]]:
        self._append(samples)
        with one_torch_thread(), torch.no_grad():  # as get_speech_timestamps runs the model
            self._advance(finished=False)
        return self._ready(finished=False)

    def finish(self) -> list[tuple[int, int]]:
        try:
            with one_torch_thread(), torch.no_grad():
                self._advance(finished=True)
            return self._ready(finished=True)
        finally:
            self.close()

    def close(self) -> None:
        """Give the VAD model back (also when the audio is abandoned halfway)."""
        self._lease.close()
        self._model = None

    # ---- reading the audio ----

    def _append(self, samples: np.ndarray) -> None:
        end = self._length + samples.size
        if end > self._audio.size:
            grown = np.empty(max(end, 2 * self._audio.size), dtype=np.float32)
            grown[: self._length] = self._audio[: self._length]
            self._audio = grown
        self._audio[self._length:end] = samples
        self._length = end

    def _advance(self, finished: bool) -> None:
        window = self._loud_window
        while (len(self._loud) + 1) * window <= self._length:
            i = len(self._loud)
            self._loud.append(bool(np.abs(self._audio[i * window:(i + 1) * window]).max() >= SILENT_PEAK))
        count = math.ceil(self._length / window)
        if finished and len(self._loud) < count:  # the last, partial window
            self._loud.append(bool(np.abs(self._audio[len(self._loud) * window:self._length]).max() >= SILENT_PEAK))
        # A window is in a stretch if it or a neighbour is loud: known once the next one is read.
        decidable = count if finished else len(self._loud) - 1
        while self._decided < decidable:
            i = self._decided
            kept = any(self._loud[max(0, i - 1): i + 2])
            if kept and self._stretch is None:
                self._open(i * window)
            elif not kept and self._stretch is not None:
                self._close(i * window)
            self._decided += 1
        if self._stretch is not None:
            if finished:
                self._close(self._length)
            else:
                self._read_stretch(min(self._decided * window, self._length))

    # ---- one audible stretch ----

    def _open(self, start: int) -> None:
        if self._model is None:
            self._model = self._lease.enter_context(borrowed_model())
        self._model.reset_states()  # as get_speech_timestamps does for each stretch
        self._stretch = _Stretch(start)

    def _read_stretch(self, until: int, pad_last: bool = False) -> None:
        """Probabilities of the stretch's windows that end by ``until`` (and, ``pad_last``, of the
        partial window before it, zero-padded as silero pads it); then its regions."""
        stretch, step = self._stretch, self._vad_window
        assert stretch is not None
        while True:
            start = stretch.start + len(stretch.probs) * step
            if start + step > until and not (pad_last and start < until):
                break
            chunk = torch.from_numpy(self._audio[start: min(start + step, until)])
            if chunk.numel() < step:
                chunk = torch.nn.functional.pad(chunk, (0, step - chunk.numel()))
            stretch.probs.append(self._model(chunk, self.sample_rate).item())
        self._find_regions(stretch, length=until - stretch.start if pad_last else None)

    def _find_regions(self, stretch: _Stretch, length: int | None) -> None:
        """silero's regions from the stretch's probabilities after the last final region, raw
        (unpadded); those closed by a pause are final, and the machine starts afresh after them."""
        offset = stretch.idle_from * self._vad_window
        probs = stretch.probs[stretch.idle_from:]
        found = silero_module().get_speech_timestamps_from_probs(
            probs, sampling_rate=self.sample_rate, threshold=self.chunking.threshold,
            min_silence_duration_ms=self.chunking.min_silence_ms, speech_pad_ms=0,
            audio_length_samples=(length - offset) if length is not None else len(probs) * self._vad_window)
        regions = [(r["start"] + offset, r["end"] + offset) for r in found]
        if length is not None:  # the stretch is closed: everything is final
            stretch.final += regions
            stretch.pending = []
            return
        # Every region but the last was closed by a pause; so was the last if a window came after
        # its end that closes it (silero closes at the first window under its exit threshold a
        # minimum silence after the end), and the machine is idle from the window after that one.
        closed = 0
        for _, end in regions:
            close = self._closing_window(stretch.probs, end)
            if close is None:
                break
            closed += 1
            stretch.idle_from = close + 1
        stretch.final += regions[:closed]
        stretch.pending = regions[closed:]

    def _closing_window(self, probs: list[float], end: int) -> int | None:
        """The window at which silero's machine closes a region that ended (raw) at ``end``, if it
        has been read: the first at least a minimum silence later with a probability under the
        exit threshold."""
        step = self._vad_window
        first = max(end // step, math.ceil((end + self._min_silence) / step))
        for i in range(first, len(probs)):
            if probs[i] < self._neg_threshold:
                return i
        return None

    def _close(self, end: int) -> None:
        stretch = self._stretch
        assert stretch is not None
        self._read_stretch(end, pad_last=True)
        self._regions += [(s + stretch.start, e + stretch.start)
                          for s, e in _pad_regions(stretch.final, end - stretch.start, self._pad)]
        self._stretch = None

    # ---- the segments ----

    def _ready(self, finished: bool) -> list[tuple[int, int]]:
        regions, frontier = list(self._regions), None
        stretch = self._stretch
        if stretch is not None:
            padded = _pad_regions(stretch.final + stretch.pending, None, self._pad)
            # A final region's padded end waits for the region after it to be final too, unless
            # no region can come closer than twice the padding (silero's minimum silence).
            sure = len(stretch.final) if self._min_silence >= 2 * self._pad else max(0, len(stretch.final) - 1)
            regions += [(s + stretch.start, e + stretch.start) for s, e in padded[:sure]]
            # Speech not yet final starts no earlier than the padding before the first region
            # still open, or before a region silero does not report yet because it has lasted
            # less than its minimum speech (it reports an open one only past that).
            read_to = stretch.start + len(stretch.probs) * self._vad_window
            unreported = read_to - self._min_speech - self._vad_window
            starts = [stretch.start + s for s, _ in (stretch.final + stretch.pending)[sure:]] + [unreported]
            frontier = min(starts) - self._pad
        elif not finished:
            frontier = self._decided * self._loud_window  # a new stretch starts no earlier
        if not regions:
            return []
        merged = merge_regions(regions, self.audio, max_len=self.max_len, sample_rate=self.sample_rate,
                               chunking=self.chunking)
        ready = len(merged)
        if frontier is not None:  # not finished
            ready -= 1  # the last waits for what follows it, unless nothing can come close enough
            gap = frontier - merged[-1][1]
            if gap > self.chunking.merge_gap_s * self.sample_rate and gap >= 2 * self.chunking.pad_after_s * self.sample_rate:
                ready += 1
        if ready <= self._emitted:
            return []
        segments = pad_segments(merged, self._length, max_len=self.max_len, sample_rate=self.sample_rate,
                                chunking=self.chunking)
        new, self._emitted = segments[self._emitted:ready], ready
        return new


def _pad_regions(regions: list[tuple[int, int]], length: int | None, pad: float) -> list[tuple[int, int]]:
    """silero's padding of its raw speech regions (``get_speech_timestamps_from_probs``): each
    grows by ``pad`` samples on each side, or by half the silence when its neighbour is closer than
    twice that; the first never before 0, an end never past ``length`` (None: not known yet)."""
    out = [list(r) for r in regions]
    limit = math.inf if length is None else length
    for i, region in enumerate(out):
        if i == 0:
            region[0] = int(max(0, region[0] - pad))
        if i != len(out) - 1:
            silence = out[i + 1][0] - region[1]
            if silence < 2 * pad:
                region[1] += int(silence // 2)
                out[i + 1][0] = int(max(0, out[i + 1][0] - silence // 2))
            else:
                region[1] = int(min(limit, region[1] + pad))
                out[i + 1][0] = int(max(0, out[i + 1][0] - pad))
        else:
            region[1] = int(min(limit, region[1] + pad))
    return [(s, e) for s, e in out]
