"""Shutdown: SIGTERM under load, against the real CLI in a subprocess.

Requests in flight when SIGTERM lands are all answered in full; requests sent after it are
refused (connection refused, or 503); the process exits within the grace period; the log says the
application shut down cleanly, and (run at --log-level debug with a key) never shows the key.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from server.background import free_port

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-shutdown-test-5b1e0c7d"
GRACE = 20
CLIENTS = 8
INPUTS = 192  # per request: enough work that every request is still queued or computing at SIGTERM


class ServerProcess:
    def __init__(self, args: list[str]):
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", INFERENCE_DEVICE="cpu")
        self.proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", *args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"no {text!r} in the server log:\n{self.log[-3000:]}")
            time.sleep(0.01)

    def wait_until_ready(self, url: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"the server exited at start:\n{self.log[-3000:]}"
            assert time.monotonic() < deadline, f"the server never became ready:\n{self.log[-3000:]}"
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)


def _submitted(url: str, model: str = "bge-m3") -> float:
    try:
        text = httpx.get(url + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return -1
    match = re.search(rf'^inference_items_total\{{model="{model}",outcome="submitted"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGTERM, which Windows does not deliver; the server ships for Linux")
def test_sigterm_under_load_finishes_in_flight_work_and_refuses_new(bge_m3_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(["--embedding-model", str(bge_m3_dir), "--reranker-model", "none", "--asr-model", "none",
                            "--host", "127.0.0.1", "--port", str(port), "--shutdown-timeout", str(GRACE),
                            "--offline", "--api-key", KEY, "--log-level", "debug"])
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        server.wait_until_ready(url)

        texts = [[f"client {c} input {i} " + "the giant panda eats bamboo " * 36 for i in range(INPUTS)]
                 for c in range(CLIENTS)]
        results: list[dict] = [{} for _ in range(CLIENTS)]

        def client_thread(c: int) -> None:
            try:
                with httpx.Client(base_url=url, timeout=120, headers=auth) as client:
                    response = client.post("/v1/embeddings", json={"model": "bge-m3", "input": texts[c]})
                results[c] = {"response": response, "done": time.monotonic()}
            except httpx.HTTPError as err:
                results[c] = {"error": err, "done": time.monotonic()}

        threads = [threading.Thread(target=client_thread, args=(c,), daemon=True) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        # SIGTERM once every request is queued (and, with this much work, before most have finished).
        deadline = time.monotonic() + 60
        while _submitted(url) < CLIENTS * INPUTS:
            assert time.monotonic() < deadline, "the requests never all reached the queue"
            time.sleep(0.02)
        sigterm_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)

        # After uvicorn has seen the signal, new requests are refused.
        server.wait_for_line("Shutting down", 10)
        late, draining = [], False
        for _ in range(5):
            if server.proc.poll() is not None:
                break
            try:
                with httpx.Client(base_url=url, timeout=10, headers=auth) as client:
                    status = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "late"}).status_code
            except httpx.ConnectError:
                status = "refused"
            late.append(status)
            draining = draining or server.proc.poll() is None  # the answer came while in-flight work drained
            time.sleep(0.05)

        for t in threads:
            t.join(GRACE + 30)
        try:
            code = server.proc.wait(GRACE + 10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit within the grace period:\n{server.log[-3000:]}")
        exited_after = time.monotonic() - sigterm_at
    finally:
        server.stop()

    log = server.log
    print(f"SIGTERM with {CLIENTS} x {INPUTS} inputs queued; {sum(1 for r in results if r['done'] > sigterm_at)} "
          f"requests finished after it; late requests: {late}; exit {code} after {exited_after:.2f} s")
    # Every accepted request was answered in full.
    for c, result in enumerate(results):
        assert "response" in result, f"client {c}: {result.get('error')!r}\n{log[-2000:]}"
        response = result["response"]
        assert response.status_code == 200, (c, response.status_code, response.text[:300])
        data = response.json()["data"]
        assert [d["index"] for d in data] == list(range(INPUTS))
        vectors = np.array([d["embedding"] for d in data])
        assert vectors.ndim == 2 and np.isfinite(vectors).all()
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    finished_after_sigterm = sum(1 for r in results if r["done"] > sigterm_at)
    assert finished_after_sigterm >= 1, "nothing was in flight at SIGTERM: the test proved nothing"
    # Late requests: refused or 503, never served.
    assert late and all(status in ("refused", 503) for status in late), late
    assert draining, "no late request was tried while the server was still draining"
    # A clean exit within the grace period: uvicorn re-raises SIGTERM after its graceful shutdown.
    assert code == -signal.SIGTERM, (code, log[-2000:])
    assert exited_after < GRACE + 5, exited_after
    assert "Application shutdown complete" in log, log[-2000:]
    assert "Traceback" not in log, log[-4000:]
    assert KEY not in log and KEY[3:] not in log


def _long_wav(minutes: float) -> bytes:
    """The tests' speech recording tiled to ``minutes``, as 16 kHz mono 16-bit WAV."""
    import io
    import wave

    from server.asr.audio import decode_audio

    speech = decode_audio((ROOT / "tests/data/speech_pauses.flac").read_bytes(), max_seconds=60)
    audio = np.tile(speech, int(minutes * 60 * 16000 / speech.size) + 1)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((audio * 32767).astype("<i2").tobytes())
    return out.getvalue()


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGTERM, which Windows does not deliver; the server ships for Linux")
@pytest.mark.parametrize("when", ["queued", "preparing", "streamed"])
def test_sigterm_during_a_long_transcription_answers_a_json_503(sensevoice_dir, when):
    """A 20-minute recording is still being transcribed (its segments queued), or still being
    decoded and scanned for speech, when SIGTERM lands with a 1 s grace period: the client gets 503
    ``shutting_down`` in OpenAI's JSON shape, not uvicorn's text/plain 500, and
    the log has no traceback. Streamed (its segments queued), the stream ends with an error event
    that says so."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(["--embedding-model", "none", "--reranker-model", "none", "--asr-model", str(sensevoice_dir),
                            "--host", "127.0.0.1", "--port", str(port), "--shutdown-timeout", "1", "--offline"])
    audio = _long_wav(20)
    try:
        server.wait_until_ready(url)
        result: dict = {}

        def transcribe() -> None:
            try:
                with httpx.Client(base_url=url, timeout=120) as client:
                    result["response"] = client.post("/v1/audio/transcriptions", files={"file": ("long.wav", audio)},
                                                     data={"model": "SenseVoiceSmall",
                                                           "stream": str(when == "streamed").lower()})
            except httpx.HTTPError as err:
                result["error"] = err

        thread = threading.Thread(target=transcribe, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        if when in ("queued", "streamed"):  # its segments are in the queue
            while _submitted(url, "FunAudioLLM/SenseVoiceSmall") <= 0:
                assert time.monotonic() < deadline and thread.is_alive(), f"never queued: {result}"
                time.sleep(0.02)
        else:  # the upload is in, being decoded and scanned: nothing queued yet
            time.sleep(0.5)
            assert _submitted(url, "FunAudioLLM/SenseVoiceSmall") == 0
        server.proc.send_signal(signal.SIGTERM)
        thread.join(30)
        code = server.proc.wait(30)
    finally:
        server.stop()
    assert "response" in result, (result, server.log[-3000:])
    response = result["response"]
    if when == "streamed":
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.text.splitlines() if line.startswith("data: ")]
        assert '"code":"shutting_down"' in events[-1].replace(" ", ""), events[-3:]
    else:
        assert response.status_code == 503, (response.status_code, response.text[:300])
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == "shutting_down", response.text
    assert code == -signal.SIGTERM, (code, server.log[-2000:])
    assert "Traceback" not in server.log and "Exception in ASGI application" not in server.log, server.log[-4000:]
