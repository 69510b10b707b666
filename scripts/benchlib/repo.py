"""Where the repository's own files are, for the benchmarks that read them."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Real speech, three sentences with known pauses (espeak-ng; scripts/make_test_audio.py remakes it).
SPEECH = ROOT / "tests" / "data" / "speech_pauses.flac"
