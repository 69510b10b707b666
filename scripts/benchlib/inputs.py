"""Seeded inputs for the workloads: texts from a small bilingual vocabulary, rerank requests, and
clips of real speech (the tests' espeak-ng recording) as WAV uploads."""

from __future__ import annotations

import io
import random
import wave

import numpy as np

from benchlib.endpoint import Request
from benchlib.repo import SPEECH
from server.asr.audio import SAMPLE_RATE

WORDS = ("the giant panda is a bear native to south central china it eats bamboo and sleeps a lot "
         "rivers mountains 熊猫 竹子 世界 你好 today we test speech models").split()


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def ranking(rng: random.Random, documents: int) -> Request:
    """A rerank request: a short query and ``documents`` documents of 5-60 words, every one ranked."""
    docs = [text(rng, rng.randint(5, 60)) for _ in range(documents)]
    return Request({"model": "bge-reranker-v2-m3", "query": text(rng, rng.randint(3, 12)), "documents": docs,
                    "top_n": documents}, units=documents)


def speech_clip(seconds: float, seed: int) -> np.ndarray:
    """`seconds` of real speech (the espeak-ng recording the tests use), from a seeded offset."""
    from server.asr.audio import decode_audio

    speech = decode_audio(SPEECH.read_bytes(), max_seconds=60)
    tiled = np.tile(speech, int(seconds * SAMPLE_RATE // len(speech)) + 2)
    start = np.random.default_rng(seed).integers(0, len(speech))
    return tiled[start:start + int(seconds * SAMPLE_RATE)]


def wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()
