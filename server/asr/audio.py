"""Decode an uploaded audio file to 16 kHz mono float32, in-process, with PyAV (bundled FFmpeg).

Knows nothing of HTTP or of the model: bytes in, samples out, or an ``InvalidRequest`` whose
message is safe to show the client. Decoding is frame by frame and stops as soon as the decoded
audio passes the cap, so an hour-long upload costs at most ``max_seconds`` of decoding and memory.

A few bytes must not buy much work. A header is only a claim: a 7 KB WAV that says 1 Hz decodes
to an hour at 16 kHz (48 s of CPU and 840 MB to resample it), one that says 2^31 Hz fails inside
the resampler. So before any frame is kept, and for every frame (chained streams can change
shape), the sample rate must be one audio has (``MIN_RATE``-``MAX_RATE``) and the channels at
most ``MAX_CHANNELS``; and the decoded audio may not pass ``seconds_allowed(len(data))``: a
minute, plus a second per ``MIN_BYTES_PER_SECOND`` bytes uploaded. No codec in use needs fewer
(Opus's lowest rate is 750 B/s, AMR's 594, Speex's 269, Codec2's 88; FLAC's digital silence at
16 kHz about 190).
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Generator
from contextlib import closing

import av
import numpy as np

from server.errors import InvalidRequest
from server.asr.upload_budget import Hold

SAMPLE_RATE = 16000  # what every upload is decoded to: SenseVoice's front end reads 16 kHz

# 2 kHz is below any recording meant for listening (telephony is 8 kHz, the oldest formats 4-6 kHz);
# 768 kHz is the highest rate audio interfaces record at. 64 channels: a MADI stream, or 7th-order
# ambisonics.
MIN_RATE, MAX_RATE, MAX_CHANNELS = 2_000, 768_000, 64
FREE_SECONDS, MIN_BYTES_PER_SECOND = 60.0, 64


def seconds_allowed(upload_bytes: int) -> float:
    """The most decoded audio an upload of this size may hold (see the module's text)."""
    return FREE_SECONDS + upload_bytes / MIN_BYTES_PER_SECOND

# swresample's default downmix does not normalise for float output: stereo -> mono is
# (L + R) * 0.707, so identical channels come out +3 dB, and 7.1 with the same signal everywhere
# comes out 4.4x too loud (clipped). rematrix_maxval=1 scales the mix matrix so every output
# sample is a weighted average of the inputs (stereo: (L + R) / 2; 5.1/7.1: the standard downmix,
# centre channel weighted most, LFE dropped).
_RESAMPLER_OPTIONS = {"rematrix_maxval": "1.0"}

# Some demuxers open further files named inside the upload: an ffconcat script naming
# "secret.wav" made the server read that file from its working directory. No protocol is needed to
# read the upload itself (it comes through Python), so allow none for anything it refers to.
_CONTAINER_OPTIONS = {"protocol_whitelist": "none"}

# What PyAV raises on data it cannot parse. FFmpegError covers av.error.InvalidDataError (also a
# ValueError), EOFError, OSError and the rest; the builtins cover PyAV's own checks. MemoryError is
# deliberately absent (av.error.MemoryError is both; it is re-raised before this tuple is tried).
_DECODE_ERRORS = (av.error.FFmpegError, ValueError, IndexError, EOFError, OSError)

# A corrupt stretch mid-file costs a packet or two; this many bad packets in a row means the rest
# is garbage (or not this codec at all), so stop and keep what decoded. Fixed, so deterministic.
_MAX_BAD_PACKETS = 16


class AudioError(InvalidRequest):
    """The upload is not audio we can decode (empty, not audio, no audio stream, nothing decoded)."""

    code = "invalid_audio"


class AudioTooLong(InvalidRequest):
    code = "audio_too_long"


def decode_audio(data: bytes, *, max_seconds: float, hold: Hold | None = None) -> np.ndarray:
    """Decode any common audio container/codec to float32 mono at ``SAMPLE_RATE``, values in [-1, 1].

    Takes the first audio stream. A truncated or partly corrupt file yields what decodes before
    the damage. Raises ``AudioError`` when nothing usable decodes and ``AudioTooLong`` as soon as
    the decoded audio passes ``max_seconds`` (declared durations are ignored: samples are counted).
    ``hold``: the request's share of the upload budget, which each decoded chunk is taken from
    (server.asr.upload_budget; ``Overloaded`` when it is spent).
    """
    return np.concatenate(list(decode_chunks(data, max_seconds=max_seconds, hold=hold)))


def decode_chunks(data: bytes, *, max_seconds: float, hold: Hold | None = None) -> Generator[np.ndarray, None, None]:
    """``decode_audio``, a packet's samples at a time: what the file holds is checked before the
    first chunk, and a limit passed mid-file raises when it is reached."""
    if not data:
        raise AudioError("The audio file is empty.", param="file")
    decoded: deque[np.ndarray] = deque()  # filled by the decoder, a packet at a time
    any_audio = False
    try:
        with closing(_decode(data, max_seconds, hold, decoded)) as packets:
            for _ in packets:
                while decoded:
                    any_audio = True
                    yield _sane(decoded.popleft())
    except (AudioError, AudioTooLong):
        raise
    except av.error.MemoryError:
        # FFmpeg could not allocate for what the file claims (a header no audio has, that the checks
        # above did not catch): the file's fault, not the server's.
        raise AudioError("The file's header claims a shape no audio decoder can allocate for.",
                         param="file") from None
    except MemoryError:
        raise
    except _DECODE_ERRORS:
        if not any_audio and not decoded:
            raise AudioError(
                "The file could not be decoded as audio. Send a common audio format "
                "(wav, flac, mp3, m4a, ogg, opus, webm).",
                param="file",
            ) from None
        # Damage after some audio decoded (a cut-off upload): keep what came before it.
    while decoded:
        any_audio = True
        yield _sane(decoded.popleft())
    if not any_audio:
        raise AudioError("The file contains no audio samples.", param="file")


def _sane(samples: np.ndarray) -> np.ndarray:
    # Float codecs and float WAV can carry NaN/inf or values past full scale; the model must not see them.
    np.nan_to_num(samples, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(samples, -1.0, 1.0, out=samples)


class AudioReader:
    """An upload decoded as it is read: ``read(n)`` gives the next ``n`` samples (fewer at the end,
    then ``done``). Each call may run on another thread, one at a time."""

    def __init__(self, data: bytes, *, max_seconds: float, hold: Hold | None = None):
        self._chunks = decode_chunks(data, max_seconds=max_seconds, hold=hold)
        self._pending = np.empty(0, dtype=np.float32)
        self.done = False

    def read(self, samples: int) -> np.ndarray:
        pieces, count = [self._pending], self._pending.size
        while count < samples and not self.done:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self.done = True
                break
            pieces.append(chunk)
            count += chunk.size
        joined = np.concatenate(pieces)
        out, self._pending = joined[:samples], joined[samples:]
        self.done = self.done and not self._pending.size
        return out

    def close(self) -> None:
        self._chunks.close()


def _check_shape(sample_rate: int, channels: int) -> None:
    if not MIN_RATE <= sample_rate <= MAX_RATE:
        raise AudioError(f"The file says its sample rate is {sample_rate} Hz; audio is sampled at {MIN_RATE:,} to "
                         f"{MAX_RATE:,} Hz.", param="file")
    if channels > MAX_CHANNELS:
        raise AudioError(f"The file says it has {channels} channels; at most {MAX_CHANNELS} are accepted.",
                         param="file")


def _decode(data: bytes, max_seconds: float, hold: Hold | None,
            chunks: deque[np.ndarray]) -> Generator[None, None, None]:
    """Decodes into ``chunks``, and yields after each packet."""
    by_size = seconds_allowed(len(data))
    max_samples = int(min(max_seconds, by_size) * SAMPLE_RATE)
    total = 0

    def keep(samples: np.ndarray) -> None:
        nonlocal total
        total += samples.size
        if total > max_samples:
            if max_seconds <= by_size:
                raise AudioTooLong(f"The audio is longer than the {max_seconds:g} s limit.", param="file")
            raise AudioError(f"The file decodes to more than {by_size:.0f} s of audio, more than {len(data)} bytes "
                             f"of any speech codec hold (one second per {MIN_BYTES_PER_SECOND} bytes, and a "
                             f"minute more); a crafted or mostly empty file.", param="file")
        if hold is not None:
            hold.take(samples.size)
        chunks.append(samples)  # a new array: FFmpeg's frame buffers are not kept alive

    def keep_resampled(frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            # "flt" is packed, (1, samples x channels); more than one channel only in the fallback.
            keep(frame.to_ndarray().reshape(-1, frame.layout.nb_channels).mean(axis=1, dtype=np.float32))

    with av.open(io.BytesIO(data), mode="r", container_options=_CONTAINER_OPTIONS) as container:
        if not container.streams.audio:
            raise AudioError("The file has no audio stream.", param="file")
        stream = container.streams.audio[0]
        context = stream.codec_context  # None for a codec FFmpeg does not know
        if context is not None and context.sample_rate:  # some demuxers leave it to the first frame
            _check_shape(context.sample_rate, context.channels)
        resampler, source, as_is = None, None, None
        bad = 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                bad += 1
                if bad >= _MAX_BAD_PACKETS:
                    break
                continue
            bad = 0
            for frame in frames:
                if not frame.samples:
                    continue  # FFmpeg's filter graph reports an empty frame as out of memory
                # A resampler is fixed to its first frame's format; chained streams can change it.
                shape = (frame.format.name, frame.layout.name, frame.sample_rate)
                if shape != source:
                    _check_shape(frame.sample_rate, frame.layout.nb_channels)
                    if resampler is not None:
                        keep_resampled(resampler.resample(None))
                    source, as_is = shape, _as_is_scale(frame)
                    resampler = None if as_is is not None else _resampler("mono")
                    if resampler is not None:
                        try:
                            keep_resampled(resampler.resample(frame))
                            continue
                        except av.error.ArgumentError:
                            # swresample has no downmix for some channel counts that come without a
                            # layout (9, 32 or more): convert rate and format only; keep_resampled() averages.
                            resampler = _resampler(None)
                if resampler is None:
                    assert as_is is not None  # no resampler only for a frame taken as it is
                    keep(np.multiply(frame.to_ndarray()[0], as_is, dtype=np.float32))  # a new array
                else:
                    keep_resampled(resampler.resample(frame))
            yield None  # this packet's samples are ready
        if resampler is not None:
            keep_resampled(resampler.resample(None))  # the resampler holds back its filter's tail
        yield None


# Sample formats that 16 kHz mono audio (most speech uploads) comes in, and the scale swresample
# applies to make them float: for these it would only convert the format, which costs more than
# the decoding itself (~40 us a packet, half of a WAV's decoding time). Same values either way.
_FLOAT_SCALE = {"s16": np.float32(2.0**-15), "s32": np.float32(2.0**-31), "flt": np.float32(1.0)}


def _as_is_scale(frame: av.AudioFrame) -> np.float32 | None:
    """The scale to float for a frame that needs no resampling, or None if it needs resampling."""
    if frame.sample_rate != SAMPLE_RATE or frame.layout.nb_channels != 1:
        return None
    return _FLOAT_SCALE.get(frame.format.name.removesuffix("p"))  # planar mono is packed mono


def _resampler(layout: str | None) -> av.AudioResampler:
    return av.AudioResampler(format="flt", layout=layout, rate=SAMPLE_RATE, options=_RESAMPLER_OPTIONS)
