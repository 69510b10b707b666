"""A newcomer's first hour: a start without the hub, `download` without internet, a quiet start,
curl's default Content-Type, the upload limit's message, the latency metric's route labels and
what the README promises against what --demo gives."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import assert_error_shape, live_server

from server.background import free_port
from server.config import ENV_PREFIX
from server.families import FAMILIES
from server.compute.tiny_xlmr import TINY_CONFIG

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without INFERENCE_* settings or a Hugging Face cache of this machine,
    the hub pointed at a loopback port nothing listens on: a machine without internet, for sure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX) and not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT=f"http://127.0.0.1:{free_port()}",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT), **{f"{ENV_PREFIX}DEVICE": "cpu", **extra})
    return env


def _cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=tmp_path, env=_cli_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=120, check=False)


# --- a start that cannot get its models ----------------------------------------------------------------


def test_a_start_without_the_hub_fails_before_listening_and_names_every_model_with_the_ways_out(tmp_path):
    proc = _cli(["serve", "--host", "127.0.0.1", "--port", "0", "--device", "cpu"], tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Uvicorn running" not in output and "Application startup" not in output, "it listened first"
    assert "Traceback" not in output
    # The last thing printed is the report: every model, its size, and the three ways out.
    report = proc.stderr[proc.stderr.rindex("inference-server: "):]
    assert report.startswith("inference-server: cannot start: 3 models are not on this machine"), report
    assert "cannot be reached" in report
    for spec in (family.spec for family in FAMILIES.values()):
        (line,) = [line for line in report.splitlines() if f" {spec.repo_id} " in line]
        assert f"about {spec.download_size / 1e9:.1f} GB" in line, line
        assert spec.download_size > 100e6, "a download size for every known model"
    assert "`inference-server download`" in report and "copy" in report
    assert "--embedding-model, --reranker-model, --asr-model" in report
    assert "inference-server serve --demo" in report.splitlines()[-1]


def test_an_offline_start_reports_only_the_missing_models_and_how_to_download_just_those(tmp_path, bge_m3_dir):
    models = tmp_path / "models"
    proc = _cli(["serve", "--offline", "--port", "0", "--embedding-model", str(bge_m3_dir), "--models-dir",
                 str(models)], tmp_path)
    assert proc.returncode == 1, proc.stderr
    report = proc.stderr[proc.stderr.rindex("inference-server: "):]
    assert "2 models are not on this machine" in report and "--offline" in report.splitlines()[0]
    assert "bge-m3 " not in report, "the embedding model is there"
    assert "`inference-server download reranker asr`" in report
    assert str(models.resolve() / "SenseVoiceSmall") in report


def test_download_without_the_hub_says_it_needs_internet(tmp_path):
    proc = _cli(["download", "embedding", "--models-dir", str(tmp_path / "models")], tmp_path)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("inference-server: `inference-server download` needs internet"), last
    assert "--offline" not in proc.stderr, "advice for serve, not for download"
    assert "Traceback" not in proc.stderr


# --- funasr's notices ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["demo", "model directory"])
def test_a_start_with_asr_prints_none_of_funasrs_notices(tmp_path, request, how):
    """--demo imports funasr first to build the tiny SenseVoice; a model directory, to load it."""
    port = free_port()
    log_file = tmp_path / "server.log"
    model = ["--demo"] if how == "demo" else ["--asr-model", str(request.getfixturevalue("sensevoice_dir"))]
    args = ["serve", *model, "--offline", "--embedding-model", "none", "--reranker-model", "none", "--port", str(port)]
    env = _cli_env(tmp_path, XDG_CACHE_HOME=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    with open(log_file, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "server.cli", *args], cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not _ready(port):
            assert proc.poll() is None, log_file.read_text()
            assert time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(60)
    output = log_file.read_text()
    assert "loaded FunAudioLLM/SenseVoiceSmall" in output, output
    assert "ffmpeg" not in output, output
    assert "model hub" not in output and "trust_remote_code" not in output, output


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False


# --- requests a newcomer gets wrong --------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare():
    """No model: every check below happens before a model is looked up."""
    with live_server(asr_max_upload_bytes=MIB, api_keys=["sk-first-hour"]) as srv:
        yield srv


KEY = {"Authorization": "Bearer sk-first-hour"}


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_a_json_body_without_its_content_type_is_a_400_naming_the_header(bare, content_type):
    body = json.dumps({"model": "bge-m3", "input": "hello"})
    headers = {**KEY, **({"Content-Type": content_type} if content_type else {})}
    with bare.client() as client:
        for path in ("/v1/embeddings", "/v1/rerank"):
            err = assert_error_shape(client.post(path, content=body, headers=headers), 400, "invalid_content_type")
            assert "Content-Type: application/json" in err["message"], err
            assert (content_type or "no Content-Type") in err["message"], err
        # The same body with the header reaches the model look-up (none is served here).
        sent_right = client.post("/v1/embeddings", content=body, headers={**KEY, "Content-Type": "application/json"})
    assert_error_shape(sent_right, 404, "model_not_found")


def test_an_upload_over_the_limit_is_refused_with_the_documented_limit(bare):
    def streamed():  # a well-formed multipart body, without Content-Length: the cap applies while it streams
        yield b'--x\r\nContent-Disposition: form-data; name="model"\r\n\r\nSenseVoiceSmall\r\n'
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        for _ in range(3):
            yield b"\x00" * MIB
        yield b"\r\n--x--\r\n"

    with bare.client() as client:
        declared = client.post("/v1/audio/transcriptions", headers=KEY, data={"model": "SenseVoiceSmall"},
                               files={"file": ("big.wav", b"\x00" * (2 * MIB))})
        chunked = client.post("/v1/audio/transcriptions", content=streamed(),
                              headers={**KEY, "Content-Type": "multipart/form-data; boundary=x"})
    for response in (declared, chunked):
        err = assert_error_shape(response, 413, "payload_too_large")
        assert err["message"] == f"The audio file is larger than {MIB} bytes.", err


def test_refused_keys_and_the_docs_are_counted_under_their_route(bare):
    with bare.client() as client:
        assert client.get("/v1/models").status_code == 401
        assert client.post("/v1/embeddings", json={}).status_code == 401
        assert client.get("/docs").status_code == 200
        assert client.get("/no/such/route", headers=KEY).status_code == 404
        metrics = client.get("/metrics").text
    counted = set(re.findall(r'inference_request_seconds_count\{route="([^"]*)",status="(\d+)"\}', metrics))
    assert {("/v1/models", "401"), ("/v1/embeddings", "401"), ("/docs", "200")} <= counted, counted
    assert ("unmatched", "404") in counted, "a path no route has stays one label"
    assert ("unmatched", "401") not in counted and ("unmatched", "200") not in counted, counted


# --- the README against --demo -------------------------------------------------------------------------


def test_readme_says_what_demo_changes_where_it_prints_the_dimensions():
    readme = (ROOT / "README.md").read_text()
    demo_dims = TINY_CONFIG["hidden_size"]
    (line,) = [line for line in readme.splitlines() if "print(len(vectors.data[0].embedding))" in line]
    assert "1024" in line and str(demo_dims) in line and "--demo" in line, line
    quick_start = readme[readme.index("## Quick start"):readme.index("## Using it")]
    assert f"{demo_dims} dimensions" in quick_start and "meaningless" in quick_start
