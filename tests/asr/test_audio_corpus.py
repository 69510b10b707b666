"""Bad audio over HTTP: a corpus of corrupt and odd files, generated here, each POSTed to
/v1/audio/transcriptions of a live server. Zero 5xx, zero crashes (the server still answers and
still transcribes afterwards), every 4xx in OpenAI's error shape, and every 200 a transcript.

The corpus (well over 100 files): random bytes of many sizes; every container the tests can write
cut at many points; wrong extensions and non-audio content; files that point elsewhere (ffconcat,
HLS, SDP); 0 samples; 8 channels; 8 kHz and 96 kHz; extreme amplitudes (finite and not); crafted
WAV headers (huge declared length, a data size lying in both directions, zero channels, 100 and
255 and 65,535 channels, sample rates of 0, 1 and 2^31 - 1 Hz); a file over the upload cap.
"""

from __future__ import annotations

import io
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from audio_files import FORMATS, encode
from conftest import assert_error_shape, live_server

PATH = "/v1/audio/transcriptions"
UPLOAD_CAP = 2 * 1024 * 1024
RATE = 16000



def tone(seconds: float = 1.0, rate: int = RATE, channels: int = 1, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = amp * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t)) / 1.5
    return np.repeat(x[None], channels, axis=0).astype(np.float32)


def wav_bytes(samples: bytes, *, channels: int = 1, rate: int = RATE, bits: int = 16, fmt: int = 1,
              riff_size: int | None = None, data_size: int | None = None, block_align: int | None = None) -> bytes:
    """A hand-made RIFF/WAVE file whose header fields can lie."""
    align = (channels * bits // 8 if block_align is None else block_align) & 0xFFFF
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, (rate * align) & 0xFFFFFFFF, align, bits)
    data_size = len(samples) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk + b"data" + struct.pack("<I", data_size)
    riff = len(body) + len(samples) if riff_size is None else riff_size
    return b"RIFF" + struct.pack("<I", riff) + body + samples


def s16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").T.tobytes()


