"""Request preparation for /v1/audio/transcriptions: decode the upload, find the speech, cut long
audio at its pauses, queue one batcher item per segment, and put the transcript together.

* Decoding (PyAV) and voice activity detection (silero-vad) run in the thread pool.
* No speech at all: an empty transcript (digital silence never reaches the model).
* Audio up to ``max_segment_s`` long is one segment, the whole clip, exactly what funasr's own
  ``generate`` would see; the VAD only decides whether there is speech, alongside the forward pass.
  Longer audio is split at the pauses the VAD finds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from server.config import Settings
from server.engine.batching import Batcher, gather_results
from server.engine.torch_threads import one_torch_thread
from server.transcription.audio import SAMPLE_RATE, decode_audio
from server.transcription.model import AsrItem, AsrResult, SenseVoice
from server.transcription.vad import SILENT_PEAK, has_speech, split_on_pauses

# Scripts written without spaces between words: their segments are joined without one.
_NO_SPACE_LANGUAGES = {"zh", "yue", "ja"}


@dataclass(frozen=True)
class TranscriptSegment:
    start: float
    end: float
    text: str
    language: str | None
    emotion: str | None
    event: str | None


@dataclass(frozen=True)
class Transcript:
    duration: float
    segments: list[TranscriptSegment]

    @property
    def text(self) -> str:
        text = ""
        for seg in (s for s in self.segments if s.text):
            joiner = "" if not text or seg.language in _NO_SPACE_LANGUAGES else " "
            text += joiner + seg.text
        return text

    @property
    def language(self) -> str | None:
        """The language of most of the speech."""
        spoken: dict[str, float] = {}
        for seg in self.segments:
            if seg.language and seg.text:
                spoken[seg.language] = spoken.get(seg.language, 0.0) + seg.end - seg.start
        return max(spoken, key=spoken.get) if spoken else None


class TranscriptionService:
    def __init__(self, model: SenseVoice, batcher: Batcher, *, max_seconds: float, max_segment_s: float,
                 timeout: float):
        self.model = model
        self.batcher = batcher
        self.max_seconds = max_seconds
        self.max_segment_s = max_segment_s
        self.timeout = timeout

    @classmethod
    def from_settings(cls, model: SenseVoice, batcher: Batcher, settings: Settings) -> TranscriptionService:
        return cls(model, batcher, max_seconds=settings.asr_max_audio_seconds,
                   max_segment_s=settings.asr_max_segment_seconds, timeout=settings.request_timeout)

    async def transcribe(self, data: bytes, *, language: str = "auto", use_itn: bool = True,
                         priority: str = "normal", is_gone: Callable[[], Awaitable[bool]] | None = None) -> Transcript:
        audio = await self.batcher.gate.run_preparation(decode_audio, data, max_seconds=self.max_seconds)
        if len(audio) <= self.max_segment_s * SAMPLE_RATE:
            spans, results = await self._whole_clip(audio, language, use_itn, priority, is_gone)
        else:
            spans = await self.batcher.gate.run_preparation(self._speech_segments, audio)
            futures = await self._submit(audio, spans, language, use_itn, priority)
            results = await gather_results(futures, self.timeout, is_gone)
        segments = [
            TranscriptSegment(start / SAMPLE_RATE, end / SAMPLE_RATE, r.text, r.language, r.emotion, r.event)
            for (start, end), r in zip(spans, results)
        ]
        return Transcript(len(audio) / SAMPLE_RATE, segments)

    async def _whole_clip(self, audio: np.ndarray, language: str, use_itn: bool, priority: str,
                          is_gone: Callable[[], Awaitable[bool]] | None) -> tuple[list, list[AsrResult]]:
        """A clip short enough to be one segment is transcribed whole, exactly what funasr's own
        ``generate`` would see. It is queued as soon as its features are ready while the VAD decides,
        in parallel, whether it holds speech at all: a lone request waits for the longer of the two,
        not their sum (and the VAD usually decides from the clip's first seconds: ``has_speech``).
        No speech: the queued item is dropped, or its result ignored if it was already computed,
        and the transcript is empty."""
        if audio.size < self.model.min_samples or float(np.abs(audio).max()) < SILENT_PEAK:
            return [], []  # digital silence, or too short to hold a word: not worth a queued item
        spans = [(0, len(audio))]
        # The VAD runs while the features are computed (both single-threaded: one core each), so
        # that it is done before the forward pass starts and does not take a core from it.
        speech_check = asyncio.ensure_future(
            self.batcher.gate.run_preparation(has_speech, audio, sample_rate=SAMPLE_RATE))
        try:
            futures = await self._submit(audio, spans, language, use_itn, priority)
        except BaseException:
            speech_check.cancel()
            raise
        try:
            speech = await speech_check
        except BaseException:
            _discard(futures)
            raise
        if not speech:
            _discard(futures)
            return [], []
        return spans, await gather_results(futures, self.timeout, is_gone)

    async def _submit(self, audio: np.ndarray, spans: list[tuple[int, int]], language: str,
                      use_itn: bool, priority: str) -> list:
        items = await self.batcher.gate.run_preparation(self._prepare, audio, spans, language, use_itn)
        return self.batcher.submit([(item, self.model.cost(item)) for item in items], priority)

    def _prepare(self, audio: np.ndarray, spans: list[tuple[int, int]], language: str,
                 use_itn: bool) -> list[AsrItem]:
        """The segments as model items with their features, computed here in the thread pool, so
        that the model's worker thread spends its time on the network alone (single-threaded, as
        all torch work off that thread: server.engine.torch_threads)."""
        with one_torch_thread():
            return [self.model.with_features(AsrItem(audio[start:end], language, use_itn)) for start, end in spans]

    def _speech_segments(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """Sample ranges of the speech, cut at pauses into segments no longer than the limit."""
        speech = split_on_pauses(audio, max_segment_s=self.max_segment_s, sample_rate=SAMPLE_RATE)
        return [(round(s.start * SAMPLE_RATE), round(s.end * SAMPLE_RATE)) for s in speech]


def _discard(futures: list) -> None:
    """Drop queued items; for finished ones, mark their outcome seen so a failure is not logged
    as 'never retrieved' (nobody asked for this result)."""
    for future in futures:
        if not future.cancel() and not future.cancelled():
            future.exception()
