"""The peers' self-check (``python scripts/peers.py``): each peer started on random-weight models,
its answers compared with our server's on the same inputs."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx

from benchlib.funasr_server import start_funasr_server, transcribe
from benchlib.infinity import (
    embeddings_of,
    ensure_infinity,
    infinity_request,
    rerank_scores,
    start_infinity,
)
from benchlib.inputs import wav_bytes
from benchlib.repo import SPEECH
from server.background import free_port


def _speech_wav(seconds: float) -> bytes:
    """``seconds`` of the tests' espeak-ng recording (tiled, from its start) as a 16 kHz mono 16-bit
    WAV."""
    import numpy as np

    from server.asr.audio import SAMPLE_RATE, decode_audio

    speech = decode_audio(SPEECH.read_bytes(), max_seconds=60)
    audio = np.tile(speech, int(seconds * SAMPLE_RATE // len(speech)) + 1)[:int(seconds * SAMPLE_RATE)]
    return wav_bytes(audio)


def _ours(kind: str, model_dir: Path, path: str, **request) -> dict:
    """One request to our own server (in this process, float32) serving ``model_dir``."""
    from server.background import serve_in_thread
    from server.families import make_settings

    settings = make_settings(**{"embedding_model": "none", "reranker_model": "none", "asr_model": "none",
                           f"{kind}_model": str(model_dir)}, port=free_port(), dtype="float32", log_level="warning")
    with serve_in_thread(settings) as srv:
        response = httpx.post(srv.url + path, timeout=120, **request)
    response.raise_for_status()
    return response.json()


def check(size: str, venv: Path) -> None:
    """Start each peer on random-weight models of ``size`` and compare its answers with ours."""
    import numpy as np

    from server.compute.tiny_xlmr import (
        XLMR_SIZES,
        build_tiny_bge_m3,
        build_tiny_reranker,
    )
    from server.asr.tiny import SENSEVOICE_SIZES, build_tiny_sensevoice

    texts = ["hello world", "the giant panda is a bear " * 30, "熊猫 竹子 世界 你好", "search engine query"]
    # every pair well under 512 tokens, so neither server cuts or windows a document
    query = "what is a panda"
    docs = ["the giant panda is a bear", "rivers and mountains", "熊猫 竹子", "hello " * 300]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        ensure_infinity(venv)
        print(f"Infinity's venv {venv}: ready in {time.perf_counter() - started:.0f} s")

        model = build_tiny_bge_m3(root / "embedding", initializer_range=0.02, **XLMR_SIZES[size])
        body = {"model": "bge-m3", "input": texts}
        with start_infinity(venv, "embedding", model, free_port()) as peer:
            req = infinity_request("embedding", body)
            theirs = np.array(embeddings_of(httpx.post(peer.url + req["path"], timeout=120, **req["kwargs"]).json()))
        mine = np.array(embeddings_of(_ours("embedding", model, "/v1/embeddings", json=body)))
        cos = (theirs * mine).sum(1) / np.linalg.norm(theirs, axis=1) / np.linalg.norm(mine, axis=1)
        print(f"embedding: Infinity {theirs.shape} (norms {np.linalg.norm(theirs, axis=1).round(5)}), "
              f"ours {mine.shape}; cosine Infinity vs ours: {cos.round(6)}")

        model = build_tiny_reranker(root / "reranker", initializer_range=0.02, **XLMR_SIZES[size])
        body = {"model": "bge-reranker-v2-m3", "query": query, "documents": docs, "top_n": len(docs)}
        with start_infinity(venv, "reranker", model, free_port()) as peer:
            req = infinity_request("reranker", body)
            theirs = rerank_scores(httpx.post(peer.url + req["path"], timeout=120, **req["kwargs"]).json())
        mine = rerank_scores(_ours("reranker", model, "/v1/rerank", json=body))
        print(f"rerank: Infinity {theirs}\n        ours     {mine}\n"
              f"        same order: {list(theirs) == list(mine)}, largest score difference: "
              f"{max(abs(theirs[i] - mine[i]) for i in mine):.2e}")

        model = build_tiny_sensevoice(root / "asr", **SENSEVOICE_SIZES[size])
        wav = _speech_wav(10.0)
        with start_funasr_server(model, free_port()) as peer:
            theirs = transcribe(peer.url, wav)
        mine = _ours("asr", model, "/v1/audio/transcriptions", files={"file": ("a.wav", wav)},
                     data={"model": "SenseVoiceSmall"})["text"]
        print(f"transcription: funasr-server {theirs[:40]!r}..., ours {mine[:40]!r}...; "
              f"identical: {theirs.strip() == mine.strip()}")
