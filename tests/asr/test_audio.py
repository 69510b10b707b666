"""server.asr.audio.decode_audio: every common format in, 16 kHz mono float32 out; bad input is a 400."""

from __future__ import annotations

import io
import struct
import tracemalloc

import av
import numpy as np
import pytest
from audio_files import FORMATS, encode

from server.errors import InvalidRequest
from server.asr.audio import (
    SAMPLE_RATE,
    AudioError,
    AudioTooLong,
    decode_audio,
)


def sine(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def two_tone(rate: int, seconds: float = 1.0) -> np.ndarray:
    return sine(440, rate, seconds) + sine(660, rate, seconds)  # RMS 0.3


def rms(y: np.ndarray) -> float:
    middle = y[len(y) // 10: -len(y) // 10]  # leave out codec ramp-in/out
    return float(np.sqrt(np.mean(np.square(middle, dtype=np.float64))))


def assert_two_tone(y: np.ndarray, expected_rms: float = 0.3, width: float = 6) -> None:
    """440 Hz and 660 Hz (each +-``width`` Hz) carry nearly all the energy, at the expected level."""
    middle = y[800:-800]
    power = np.abs(np.fft.rfft(middle * np.hanning(len(middle)))) ** 2
    freqs = np.fft.rfftfreq(len(middle), 1 / SAMPLE_RATE)
    near = lambda f: (np.abs(freqs - f) <= width)  # noqa: E731
    peak = freqs[np.argmax(power)]
    assert min(abs(peak - 440), abs(peak - 660)) < 2, peak
    assert power[near(440)].sum() > 0.3 * power.sum() and power[near(660)].sum() > 0.3 * power.sum()
    assert power[near(440) | near(660)].sum() > 0.95 * power.sum()
    assert rms(y) == pytest.approx(expected_rms, rel=0.1)


def assert_one_second(y: np.ndarray, name: str, rate: int) -> None:
    assert y.dtype == np.float32 and y.ndim == 1
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    # Decoders drop the codecs' priming samples; AAC keeps up to one 1024-sample frame of end
    # padding (PyAV's mp4 muxer writes no end trim), the others land within a few ms.
    slack = (1024 / rate if name == "m4a_aac" else 0) + 0.005
    assert abs(len(y) / SAMPLE_RATE - 1.0) <= slack, len(y) / SAMPLE_RATE


@pytest.mark.parametrize("rate", [44100, 48000])
@pytest.mark.parametrize("name", FORMATS)
def test_mono_tone_in_every_format(name, rate):
    y = decode_audio(encode(two_tone(rate)[None], rate, name), max_seconds=60)
    assert_one_second(y, name, rate)
    assert_two_tone(y)


@pytest.mark.parametrize("rate", [44100, 48000])
@pytest.mark.parametrize("name", FORMATS)
def test_stereo_is_averaged(name, rate):
    # 440 Hz only on the left, 660 Hz only on the right, each at twice the mono level: the average
    # of the two is exactly the mono two-tone (a sum, or FFmpeg's unnormalised 0.707 mix, is louder).
    x = np.stack([2 * sine(440, rate), 2 * sine(660, rate)])
    y = decode_audio(encode(x, rate, name), max_seconds=60)
    assert_one_second(y, name, rate)
    # FFmpeg's experimental Vorbis encoder smears a hard-panned channel over +-60 Hz (the level is right).
    assert_two_tone(y, width=60 if name == "ogg_vorbis" else 6)


@pytest.mark.parametrize("name", ["wav_s16", "flac", "mp3", "ogg_opus"])
def test_one_silent_channel_halves_the_level(name):
    tone = two_tone(48000)
    y = decode_audio(encode(np.stack([tone, np.zeros_like(tone)]), 48000, name), max_seconds=60)
    assert rms(y) == pytest.approx(0.15, rel=0.1)


@pytest.mark.parametrize("name,layout", [
    ("wav_s16", "7.1"), ("flac", "7.1"), ("ogg_opus", "7.1"), ("m4a_aac", "7.1"),
    ("wav_s16", "8 channels"), ("wav_f32", "8 channels"),  # no channel order: a bare WAV's
])
def test_eight_channels_mix_to_mono_without_gain(name, layout):
    x = np.tile(two_tone(48000), (8, 1))
    y = decode_audio(encode(x, 48000, name, layout=layout), max_seconds=60)
    assert_one_second(y, name, 48000)
    assert_two_tone(y)  # same signal on every channel: same level out (FFmpeg's default mix: 4.4x)


def raw_wav(x: np.ndarray, rate: int) -> bytes:
    """A plain PCM WAV of (channels, n) samples, with no channel layout: any channel count."""
    channels = x.shape[0]
    data = np.round(x.T * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)


@pytest.mark.parametrize("channels", [9, 32, 64])
def test_channel_counts_without_a_standard_layout_are_averaged(channels):
    # FFmpeg has no downmix for these; decode_audio averages them itself. 440 Hz on half the
    # channels, 660 Hz on the other half (one left silent when odd).
    half = channels // 2
    x = np.zeros((channels, 44100), np.float32)
    x[:half], x[half: 2 * half] = 2 * sine(440, 44100), 2 * sine(660, 44100)
    y = decode_audio(raw_wav(x, 44100), max_seconds=60)
    assert_one_second(y, "wav_s16", 44100)
    assert_two_tone(y, expected_rms=0.3 * 2 * half / channels)


def test_more_channels_than_ffmpeg_mixes_is_a_400():
    with pytest.raises(AudioError):
        decode_audio(raw_wav(np.zeros((65, 1000), np.float32), 16000), max_seconds=60)


@pytest.mark.parametrize("rate,name", [(8000, "wav_s16"), (22050, "mp3"), (96000, "wav_f32"), (96000, "flac")])
def test_other_sample_rates(rate, name):
    y = decode_audio(encode(two_tone(rate)[None], rate, name), max_seconds=60)
    assert_one_second(y, name, rate)
    assert_two_tone(y)


def resampled_by_ffmpeg(data: bytes) -> np.ndarray:
    """What swresample makes of every frame: the reference for audio that needs no resampling."""
    out = []
    with av.open(io.BytesIO(data)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            out += [f.to_ndarray()[0] for f in resampler.resample(frame)]
        out += [f.to_ndarray()[0] for f in resampler.resample(None)]
    return np.concatenate(out)


@pytest.mark.parametrize("name", ["wav_s16", "wav_s24", "wav_f32", "flac", "wav_u8"])
def test_16khz_mono_equals_what_swresample_makes_of_it(name):
    # 16 kHz mono skips the resampler (s16, s32 and float samples are scaled as swresample scales
    # them); the samples must be the very same, including the quietest and the full-scale ones.
    x = two_tone(SAMPLE_RATE)
    x[:4] = [0.0, 2.0**-15, -1.0, 1.0]
    data = encode(x[None], SAMPLE_RATE, name)
    y = decode_audio(data, max_seconds=60)
    np.testing.assert_array_equal(y, resampled_by_ffmpeg(data))
    assert_two_tone(y)


def test_16khz_mono_between_resampled_stretches():
    # Chained mp3s, a tone each: 44.1 kHz, then 16 kHz mono (no resampling), then 48 kHz stereo.
    # Switching between the resampler and none keeps every stretch, in order, at its level.
    tones = [(300, 44100, 1), (500, SAMPLE_RATE, 1), (700, 48000, 2)]
    data = b"".join(encode(np.tile(sine(f, rate), (ch, 1)), rate, "mp3") for f, rate, ch in tones)
    y = decode_audio(data, max_seconds=60)
    assert 2.99 < len(y) / SAMPLE_RATE < 3.2  # mp3 frames and tag frames add a little silence
    for second, (freq, _, _) in enumerate(tones):
        window = y[int((second + 0.3) * SAMPLE_RATE): int((second + 0.8) * SAMPLE_RATE)]
        spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
        assert np.fft.rfftfreq(len(window), 1 / SAMPLE_RATE)[np.argmax(spectrum)] == pytest.approx(freq, abs=4)


def test_float_input_with_nan_inf_and_overload_is_cleaned():
    x = two_tone(16000)
    x[100:200], x[300], x[400], x[500:600] = np.nan, np.inf, -np.inf, 3.0
    y = decode_audio(encode(x[None], 16000, "wav_f32"), max_seconds=60)
    assert np.isfinite(y).all() and y.min() >= -1.0 and y.max() <= 1.0
    assert np.all(y[500:600] == 1.0)
    assert rms(y[1000:]) == pytest.approx(0.3, rel=0.05)


def test_first_audio_stream_of_a_video_file():
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        video = out.add_stream("mjpeg", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuvj420p"
        audio = out.add_stream("flac", rate=16000, layout="mono")
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame = frame.reformat(format="yuvj420p")
            frame.pts = i
            for p in video.encode(frame):
                out.mux(p)
        samples = (two_tone(16000) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for p in audio.encode(frame) + audio.encode(None) + video.encode(None):
            out.mux(p)
    y = decode_audio(buf.getvalue(), max_seconds=60)
    assert_one_second(y, "flac", 16000)
    assert_two_tone(y)


def test_format_change_mid_stream():
    # Two mp3s back to back (as a naive "join" makes): the rate and channel count change midway.
    data = encode(two_tone(44100)[None], 44100, "mp3") + encode(np.tile(two_tone(48000), (2, 1)), 48000, "mp3")
    y = decode_audio(data, max_seconds=60)
    assert 1.99 < len(y) / SAMPLE_RATE < 2.1  # the second file's tag frames decode as a little silence
    assert_two_tone(y[: 2 * SAMPLE_RATE], expected_rms=0.3)


# --- errors ---------------------------------------------------------------------------------------

def video_only() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        video = out.add_stream("mjpeg", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuvj420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame = frame.reformat(format="yuvj420p")
            frame.pts = i
            for p in video.encode(frame):
                out.mux(p)
        for p in video.encode(None):
            out.mux(p)
    return buf.getvalue()


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + struct.pack(">II", 16, 16) + b"\x08\x02\x00\x00\x00" + b"\0" * 64


@pytest.mark.parametrize("data", [
    b"",
    np.random.default_rng(0).bytes(65536),
    b"hello, not audio",
    b'{"text": "not audio either"}\n',
    PNG,
    b"RIFF\x24\x00\x00\x00WAVEfmt ",  # a WAV header cut inside its first chunk
    "video_only",
], ids=["empty", "random", "text", "json", "png", "wav_header_only", "video_only"])
def test_not_audio_is_a_400(data):
    data = video_only() if data == "video_only" else data
    with pytest.raises(AudioError) as info:
        decode_audio(data, max_seconds=60)
    err = info.value
    assert isinstance(err, InvalidRequest) and err.status == 400 and err.code == "invalid_audio"
    assert err.message and "Errno" not in err.message and "avformat" not in err.message


@pytest.mark.parametrize("name", FORMATS)
def test_a_stream_without_samples_is_a_400(name):
    fmt, codec, codec_rate = FORMATS[name]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:  # header (and trailer), no packets
        out.add_stream(codec, rate=codec_rate or 48000, layout="stereo", options={"strict": "experimental"})
        out.start_encoding()
    with pytest.raises(AudioError) as info:
        decode_audio(buf.getvalue(), max_seconds=60)
    if fmt in ("wav", "flac"):
        assert "no audio samples" in info.value.message


def outcome(data: bytes):
    try:
        return decode_audio(data, max_seconds=60)
    except AudioError as err:
        return err


@pytest.mark.parametrize("name", FORMATS)
def test_truncated_files_decode_what_is_there_or_fail_cleanly(name):
    full = encode(two_tone(48000, 3.0)[None], 48000, name)
    for keep in (0.5, 0.1, 0.01):
        data = full[: int(len(full) * keep)]
        first, second = outcome(data), outcome(data)
        if isinstance(first, AudioError):
            assert isinstance(second, AudioError) and second.message == first.message
        else:
            assert np.array_equal(first, second)  # deterministic
            assert 0 < len(first) < 3 * SAMPLE_RATE


def test_truncated_wav_and_mp3_give_the_first_part():
    wav = encode(two_tone(48000, 3.0)[None], 48000, "wav_s16")
    assert len(decode_audio(wav[: len(wav) // 2], max_seconds=60)) / SAMPLE_RATE == pytest.approx(1.5, abs=0.01)
    mp3 = encode(two_tone(48000, 3.0)[None], 48000, "mp3")
    y = decode_audio(mp3[: len(mp3) // 2], max_seconds=60)
    assert len(y) / SAMPLE_RATE == pytest.approx(1.5, abs=0.1)
    assert_two_tone(y)


@pytest.mark.parametrize("name", ["mp3", "m4a_aac", "flac"])
def test_a_damaged_stretch_mid_file_is_skipped(name):
    data = bytearray(encode(two_tone(48000, 3.0)[None], 48000, name))
    middle = len(data) // 2
    data[middle: middle + 300] = np.random.default_rng(1).bytes(300)
    y = decode_audio(bytes(data), max_seconds=60)
    assert 2.5 < len(y) / SAMPLE_RATE <= 3.0  # decoding goes on after the bad packets, not stop at 1.5 s


@pytest.mark.parametrize("name", FORMATS)
def test_corrupted_bytes_never_raise_anything_but_audio_error(name):
    full = bytearray(encode(two_tone(48000, 0.5)[None], 48000, name))
    rng = np.random.default_rng(len(full))
    for _ in range(12):
        data = full.copy()
        at = rng.integers(0, len(data), size=8)
        data_view = np.frombuffer(data, np.uint8)
        data_view[at] = rng.integers(0, 256, size=8, dtype=np.uint8)
        result = outcome(bytes(data))
        if not isinstance(result, AudioError):
            assert result.dtype == np.float32 and np.isfinite(result).all() and np.abs(result).max() <= 1


def test_too_long_is_a_400_with_its_own_code():
    with pytest.raises(AudioTooLong) as info:
        decode_audio(encode(two_tone(48000, 3.0)[None], 48000, "flac"), max_seconds=1)
    assert info.value.status == 400 and info.value.code == "audio_too_long"
    # Exactly at the limit is allowed.
    assert len(decode_audio(encode(two_tone(48000, 1.0)[None], 48000, "flac"), max_seconds=1)) == SAMPLE_RATE


def test_too_long_stops_decoding_early():
    # 10 minutes of silence: a 40 MB float32 array if decoded whole; with a 5 s cap, decoding must
    # stop after about 5 s of samples.
    data = encode(np.zeros((1, 8000 * 600), np.float32), 8000, "flac")
    tracemalloc.start()
    try:
        with pytest.raises(AudioTooLong):
            decode_audio(data, max_seconds=5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, peak


def test_declared_length_is_not_trusted():
    wav = bytearray(encode(two_tone(48000, 0.5)[None], 48000, "wav_s16"))
    data_at = wav.find(b"data")
    wav[4:8] = struct.pack("<I", 0xFFFFFFF0)  # RIFF size
    wav[data_at + 4: data_at + 8] = struct.pack("<I", 0xFFFFFF00)  # data size: ~12 hours
    assert len(decode_audio(bytes(wav), max_seconds=60)) / SAMPLE_RATE == pytest.approx(0.5, abs=0.001)
    with pytest.raises(AudioTooLong):
        decode_audio(bytes(wav), max_seconds=0.25)


def test_files_named_inside_the_upload_are_not_opened(tmp_path, monkeypatch):
    # An ffconcat script is a "container" whose entries are other files; FFmpeg would read them.
    (tmp_path / "secret.wav").write_bytes(encode(two_tone(16000)[None], 16000, "wav_s16"))
    monkeypatch.chdir(tmp_path)
    for script in (b"ffconcat version 1.0\nfile 'secret.wav'\n", b"ffconcat version 1.0\nfile secret.wav\n"):
        with pytest.raises(AudioError):
            decode_audio(script, max_seconds=60)
