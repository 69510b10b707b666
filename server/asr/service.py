"""Request preparation for /v1/audio/transcriptions: decode the upload, find the speech, cut long
audio at its pauses, queue one batcher item per segment, and put the transcript together.

* Decoding (PyAV) and voice activity detection (silero-vad) run in the thread pool.
* No speech at all: an empty transcript (digital silence never reaches the model).
* Audio up to ``max_segment_s`` long is one segment, the whole clip, exactly what funasr's own
  ``generate`` would see; the VAD only decides whether there is speech, alongside the forward pass.
  Longer audio is read as a pipeline: decoded and scanned a few seconds a turn, each segment queued
  as soon as the VAD has closed it (server.asr.segmenter), the same segments as the whole file's.
* A whole answer waits for every segment (``transcribe``); a stream takes them one at a time, in
  order, as they are done (``queue``, then ``segments_in_order``).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from server.config import Settings
from server.engine.batching import Admission, Batcher, gather_results
from server.engine.deadlines import Terms
from server.engine.torch_threads import one_torch_thread
from server.family import Usage
from server.asr.audio import SAMPLE_RATE, AudioReader
from server.asr.model import AsrItem, AsrResult, SenseVoice
from server.asr.settings import AsrSettings
from server.asr.upload_budget import UploadBudget
from server.asr.segmenter import StreamingSegmenter
from server.asr.vad import AUTO, SILENT_PEAK, Chunking, has_speech
from server.asr.words import QUERY_FRAMES, Word, align_words, token_times

# Audio decoded and scanned for speech per preparation turn once the upload is read on. A stream
# scans a few seconds a turn until its first segments are on the batcher (the first is final once
# the speech after it has begun), then a minute a turn, so that the rest go to the model in groups
# (a pass over one short segment costs more per segment than a pass over several: with turns
# growing 5, 20, 60 s the stream's end came 8-19% later than before the pipeline, at full size;
# going straight to a minute, 1-15%).
# Turns stay short (a minute's scan is ~0.6 s on one core), so passes of other requests run between.
FIRST_SCAN_SECONDS, LAST_SCAN_SECONDS = 5.0, 60.0

# Scripts written without spaces between words: their segments are joined without one.
_NO_SPACE_LANGUAGES = {"zh", "yue", "ja"}


@dataclass(frozen=True)
class TranscriptSegment:
    start: float  # seconds from the start of the audio
    end: float
    result: AsrResult
    words: tuple[Word, ...] = ()

    @property
    def text(self) -> str:
        return self.result.text

    @property
    def language(self) -> str | None:
        return self.result.language

    @property
    def emotion(self) -> str | None:
        return self.result.emotion

    @property
    def event(self) -> str | None:
        return self.result.event


def text_delta(segment: TranscriptSegment, *, after_text: bool) -> str:
    """What a segment adds to the transcript's text: its text, after a space if text came before
    and its language is written with spaces; "" for a segment without text. A stream's deltas are
    these, so they add up to the text of a whole answer (``Transcript.text``)."""
    if not segment.text:
        return ""
    return ("" if not after_text or segment.language in _NO_SPACE_LANGUAGES else " ") + segment.text


@dataclass(frozen=True)
class Transcript:
    duration: float
    segments: list[TranscriptSegment]
    requested_language: str = "auto"

    @property
    def text(self) -> str:
        text = ""
        for seg in self.segments:
            text += text_delta(seg, after_text=bool(text))
        return text

    @property
    def usage(self) -> Usage:
        """The encoder's input frames (60 ms of audio each, and its query frames per segment) and the
        tokens the model emitted, tags included: OpenAI's token usage for transcription."""
        return Usage(sum(s.result.encoder_frames for s in self.segments), sum(s.result.emitted for s in self.segments))

    @property
    def language(self) -> str | None:
        """The language of most of the speech; the requested one when nothing was said."""
        spoken: dict[str, float] = {}
        for seg in self.segments:
            if seg.language and seg.text:
                spoken[seg.language] = spoken.get(seg.language, 0.0) + seg.end - seg.start
        if spoken:
            return max(spoken, key=lambda code: spoken[code])
        return None if self.requested_language == "auto" else self.requested_language