def empty_stream(fmt: str, codec: str, rate: int = RATE) -> bytes:
    """A container with an audio stream and no samples at all."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, options={"strict": "experimental"})
        stream.layout = "stereo" if codec == "vorbis" else "mono"
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def build_corpus() -> list[tuple[str, str, bytes]]:
    """(case id, filename sent, bytes)."""
    rng = np.random.default_rng(1234)
    corpus: list[tuple[str, str, bytes]] = []
    add = lambda case, name, data: corpus.append((case, name, data))  # noqa: E731

    # Random bytes of many sizes (under the cap), with audio-looking names.
    for size in (1, 2, 3, 4, 7, 8, 11, 12, 16, 44, 45, 64, 100, 255, 512, 1000, 4096, 10_000, 65_536, 300_000,
                 1_500_000):
        add(f"random-{size}", ("a.wav", "a.mp3", "a.flac", "a.m4a", "a.ogg")[size % 5],
            rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    # Random bytes behind a real magic number: the demuxer commits, then finds garbage.
    for magic in (b"RIFF\x24\x00\x00\x00WAVEfmt ", b"fLaC", b"ID3\x03\x00\x00\x00\x00\x00\x00", b"\xff\xfb\x90\x00",
                  b"OggS\x00\x02", b"\x1aE\xdf\xa3", b"\x00\x00\x00\x20ftypM4A "):
        add(f"magic-{magic[:4].hex()}", "x.bin", magic + rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes())

    # Every container the tests write, cut at many points.
    for name in FORMATS:
        full = encode(tone(1.0, 48000 if "opus" in name else RATE), 48000 if "opus" in name else RATE, name)
        n = len(full)
        cuts = sorted({c for c in (1, 2, 4, 8, 16, 32, 44, 64, 128, 256, 512, 1024, 4096, n // 4, n // 2,
                                   3 * n // 4, n - 100, n - 1) if 0 < c < n})
        for cut in cuts:
            add(f"truncated-{name}-{cut}", f"cut.{name.split('_')[0]}", full[:cut])
        # And a damaged middle: 64 bytes of noise at the half-way point.
        middle = bytearray(full)
        middle[n // 2: n // 2 + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        add(f"damaged-middle-{name}", f"damaged.{name.split('_')[0]}", bytes(middle))

    good_wav = encode(tone(1.0), RATE, "wav_s16")
    good_flac = encode(tone(1.0), RATE, "flac")
    # Wrong extensions, and things that are not audio at all.
    add("wav-named-mp3", "song.mp3", good_wav)
    add("flac-named-wav", "song.wav", good_flac)
    add("wav-no-extension", "upload", good_wav)
    add("text-named-wav", "speech.wav", b"hello, this is not audio\n" * 40)
    add("json-named-flac", "speech.flac", b'{"model": "SenseVoiceSmall", "input": [1, 2, 3]}')
    add("html", "index.html", b"<!doctype html><html><body>" + b"<p>hi</p>" * 100 + b"</body></html>")
    add("png", "image.png", b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    add("pdf", "doc.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n")
    add("zip", "a.zip", b"PK\x03\x04" + b"\x00" * 26 + b"a.wav" + good_wav[:200])
    add("gzip-of-wav", "a.wav.gz", __import__("gzip").compress(good_wav))
    add("utf16-text", "a.wav", "RIFF? no, just text".encode("utf-16"))
    add("all-zero-bytes", "a.wav", b"\x00" * 50_000)
    add("all-ff-bytes", "a.mp3", b"\xff" * 50_000)
    # Files that name other files or the network: nothing outside the upload may be opened.
    add("ffconcat", "list.txt", b"ffconcat version 1.0\nfile '/etc/passwd'\nfile 'secret.wav'\n")
    add("hls-playlist", "a.m3u8", b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n"
                                   b"#EXTINF:10,\nhttp://127.0.0.1:9/x.ts\n#EXT-X-ENDLIST\n")
    add("sdp", "a.sdp", b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                        b"m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")

    # Zero samples.
    add("wav-header-only", "empty.wav", wav_bytes(b""))
    add("wav-one-byte-of-data", "odd.wav", wav_bytes(b"\x01"))
    for fmt, codec in (("flac", "flac"), ("ogg", "libopus"), ("mp3", "mp3")):
        add(f"zero-samples-{codec}", f"empty.{fmt}", empty_stream(fmt, codec, 48000 if codec == "libopus" else RATE))

    # Channels and rates.
    for name in ("wav_s16", "flac", "wav_f32"):
        add(f"8ch-{name}", "eight.wav", encode(tone(1.0, RATE, 8), RATE, name))
    for rate, name in ((8000, "wav_s16"), (8000, "mp3"), (8000, "flac"), (96000, "wav_s24"), (96000, "flac"),
                       (96000, "ogg_opus")):
        add(f"{rate}hz-{name}", f"rate.{name.split('_')[0]}", encode(tone(1.0, rate), rate, name))
    add("wav-1hz", "slow.wav", wav_bytes(s16(tone(0.01, RATE))[:400], rate=1))
    add("wav-4ghz", "fast.wav", wav_bytes(s16(tone(0.1, RATE)), rate=4_000_000_000))

    # Amplitudes: extreme but finite, then not finite (float WAV can carry anything).
    n = RATE
    for label, values in (
        ("float-1e30", np.full(n, 1e30)), ("float-max", np.full(n, np.finfo(np.float32).max)),
        ("float-alternating-max", np.where(np.arange(n) % 2, 1, -1) * np.finfo(np.float32).max),
        ("float-denormal", np.full(n, 1e-45)), ("float-nan", np.full(n, np.nan)),
        ("float-inf", np.where(np.arange(n) % 2, np.inf, -np.inf)),
    ):
        add(label, "amp.wav", wav_bytes(values.astype("<f4").tobytes(), bits=32, fmt=3))
    add("s16-full-scale-square", "square.wav", wav_bytes((np.where(np.arange(n) // 20 % 2, 32767, -32768))
                                                         .astype("<i2").tobytes()))
    add("clipped-flac", "loud.flac", encode(np.clip(tone(1.0, amp=40.0), -1, 1), RATE, "flac"))

    # Crafted WAV headers.
    pcm = s16(tone(1.0))
    add("wav-huge-declared-length", "huge.wav", wav_bytes(pcm, riff_size=0xFFFFFFFF, data_size=0xFFFFFFF0))
    add("wav-declared-longer-than-cap", "long.wav", wav_bytes(pcm, data_size=2_000_000_000))
    add("wav-zero-channels", "zero.wav", wav_bytes(pcm, channels=0))
    add("wav-zero-rate", "zero.wav", wav_bytes(pcm, rate=0))
    add("wav-zero-bits", "zero.wav", wav_bytes(pcm, bits=0))
    add("wav-zero-block-align", "zero.wav", wav_bytes(pcm, block_align=0))
    add("wav-65535-channels", "many.wav", wav_bytes(pcm, channels=65535))
    add("wav-unknown-format-tag", "tag.wav", wav_bytes(pcm, fmt=0x1234))
    add("wav-odd-bits", "odd.wav", wav_bytes(pcm, bits=13))
    add("wav-riff-size-zero", "zero.wav", wav_bytes(pcm, riff_size=0))
    add("wav-data-size-zero", "zero.wav", wav_bytes(pcm, data_size=0))
    add("wav-data-size-half", "short.wav", wav_bytes(pcm, data_size=len(pcm) // 2))  # says less than it holds
    add("wav-rate-2147483647", "fast.wav", wav_bytes(pcm, rate=2**31 - 1))
    add("wav-rate-1-hour", "slow.wav", wav_bytes(pcm[:7200], rate=1))  # 3,600 samples at 1 Hz: "an hour"
    add("wav-100-channels", "many.wav", wav_bytes(pcm[:32000], channels=100))
    add("wav-255-channels", "many.wav", wav_bytes(pcm[:30600], channels=255))
    return corpus


@pytest.fixture(scope="module")
def asr_server(sensevoice_dir):
    with live_server(asr_model=str(sensevoice_dir), asr_max_upload_bytes=UPLOAD_CAP) as srv:
        yield srv


def _post(srv, case: str, filename: str, data: bytes) -> tuple[str, httpx.Response | Exception, float]:
    started = time.monotonic()
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as client:
            response = client.post(PATH, data={"model": "SenseVoiceSmall", "response_format": "verbose_json"},
                                   files={"file": (filename, data, "application/octet-stream")})
    except httpx.HTTPError as err:
        return case, err, time.monotonic() - started
    return case, response, time.monotonic() - started


def test_corrupt_and_odd_audio_never_cause_a_5xx(asr_server):
    corpus = build_corpus()
    assert len(corpus) >= 100, len(corpus)
    assert len({case for case, _, _ in corpus}) == len(corpus)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: _post(asr_server, *c), corpus))

    problems, outcomes = [], {}
    for case, response, seconds in results:
        if isinstance(response, Exception):
            problems.append(f"{case}: transport error {response!r}")
            continue
        outcomes[case] = response.status_code
        if response.status_code >= 500:
            problems.append(f"{case}: {response.status_code} {response.text[:200]}")
        elif response.status_code >= 400:
            try:
                assert_error_shape(response)
            except AssertionError as err:
                problems.append(f"{case}: bad error shape: {err}")
        elif response.status_code == 200:
            body = response.json()
            if not (isinstance(body.get("text"), str) and isinstance(body.get("segments"), list)
                    and np.isfinite(body.get("duration", np.nan))):
                problems.append(f"{case}: malformed 200 {response.text[:200]}")
        else:
            problems.append(f"{case}: unexpected {response.status_code}")
        if seconds > 30:
            problems.append(f"{case}: took {seconds:.1f} s")
    assert not problems, "\n".join(problems)

    # A sanity check on the corpus itself: it exercises both the 400 path and partial decodes.
    assert sum(1 for s in outcomes.values() if s == 400) >= 30
    assert sum(1 for s in outcomes.values() if s == 200) >= 30
    # Files that point elsewhere must not be followed.
    for case in ("ffconcat", "hls-playlist", "sdp", "text-named-wav", "png", "pdf"):
        assert outcomes[case] == 400, (case, outcomes[case])

    # No crash: the server still answers and still transcribes.
    with asr_server.client() as client:
        assert client.get("/health").status_code == 200
        speech = (Path(__file__).parents[1] / "data" / "speech_pauses.flac").read_bytes()
        good = client.post(PATH, data={"model": "SenseVoiceSmall"}, files={"file": ("a.flac", speech)})
        assert good.status_code == 200 and good.json()["text"]


def test_a_file_over_the_upload_cap_is_413(asr_server):
    just_over = b"\x00" * (UPLOAD_CAP + 1)  # under the multipart allowance: the route's own check
    far_over = b"\x00" * (UPLOAD_CAP + 1024 * 1024)  # past the body cap: the middleware, while streaming
    with asr_server.client() as client:
        for data in (just_over, far_over):
            response = client.post(PATH, data={"model": "SenseVoiceSmall"}, files={"file": ("big.wav", data)})
            assert response.status_code == 413, (response.status_code, response.text[:200])
            assert assert_error_shape(response)["code"] == "payload_too_large"
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize("case,parts,status", [
    ("no-filename", [("model", None, b"SenseVoiceSmall"), ("file", None, b"RIFF....")], 400),
    ("model-invalid-utf8", [("model", None, b"Sense\xffVoice"), ("file", "a.wav", b"x")], 404),
    ("filename-path-and-bad-bytes", [("model", None, b"SenseVoiceSmall"), ("file", b"../../\xff\xfe.wav", b"x")], 400),
    ("two-files", [("model", None, b"SenseVoiceSmall"), ("file", "a.wav", b"x"), ("file", "b.wav", b"y")], 400),
    ("bad-language", [("model", None, b"SenseVoiceSmall"), ("language", None, b"xx"), ("file", "a.wav", b"x")], 400),
    ("bad-format", [("model", None, b"SenseVoiceSmall"), ("response_format", None, b"mp3"),
                    ("file", "a.wav", b"x")], 400),
    ("bad-granularity", [("model", None, b"SenseVoiceSmall"), ("timestamp_granularities[]", None, b"word"),
                         ("file", "a.wav", b"x")], 400),
    ("too-many-fields", [("model", None, b"SenseVoiceSmall")] + [(f"x{i}", None, b"v") for i in range(1500)]
     + [("file", "a.wav", b"x")], 400),
])
def test_odd_multipart_forms_are_4xx(asr_server, case, parts, status):
    boundary = b"corpus-boundary"
    body = b""
    for name, filename, value in parts:
        disposition = b'form-data; name="' + name.encode() + b'"'
        if filename is not None:
            disposition += b'; filename="' + (filename if isinstance(filename, bytes) else filename.encode()) + b'"'
        body += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + value + b"\r\n"
    body += b"--" + boundary + b"--\r\n"
    with asr_server.client() as client:
        response = client.post(PATH, content=body,
                               headers={"content-type": "multipart/form-data; boundary=" + boundary.decode()})
    assert response.status_code == status, (response.status_code, response.text[:200])
    assert_error_shape(response)


@pytest.mark.parametrize("field,values", [("language", ["zh", "en"]), ("model", ["SenseVoiceSmall"] * 2),
                                          ("response_format", ["json", "text"])])
def test_a_field_sent_twice_is_400_not_the_last_silently(asr_server, field, values):
    """The form parser kept the last of a repeated field; the client gets told instead. Repeated
    timestamp_granularities[] is how OpenAI's SDK sends a list, and stays allowed."""
    speech = (Path(__file__).parents[1] / "data" / "speech_pauses.flac").read_bytes()
    fields = {"model": "SenseVoiceSmall", field: values}
    with asr_server.client() as client:
        response = client.post(PATH, data=fields, files={"file": ("a.flac", speech)})
        listed = client.post(PATH, files={"file": ("a.flac", speech)}, data={
            "model": "SenseVoiceSmall", "response_format": "verbose_json",
            "timestamp_granularities[]": ["word", "segment"]})
    assert response.status_code == 400, response.text[:200]
    body = assert_error_shape(response)
    assert body["code"] == "duplicate_field" and body["param"] == field, body
    assert listed.status_code == 200 and "words" in listed.json(), listed.text[:200]


