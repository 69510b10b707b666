"""Regenerate tests/data/speech_pauses.flac and .json: three spoken sentences with known pauses.

    python scripts/make_test_audio.py          # needs espeak-ng on PATH (apt-get install espeak-ng)

The sentences are synthesised by espeak-ng, trimmed to their voiced part, resampled to 16 kHz with
server.asr.audio.decode_audio, and joined with digital silence: 0.5 s lead, 1.5 s between sentences,
0.5 s tail. The JSON records, in seconds, where each sentence and each pause lies, computed here
from the concatenation (not measured), so the VAD tests check against ground truth. The FLAC is
committed; tests never need espeak-ng.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import av
import numpy as np

from server.asr.audio import SAMPLE_RATE, decode_audio

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back after lunch.",
    "It is going to rain tomorrow.",
]
LEAD_S, PAUSE_S, TAIL_S = 0.5, 1.5, 0.5
# espeak-ng pads each utterance with a little near-silence; cut it so "speech" starts and ends on
# the voice (-46 dBFS, well under espeak's level of about -2 dBFS).
TRIM_LEVEL = 0.005

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def speak(text: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(wav), text], check=True)
        audio = decode_audio(wav.read_bytes(), max_seconds=60)  # 22.05 kHz -> 16 kHz mono float32
    voiced = np.flatnonzero(np.abs(audio) > TRIM_LEVEL)
    return audio[voiced[0]: voiced[-1] + 1]


def write_flac(audio: np.ndarray, path: Path) -> None:
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        stream.format = "s16"
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def main() -> None:
    pieces, speech, pauses = [np.zeros(int(LEAD_S * SAMPLE_RATE), np.float32)], [], []
    pos = len(pieces[0])
    for i, text in enumerate(SENTENCES):
        voice = speak(text)
        speech.append([pos / SAMPLE_RATE, (pos + len(voice)) / SAMPLE_RATE])
        pieces.append(voice)
        pos += len(voice)
        gap = int((PAUSE_S if i < len(SENTENCES) - 1 else TAIL_S) * SAMPLE_RATE)
        if i < len(SENTENCES) - 1:
            pauses.append([pos / SAMPLE_RATE, (pos + gap) / SAMPLE_RATE])
        pieces.append(np.zeros(gap, np.float32))
        pos += gap
    audio = np.concatenate(pieces)
    DATA.mkdir(parents=True, exist_ok=True)
    write_flac(audio, DATA / "speech_pauses.flac")
    meta = {
        "sample_rate": SAMPLE_RATE,
        "duration": len(audio) / SAMPLE_RATE,
        "sentences": SENTENCES,
        "speech": speech,
        "pauses": pauses,
    }
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in meta.items()]
    (DATA / "speech_pauses.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")
    size = (DATA / "speech_pauses.flac").stat().st_size
    print(f"wrote {DATA / 'speech_pauses.flac'} ({len(audio) / SAMPLE_RATE:.2f} s, {size} bytes) and .json")


if __name__ == "__main__":
    main()