class QueuedTranscription:
    """An upload's segments on the batcher, queued as the upload is read: one future per segment,
    in the audio's order. ``duration`` is known once every segment is queued (``all_queued``)."""

    def __init__(self, terms: Terms):
        self.terms = terms  # its deadline bounds each wait
        self.spans: list[tuple[int, int]] = []  # sample ranges of the segments
        self.futures: list[asyncio.Future] = []
        self.duration = 0.0
        self.reading: asyncio.Task | None = None  # the task reading the rest of the upload
        self._complete = False
        self._error: BaseException | None = None
        self._changed = asyncio.Event()

    def add(self, spans: list[tuple[int, int]], futures: list[asyncio.Future]) -> None:
        self.spans += spans
        self.futures += futures
        self._changed.set()

    def finish(self, duration: float) -> None:
        self.duration, self._complete = duration, True
        self._changed.set()

    def fail(self, error: BaseException) -> None:
        self._error, self._complete = error, True
        self._changed.set()

    async def segment(self, index: int) -> tuple[tuple[int, int], asyncio.Future] | None:
        """The ``index``-th segment once it is queued; None past the last. Raises what stopped the
        reading (a limit passed mid-file, a refusal, the deadline)."""
        while index >= len(self.futures) and not self._complete:
            await self._wait_for_change()
        if self._error is not None and index >= len(self.futures):
            raise self._error
        return (self.spans[index], self.futures[index]) if index < len(self.futures) else None

    async def all_queued(self) -> None:
        while not self._complete:
            await self._wait_for_change()
        if self._error is not None:
            raise self._error

    async def _wait_for_change(self) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout=max(0.0, self.terms.deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise self.terms.missed() from None

    def cancel(self) -> None:
        """Stop reading, and drop the segments not computed yet (nobody will read them)."""
        if self.reading is not None:
            self.reading.cancel()
        _discard(self.futures)


class TranscriptionService:
    def __init__(self, model: SenseVoice, batcher: Batcher, *, max_seconds: float, max_segment_s: float,
                 uploads: UploadBudget | None = None, max_upload_bytes: int = 50 * 1024 * 1024):
        self.model = model
        self.batcher = batcher
        self.max_upload_bytes = max_upload_bytes
        self.max_seconds = max_seconds
        self.max_segment_s = max_segment_s
        self.uploads = uploads or UploadBudget(0, 4 * max_seconds, SAMPLE_RATE)

    @classmethod
    def from_settings(cls, model: SenseVoice, batcher: Batcher, own: AsrSettings,
                      settings: Settings) -> TranscriptionService:
        uploads = UploadBudget(own.max_decoding, own.max_audio_held_seconds, SAMPLE_RATE)
        return cls(model, batcher, max_seconds=own.max_audio_seconds, max_segment_s=own.max_segment_seconds,
                   uploads=uploads, max_upload_bytes=own.max_upload_bytes)

    async def transcribe(self, data: bytes, *, language: str = "auto", use_itn: bool = True,
                         terms: Terms, posteriors: bool = False, chunking: Chunking = AUTO,
                         is_gone: Callable[[], Awaitable[bool]] | None = None) -> Transcript:
        """``posteriors``: read avg_logprob and no_speech_prob too (AsrItem.posteriors)."""
        # Nobody reads this answer before it is whole. On a CPU, where scanning and passes take turns
        # (server.engine.cpu_gate), the whole upload is scanned in one turn and its segments queued
        # together, for the fewest and fullest passes; on a GPU a minute a turn, so that passes
        # run while the rest is scanned.
        whole_file = self.batcher.gate.enabled
        queued = await self.queue(data, language=language, use_itn=use_itn, terms=terms, posteriors=posteriors,
                                  chunking=chunking, first_scan_s=math.inf if whole_file else LAST_SCAN_SECONDS)
        try:
            await queued.all_queued()
            results = await gather_results(queued.futures, terms, is_gone)
        except BaseException:
            queued.cancel()
            raise
        return Transcript(queued.duration, [self.segment(span, r) for span, r in zip(queued.spans, results)],
                          language)

    async def queue(self, data: bytes, *, language: str = "auto", use_itn: bool = True, terms: Terms,
                    posteriors: bool = False, chunking: Chunking = AUTO,
                    first_scan_s: float = FIRST_SCAN_SECONDS) -> QueuedTranscription:
        """Start reading the upload: returns once it has begun to decode, its segments then queued
        as the voice detection closes each while the rest is still read. What can be found wrong
        before then (not audio, a refusal at the door, no decode slot) is raised here, so the
        caller can still answer with an error status; what is found later (a limit passed
        mid-file) stops the reading, and is raised to whoever waits for the segments.
        ``chunking``: a caller's own (OpenAI's server_vad) cuts even a short clip at its pauses;
        AUTO transcribes a clip that fits one segment whole. ``first_scan_s``: the audio scanned per
        turn until the first segments are queued (a minute per turn after; inf: all of it at once)."""
        queued = QueuedTranscription(terms)
        started = asyncio.get_running_loop().create_future()
        queued.reading = asyncio.create_task(
            self._read(data, queued, started, language, use_itn, posteriors, chunking, first_scan_s),
            name="read-upload")
        try:
            await started
        except BaseException:
            queued.cancel()
            raise
        return queued

    async def _read(self, data: bytes, queued: QueuedTranscription, started: asyncio.Future, language: str,
                    use_itn: bool, posteriors: bool, chunking: Chunking, first_scan_s: float) -> None:
        terms, gate = queued.terms, self.batcher.gate
        try:
            # The door first (a refusal costs nothing); then a decode slot, and the decoded audio counts
            # against the upload budget until the reading is done.
            with self.batcher.admission(terms, self.uploads.wait_forecast(terms.priority)) as admission:
                async with self.uploads.decoding(terms.priority, terms.deadline) as hold:
                    reader = AudioReader(data, max_seconds=self.max_seconds, hold=hold)
                    try:
                        first = await gate.run_preparation(reader.read, int(self.max_segment_s * SAMPLE_RATE) + 1)
                        if reader.done and chunking == AUTO and len(first) <= self.max_segment_s * SAMPLE_RATE:
                            queued.add(*await self._whole_clip(first, language, use_itn, posteriors, admission))
                            queued.finish(len(first) / SAMPLE_RATE)
                            started.set_result(None)
                            return
                        started.set_result(None)
                        await self._read_on(reader, first, queued, admission, chunking, language, use_itn, posteriors,
                                            first_scan_s)
                    finally:
                        reader.close()
        except asyncio.CancelledError:
            if not started.done():
                started.cancel()
            raise
        except BaseException as err:  # delivered, not raised: the task's outcome is the upload's
            if started.done():
                queued.fail(err)
            else:
                started.set_exception(err)

    async def _read_on(self, reader: AudioReader, first: np.ndarray, queued: QueuedTranscription,
                       admission: Admission, chunking: Chunking, language: str, use_itn: bool,
                       posteriors: bool, first_scan_s: float) -> None:
        """Scan the audio for speech a step at a time, each step a preparation turn (forward passes
        run between them), queueing each segment as soon as it is final."""
        segmenter = StreamingSegmenter(max_segment_s=self.max_segment_s, sample_rate=SAMPLE_RATE, chunking=chunking)
        try:
            unscanned, finished, seconds = first, False, first_scan_s
            while not finished:
                if time.monotonic() > queued.terms.deadline:
                    raise queued.terms.missed()
                spans, finished, unscanned = await self.batcher.gate.run_preparation(
                    _scan_step, reader, segmenter, unscanned, seconds)
                if spans:  # the first segments are out: the rest in groups
                    seconds = LAST_SCAN_SECONDS
                if spans:
                    queued.add(spans, await self._submit(segmenter.audio, spans, language, use_itn, posteriors,
                                                         admission))
                    # Let the batcher ask for its pass before the next scan asks for its turn: the
                    # segments just queued go to the model first.
                    await asyncio.sleep(0)
            queued.finish(len(segmenter.audio) / SAMPLE_RATE)
        finally:
            segmenter.close()

    async def segments_in_order(self, queued: QueuedTranscription) -> AsyncGenerator[TranscriptSegment, None]:
        """Each segment as soon as it and every one before it are computed. Leaving early (the
        client went away, an item failed, the request timed out) stops the reading and cancels
        the futures still pending, so the batcher drops their queued items. Use it under
        ``contextlib.aclosing``."""
        terms = queued.terms
        try:
            index = 0
            while (found := await queued.segment(index)) is not None:
                span, future = found
                done, _ = await asyncio.wait({future}, timeout=max(0.0, terms.deadline - time.monotonic()))
                if not done:
                    raise terms.missed()
                yield self.segment(span, future.result())
                index += 1
        finally:
            queued.cancel()

    def segment(self, span: tuple[int, int], result: AsrResult) -> TranscriptSegment:
        start, end = span[0] / SAMPLE_RATE, span[1] / SAMPLE_RATE
        times = token_times(result.frames, result.encoder_frames - QUERY_FRAMES, offset=start,
                            duration=end - start, frame_ms=self.model.frame_ms)
        return TranscriptSegment(start, end, result, tuple(align_words(result.pieces, times)))

    async def _whole_clip(self, audio: np.ndarray, language: str, use_itn: bool, posteriors: bool,
                          admission: Admission) -> tuple[list[tuple[int, int]], list[asyncio.Future]]:
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
            futures = await self._submit(audio, spans, language, use_itn, posteriors, admission)
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
        return spans, futures

    async def _submit(self, audio: np.ndarray, spans: list[tuple[int, int]], language: str,
                      use_itn: bool, posteriors: bool, admission: Admission) -> list:
        items = await self.batcher.gate.run_preparation(self._prepare, audio, spans, language, use_itn, posteriors)
        return admission.submit([(item, self.model.cost(item)) for item in items])

    def _prepare(self, audio: np.ndarray, spans: list[tuple[int, int]], language: str,
                 use_itn: bool, posteriors: bool = False) -> list[AsrItem]:
        """The segments as model items with their features, computed here in the thread pool, so
        that the model's worker thread spends its time on the network alone (single-threaded, as
        all torch work off that thread: server.engine.torch_threads)."""
        with one_torch_thread():
            return [self.model.with_features(AsrItem(audio[start:end], language, use_itn, posteriors=posteriors))
                    for start, end in spans]



def _scan_step(reader: AudioReader, segmenter: StreamingSegmenter, unscanned: np.ndarray,
               seconds: float) -> tuple[list[tuple[int, int]], bool, np.ndarray]:
    """Scan the next ``seconds`` (what was read already, then read on): the segments that became
    final, whether the upload is done, and what is left read but unscanned."""
    step = int(seconds * SAMPLE_RATE) if math.isfinite(seconds) else sys.maxsize
    if unscanned.size < step and not reader.done:
        unscanned = np.concatenate([unscanned, reader.read(step - unscanned.size)])
    piece, unscanned = unscanned[:step], unscanned[step:]
    spans = segmenter.feed(piece) if piece.size else []
    if not unscanned.size and reader.done:
        return spans + segmenter.finish(), True, unscanned
    return spans, False, unscanned


def _discard(futures: list) -> None:
    """Drop queued items; for finished ones, mark their outcome seen so a failure is not logged
    as 'never retrieved' (nobody asked for this result)."""
    for future in futures:
        if not future.cancel() and not future.cancelled():
            future.exception()
