"""funasr-server, the peer for transcription: the ``funasr-server`` console script of the funasr
package in our own venv (``funasr.bin.server`` + ``funasr.bin._server_app``), serving POST
/v1/audio/transcriptions.

It is FunASR's own FastAPI app: with ``--model-path <dir>`` it loads that directory with
``funasr.AutoModel(model=dir, hub="ms", device=..., disable_update=True)`` (no VAD, no punctuation
model, nothing downloaded) under the model name "custom", and each request runs
``model.generate(input=<temp file>, batch_size=1)`` inside the request handler: one request at a
time, no batching across requests. ``start_funasr_server`` gives it a copy of the directory whose
config.yaml sets ``ncpu`` (funasr otherwise forces 4 torch threads), ``dither: 0`` (as our server
does, so transcripts are deterministic) and ``use_itn`` (our default). ``funasr_request``
translates a request into its dialect.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchlib.peer_process import HOST, Peer, linked_copy, replace_file, serve


def _funasr_model_dir(model_dir: Path, workdir: Path, ncpu: int, use_itn: bool) -> Path:
    """A linked copy of the SenseVoice directory whose config.yaml adds ``ncpu``, ``dither: 0`` and
    ``use_itn``.

    funasr-server has no flag or form field for any of them: AutoModel calls
    torch.set_num_threads(ncpu) with ncpu defaulting to 4, the front end dithers (adds noise) by
    default, and SenseVoice decodes without inverse text normalization unless told (ours uses it
    by default). config.yaml's keys reach AutoModel and generate() as defaults, and funasr-server
    never passes these three."""
    import yaml  # in our venv (funasr needs it)

    copy = linked_copy(model_dir, Path(workdir) / "funasr-model")
    config = yaml.safe_load((Path(model_dir) / "config.yaml").read_text())
    config["ncpu"] = ncpu
    config.setdefault("frontend_conf", {})["dither"] = 0.0
    config["use_itn"] = use_itn  # read by SenseVoiceSmall.inference; funasr-server has no form field for it
    replace_file(copy / "config.yaml", yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    return copy


@contextmanager
def start_funasr_server(model_dir: Path, port: int, *, threads: int | None = None, use_itn: bool = True,
                        ready_timeout_s: float = 300) -> Iterator[Peer]:
    """Serve a local SenseVoiceSmall directory with FunASR's own ``funasr-server`` on
    127.0.0.1:port, offline, on CPU, until the block ends. ``threads``: torch threads (default:
    the CPUs this process may use); ``use_itn``: inverse text normalization, on like our server's
    default. The route is POST /v1/audio/transcriptions, model "custom"."""
    threads = threads or len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="funasr-server-") as tmp:
        workdir = Path(tmp)
        served = _funasr_model_dir(model_dir, workdir, threads, use_itn)
        # funasr.bin.server:main is what the `funasr-server` console script runs; -m finds it
        # from this interpreter whatever its bin/ directory is.
        argv = [sys.executable, "-m", "funasr.bin.server", "--host", HOST, "--port", str(port),
                "--device", "cpu", "--model-path", str(served)]
        env = {"HF_HUB_OFFLINE": "1", "MODELSCOPE_OFFLINE": "1",  # a local path: nothing to fetch
               "OMP_NUM_THREADS": str(threads)}
        # The model loads before uvicorn starts listening, so a 200 from /health means ready.
        with serve("funasr-server", argv, port, "/health", ready_timeout_s, env, workdir) as peer:
            yield peer


def funasr_request(wav: bytes, filename: str = "a.wav", language: str | None = None) -> dict:
    """A transcription request for funasr-server in the benchmark's shape. It answers only to its
    own model names: a --model-path model is "custom" ("SenseVoiceSmall" is a 400)."""
    data = {"model": "custom", "response_format": "json"}
    if language:
        data["language"] = language
    return {"path": "/v1/audio/transcriptions", "kwargs": {"files": {"file": (filename, wav)}, "data": data}}


def transcribe(url: str, wav: bytes, timeout_s: float = 120) -> str:
    """Send one WAV to funasr-server at ``url``; returns its text (SenseVoice's <|tags|> removed)."""
    req = funasr_request(wav)
    response = httpx.post(url + req["path"], timeout=timeout_s, **req["kwargs"])
    response.raise_for_status()
    return response.json()["text"]


def funasr_version() -> str:
    """The installed funasr's version: funasr-server is that package's, so it names the peer."""
    from importlib.metadata import version

    return version("funasr")