def test_broken_multipart_framing_is_400(asr_server):
    with asr_server.client() as client:
        for content_type in ("multipart/form-data", "multipart/form-data; boundary=", "multipart/mixed; boundary=b",
                             "application/x-www-form-urlencoded", "application/json"):
            response = client.post(PATH, content=b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n"
                                                 b"SenseVoiceSmall\r\n--b", headers={"content-type": content_type})
            assert response.status_code == 400, (content_type, response.status_code, response.text[:200])
            assert_error_shape(response)


def test_ten_minutes_of_silence_stay_fast(asr_server):
    """Regression: silero-vad ran over all of it (~7 s of CPU for a 114 KB upload; an hour, the
    default cap, ~45 s) before answering with nothing (fixed in cc3be01: digital silence skips it)."""
    data = encode(np.zeros((1, RATE * 600), np.float32), RATE, "flac")
    assert len(data) < 200_000
    started = time.monotonic()
    _, response, _ = _post(asr_server, "silence", "silence.flac", data)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response
    body = response.json()
    assert body["text"] == "" and body["segments"] == [] and body["duration"] == pytest.approx(600, abs=0.1)
    assert elapsed < 3.0, f"10 min of silence took {elapsed:.1f} s"


def test_ten_minutes_of_silence_with_one_click_stay_fast(asr_server):
    audio = np.zeros((1, RATE * 600), np.float32)
    audio[0, RATE * 300] = 0.5
    data = encode(audio, RATE, "flac")
    started = time.monotonic()
    _, response, _ = _post(asr_server, "click", "click.flac", data)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response
    assert response.json()["text"] == ""
    assert elapsed < 3.0, f"10 min of silence and one click took {elapsed:.1f} s"
