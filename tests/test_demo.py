"""`inference-server serve --demo`: tiny random-weight models of all three architectures, served."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from audio_files import encode

from server.background import free_port


def test_serve_demo_serves_every_endpoint_with_a_loud_warning(tmp_path):
    port = free_port()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--demo", "--port", str(port), "--offline"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        with httpx.Client(base_url=url, timeout=60) as client:
            while True:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "demo server did not become ready"
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            embed = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "hello"})
            rerank = client.post("/v1/rerank", json={"model": "bge-reranker-v2-m3", "query": "q", "documents": ["d"]})
            tone = (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32)
            audio = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", encode(tone[None], 16000, "wav_s16"))},
                                data={"model": "SenseVoiceSmall"})
    finally:
        proc.terminate()
        output = proc.communicate(timeout=60)[0]
    assert embed.status_code == 200 and len(embed.json()["data"][0]["embedding"]) == 32
    assert rerank.status_code == 200 and 0 < rerank.json()["results"][0]["relevance_score"] < 1
    assert audio.status_code == 200 and "text" in audio.json()
    assert "DEMO MODE" in output and "MEANINGLESS" in output
    # The first start builds the models: it says so before the seconds that takes, not after.
    assert "demo: preparing the tiny models" in output
    assert output.index("demo: preparing the tiny models") < output.index("DEMO MODE")
    assert "Application shutdown complete" in output  # SIGTERM went through the drain, not a kill
    built = sorted(p.name for p in (tmp_path / "cache" / "inference-server" / "demo").iterdir())
    assert built == ["asr", "embedding", "reranker"]
    assert Path(tmp_path / "cache" / "inference-server" / "demo" / "embedding" / "colbert_linear.pt").is_file()
