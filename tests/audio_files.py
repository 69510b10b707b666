"""Audio files made in the tests: encode samples into any container/codec with PyAV."""

from __future__ import annotations

import io

import av
import numpy as np

# name -> (container format, encoder, rate the encoder runs at: None = the input's)
FORMATS = {
    "wav_s16": ("wav", "pcm_s16le", None),
    "wav_s24": ("wav", "pcm_s24le", None),
    "wav_f32": ("wav", "pcm_f32le", None),
    "wav_u8": ("wav", "pcm_u8", None),
    "flac": ("flac", "flac", None),
    "mp3": ("mp3", "mp3", None),
    "m4a_aac": ("ipod", "aac", None),
    "ogg_vorbis": ("ogg", "vorbis", None),
    "ogg_opus": ("ogg", "libopus", 48000),  # Opus only runs at 48 kHz (and 8/12/16/24)
    "webm_opus": ("webm", "libopus", 48000),
}
LAYOUTS = {1: "mono", 2: "stereo", 8: "7.1"}


def encode(x: np.ndarray, rate: int, name: str, layout: str | None = None) -> bytes:
    """Encode float samples shaped (channels, n) into the format ``name``; returns the file's bytes."""
    fmt, codec, codec_rate = FORMATS[name]
    if codec == "vorbis" and x.shape[0] == 1:
        x = np.concatenate([x, x])  # FFmpeg's Vorbis encoder writes stereo only
    layout = layout or LAYOUTS[x.shape[0]]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        # FFmpeg's own Vorbis encoder is flagged experimental; it is the one PyAV bundles.
        stream = out.add_stream(codec, rate=codec_rate or rate, options={"strict": "experimental"})
        stream.layout = layout
        # Packed input: PyAV 18.1 mis-sizes planar frames of 8 channels (IndexError in from_ndarray).
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(x.T, dtype=np.float32).reshape(1, -1), format="flt", layout=layout
        )
        frame.sample_rate = rate
        to_codec = av.AudioResampler(format=stream.format, layout=layout, rate=codec_rate or rate,
                                     frame_size=stream.codec_context.frame_size or 1024)
        pts = 0
        for f in to_codec.resample(frame) + to_codec.resample(None):
            f.pts, pts = pts, pts + f.samples
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()
