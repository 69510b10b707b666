"""Peer servers for the benchmark: other inference servers run on the same model directories and
driven with the same workload as ours, on 127.0.0.1 only.

* Infinity (``infinity-emb``, https://github.com/michaelfeil/infinity) serves /v1/embeddings and
  /v1/rerank. It pins ``numpy<2`` and ``sentence-transformers<4``, which clash with our own
  environment, so it lives in a virtual environment of its own that ``ensure_infinity`` creates
  on demand (default: ``~/.cache/inference-server/peers/infinity-venv``, outside the repo), with
  the CPU build of torch installed first so pip never pulls a CUDA one. ``start_infinity`` runs
  ``infinity_emb v2 --engine torch --device cpu`` in a subprocess. Infinity loads an embedding
  model through sentence-transformers, which pools by MEAN unless the directory says otherwise;
  bge-m3 pools by CLS, and the real BAAI/bge-m3 repo carries the sentence-transformers files that
  say so. Our builders write only the transformers layout, so ``infinity_model_dir`` lays out a
  copy (symlinks to the weights plus modules.json, 1_Pooling/config.json, ...) as the real repo
  has it. The reranker copy caps the pair length at 512 tokens like our server and FlagReranker
  (Infinity would otherwise use the tokenizer's 8192).
* funasr-server (the ``funasr-server`` console script of the funasr package in our own venv:
  ``funasr.bin.server`` + ``funasr.bin._server_app``) serves POST /v1/audio/transcriptions. It is
  FunASR's own FastAPI app: with ``--model-path <dir>`` it loads that directory with
  ``funasr.AutoModel(model=dir, hub="ms", device=..., disable_update=True)`` (no VAD, no
  punctuation model, nothing downloaded) under the model name "custom", and each request runs
  ``model.generate(input=<temp file>, batch_size=1)`` inside the request handler: one request
  at a time, no batching across requests. ``start_funasr_server`` gives it a copy of the
  directory whose config.yaml sets ``ncpu`` (funasr otherwise forces 4 torch threads), ``dither: 0``
  (as our server does, so transcripts are deterministic) and ``use_itn`` (our default).

``peer_for(kind, model_dir, peers_dir)`` is what scripts/bench.py calls: it starts the peer for a
kind and yields an endpoint whose ``send`` translates the benchmark's request into the peer's
dialect. ``infinity_request`` and ``funasr_request`` do that translation on their own, returning
``{"path": ..., "kwargs": {...}}`` for ``httpx.AsyncClient.post(path, **kwargs)``. Every wait is
bounded, and each server subprocess (its whole process group) is stopped when its ``with`` block
ends, on errors too.

    python scripts/peers.py --size small    # build the models, start both peers, check answers
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.background import free_port, started_process  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only: the peers are never reachable from outside
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inference-server" / "peers"
DEFAULT_INFINITY_VENV = CACHE / "infinity-venv"

# torch goes in first and alone: the machine has a CPU wheel of exactly this version, and any
# other version (or letting infinity-emb's `torch>=2.2.1` pick one) pulls a multi-GB CUDA build.
TORCH_PIN = "torch==2.13.0"
# Verified together on CPU with the torch engine (Python 3.11). `server` brings the CLI (typer,
# uvicorn, fastapi); `torch` brings sentence-transformers. optimum is left out on purpose: without
# it Infinity does not try BetterTransformer, which optimum>=2 no longer has anyway.
INFINITY_PINS = [
    "infinity-emb[server,torch]==0.0.78",
    "sentence-transformers==3.4.1",
    "transformers==4.57.6",
    "tokenizers==0.22.2",
    "numpy==1.26.4",
    "huggingface-hub==0.36.2",
    "fastapi==0.165.0",
    "pydantic==2.14.4",
    "uvicorn==0.32.1",
]
INSTALL_TIMEOUT_S = 1800
MARKER = ".peers-complete"  # written last: its content says which pins the venv was built with
BUILDING = ".peers-building"  # present while ensure_infinity builds the venv

# Names the benchmark sends in "model"; Infinity serves one model and answers to any name, but
# serving it under ours keeps requests and responses identical.
SERVED_NAMES = {"embedding": "bge-m3", "reranker": "bge-reranker-v2-m3"}
RERANK_TOP_N = 4  # our /v1/rerank default top_n; Infinity's default is all documents
RERANK_MAX_LENGTH = 512  # our server's reranker_max_length default, and FlagReranker's max_length


@dataclass
class Peer:
    """A running peer server."""

    name: str
    url: str  # base URL, e.g. http://127.0.0.1:7997
    process: subprocess.Popen


@contextmanager
def _serve(name: str, argv: list[str], port: int, ready_path: str, ready_timeout_s: float,
           env: dict[str, str], workdir: Path) -> Iterator[Peer]:
    """Start argv (cwd in workdir), wait until ready_path answers 200, stop it on exit."""
    url = f"http://{HOST}:{port}"
    with started_process(argv, url + ready_path, ready_timeout=ready_timeout_s, env=env, cwd=workdir) as process:
        yield Peer(name, url, process)


def _linked_copy(src: Path, dst: Path) -> Path:
    """dst with a symlink to each top-level entry of src, so single files can be replaced cheaply."""
    dst.mkdir(parents=True)
    for entry in Path(src).resolve().iterdir():
        if not entry.name.startswith("."):
            (dst / entry.name).symlink_to(entry)
    return dst


def _replace(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)  # a symlink into the original directory: never write through it
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ---- Infinity ----------------------------------------------------------------------------------


def ensure_infinity(venv: Path = DEFAULT_INFINITY_VENV, python: str | None = None) -> Path:
    """Create Infinity's virtual environment at ``venv`` unless it is already complete; returns the
    path of its ``infinity_emb`` CLI. Takes about 2 minutes the first time (pip, PyPI), then none.

    A venv is rebuilt from scratch when its marker is missing (an earlier build died half-way) or
    names other pins. ``python`` is the interpreter to base it on (default: this one's base)."""
    venv = Path(venv).absolute()
    if infinity_ready(venv):
        return venv / "bin" / "infinity_emb"
    cli, marker, stamp = venv / "bin" / "infinity_emb", venv / MARKER, _infinity_stamp()
    building = venv / BUILDING
    if venv.exists() and any(venv.iterdir()) and not (marker.is_file() or building.is_file()):
        # Never delete a directory this function did not make (a mistyped path, another venv).
        raise RuntimeError(f"{venv} exists and is not a venv made by ensure_infinity; remove it or pick another path")
    shutil.rmtree(venv, ignore_errors=True)
    venv.mkdir(parents=True)
    building.touch()  # marks the directory as ours while it is incomplete
    vpy = str(venv / "bin" / "python")
    steps = [[python or sys.executable, "-m", "venv", str(venv)],
             [vpy, "-m", "pip", "install", "--quiet", TORCH_PIN],
             # torch pinned again so the resolver can only keep the CPU build already installed
             [vpy, "-m", "pip", "install", "--quiet", TORCH_PIN, *INFINITY_PINS]]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if done.returncode:
            raise RuntimeError(f"creating Infinity's venv failed at {' '.join(argv)}:\n{done.stderr[-4000:]}")
    marker.write_text(stamp)
    building.unlink()
    return cli


def _infinity_stamp() -> str:
    return json.dumps([TORCH_PIN, *INFINITY_PINS])


def infinity_ready(venv: Path = DEFAULT_INFINITY_VENV) -> bool:
    """Whether ``venv`` is a complete Infinity venv with today's pins (nothing to install)."""
    venv = Path(venv).absolute()
    marker = venv / MARKER
    return marker.is_file() and marker.read_text() == _infinity_stamp() and (venv / "bin" / "infinity_emb").is_file()


def infinity_model_dir(kind: str, model_dir: Path, workdir: Path,
                       rerank_max_length: int | None = RERANK_MAX_LENGTH) -> Path:
    """The directory Infinity should load for ``model_dir``: a linked copy under ``workdir`` with
    what Infinity needs that our builders do not write (the original is never modified).

    * embedding: bge-m3's sentence-transformers files (Transformer -> CLS pooling -> Normalize,
      max_seq_length 8192), as in the BAAI/bge-m3 repo; a directory that has its own modules.json
      (a real download) is used as it is.
    * reranker: tokenizer_config.json with ``model_max_length = rerank_max_length``, because
      Infinity truncates (query, document) pairs at the tokenizer's length, 8192 for bge-reranker;
      None keeps the directory's own.
    """
    model_dir = Path(model_dir)
    if kind == "embedding":
        if (model_dir / "modules.json").is_file():
            return model_dir
        copy = _linked_copy(model_dir, Path(workdir) / "infinity-model")
        hidden = json.loads((model_dir / "config.json").read_text())["hidden_size"]
        _replace(copy / "modules.json", json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]))
        _replace(copy / "1_Pooling" / "config.json", json.dumps({
            "word_embedding_dimension": hidden, "pooling_mode_cls_token": True,
            "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False}))
        (copy / "2_Normalize").mkdir()
        _replace(copy / "sentence_bert_config.json", json.dumps({"max_seq_length": 8192, "do_lower_case": False}))
        return copy
    if kind == "reranker":
        if rerank_max_length is None:
            return model_dir
        copy = _linked_copy(model_dir, Path(workdir) / "infinity-model")
        tok = json.loads((model_dir / "tokenizer_config.json").read_text())
        _replace(copy / "tokenizer_config.json", json.dumps({**tok, "model_max_length": rerank_max_length}))
        return copy
    raise ValueError(f"Infinity serves embedding and reranker, not {kind!r}")


@contextmanager
def start_infinity(venv: Path, kind: str, model_dir: Path, port: int, *, batch_size: int = 32,
                   dtype: str = "float32", threads: int | None = None,
                   rerank_max_length: int | None = RERANK_MAX_LENGTH,
                   ready_timeout_s: float = 300) -> Iterator[Peer]:
    """Serve ``model_dir`` (kind "embedding" or "reranker") with Infinity on 127.0.0.1:port until
    the block ends; yields a Peer whose routes are /v1/embeddings or /v1/rerank. Creates the venv
    first if needed (see ensure_infinity). ``threads``: torch threads (default: torch's own)."""
    cli = ensure_infinity(venv)
    with tempfile.TemporaryDirectory(prefix="infinity-") as tmp:
        workdir = Path(tmp)
        served = infinity_model_dir(kind, model_dir, workdir, rerank_max_length)
        argv = [str(cli), "v2", "--model-id", str(served), "--served-model-name", SERVED_NAMES[kind],
                "--engine", "torch", "--device", "cpu", "--dtype", dtype, "--batch-size", str(batch_size),
                # routes under /v1 like ours (GET /health stays at the root)
                "--url-prefix", "/v1", "--host", HOST, "--port", str(port),
                # no warm-up: it runs batch_size x 512-token passes, minutes for a big model on CPU;
                # the benchmark warms every server alike. BetterTransformer needs optimum<2: off.
                "--no-model-warmup", "--no-bettertransformer", "--no-compile", "--log-level", "warning"]
        env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",  # never reach for the hub
               "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",  # no telemetry (posthog)
               "INFINITY_HOME": str(workdir)}  # its .infinity_cache would otherwise land in the cwd
        if threads:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        with _serve(f"infinity-{kind}", argv, port, "/health", ready_timeout_s, env, workdir) as peer:
            yield peer


def infinity_request(kind: str, payload: dict) -> dict:
    """Our request JSON for /v1/embeddings or /v1/rerank as the same request to Infinity, in the
    benchmark's shape {"path": ..., "kwargs": {"json": ...}}.

    Embeddings pass through (Infinity takes the OpenAI shape; the model name is ignored as it serves
    one model). Rerank keeps our defaults explicit: top_n 4 (Infinity's default is every document)
    and documents as plain strings (Infinity does not take {"text": ...} objects); our extra fields
    (max_chunks_per_doc, overlap_tokens) have no Infinity counterpart and are dropped."""
    if kind == "embedding":
        body = {k: payload[k] for k in ("model", "input", "encoding_format", "dimensions", "user") if k in payload}
        return {"path": "/v1/embeddings", "kwargs": {"json": body}}
    if kind == "reranker":
        docs = [d["text"] if isinstance(d, dict) else d for d in payload["documents"]]
        body = {"model": payload.get("model", SERVED_NAMES[kind]), "query": payload["query"], "documents": docs,
                "top_n": payload.get("top_n", RERANK_TOP_N),
                "return_documents": payload.get("return_documents", False)}
        return {"path": "/v1/rerank", "kwargs": {"json": body}}
    raise ValueError(f"Infinity serves embedding and reranker, not {kind!r}")


def embeddings_of(response: dict) -> list[list[float]]:
    """Vectors in input order from an OpenAI-shaped embeddings response (ours or Infinity's)."""
    return [d["embedding"] for d in sorted(response["data"], key=lambda d: d["index"])]


def rerank_scores(response: dict) -> dict[int, float]:
    """{document index: relevance score} from a rerank response (ours or Infinity's: both sort by
    score, both give sigmoid(logit) by default)."""
    return {r["index"]: r["relevance_score"] for r in response["results"]}


# ---- funasr-server -----------------------------------------------------------------------------


def _funasr_model_dir(model_dir: Path, workdir: Path, ncpu: int, use_itn: bool) -> Path:
    """A linked copy of the SenseVoice directory whose config.yaml adds ``ncpu``, ``dither: 0`` and
    ``use_itn``.

    funasr-server has no flag or form field for any of them: AutoModel calls
    torch.set_num_threads(ncpu) with ncpu defaulting to 4, the front end dithers (adds noise) by
    default, and SenseVoice decodes without inverse text normalization unless told (ours uses it
    by default). config.yaml's keys reach AutoModel and generate() as defaults, and funasr-server
    never passes these three."""
    import yaml  # in our venv (funasr needs it)

    copy = _linked_copy(model_dir, Path(workdir) / "funasr-model")
    config = yaml.safe_load((Path(model_dir) / "config.yaml").read_text())
    config["ncpu"] = ncpu
    config.setdefault("frontend_conf", {})["dither"] = 0.0
    config["use_itn"] = use_itn  # read by SenseVoiceSmall.inference; funasr-server has no form field for it
    _replace(copy / "config.yaml", yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
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
        with _serve("funasr-server", argv, port, "/health", ready_timeout_s, env, workdir) as peer:
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


# ---- for scripts/bench.py ----------------------------------------------------------------------


@dataclass
class PeerEndpoint:
    """The fields of bench.Endpoint, so the benchmark drives a peer as it drives our server. A peer
    has no batch counters to scrape."""

    name: str
    send: Callable[[httpx.AsyncClient, Any], Awaitable[httpx.Response]]  # (client, bench.Request)
    base_url: str
    counters: Callable[[], dict[str, float]] | None = None


def peer_for(kind: str, model_dir: Path, peers_dir: Path = CACHE,
             threads: int | None = None) -> Callable[[], Any] | None:
    """For the benchmark: a function that starts the peer serving ``kind`` on ``model_dir`` and
    returns a context manager yielding a PeerEndpoint, or None for a kind without a peer. Infinity's
    venv is ``peers_dir / "infinity-venv"``. ``send`` takes bench.Request (``.json``: our JSON body,
    ``.audio``: WAV bytes) and sends the same request in the peer's dialect."""
    if kind in SERVED_NAMES:
        @contextmanager
        def infinity() -> Iterator[PeerEndpoint]:
            async def send(http: httpx.AsyncClient, req: Any) -> httpx.Response:
                r = infinity_request(kind, req.json)
                return await http.post(r["path"], **r["kwargs"])

            venv = Path(peers_dir) / "infinity-venv"
            with start_infinity(venv, kind, model_dir, free_port(), threads=threads) as peer:
                yield PeerEndpoint(f"Infinity {INFINITY_PINS[0].split('==')[1]}", send, peer.url)

        return infinity
    if kind == "asr":
        @contextmanager
        def funasr() -> Iterator[PeerEndpoint]:
            async def send(http: httpx.AsyncClient, req: Any) -> httpx.Response:
                r = funasr_request(req.audio, "clip.wav")
                return await http.post(r["path"], **r["kwargs"])

            with start_funasr_server(model_dir, free_port(), threads=threads) as peer:
                yield PeerEndpoint(f"funasr-server {_funasr_version()}", send, peer.url)

        return funasr
    return None


def unavailable(kind: str, peers_dir: Path = CACHE) -> str | None:
    """Why the peer for ``kind`` cannot start without installing anything, or None if it can: for
    workloads that skip a missing peer rather than build its venv (minutes, from PyPI)."""
    venv = Path(peers_dir) / "infinity-venv"
    if kind in SERVED_NAMES and not infinity_ready(venv):
        return (f"Infinity is not installed: no complete venv at {venv} (`python scripts/peers.py --venv {venv}`, "
                "or scripts/bench.py --peers without --mixed, builds it: about 2 minutes from PyPI)")
    if kind == "asr":
        import importlib.util

        if importlib.util.find_spec("funasr") is None:
            return "funasr-server is not installed: no funasr package in this environment"
    return None


def _funasr_version() -> str:
    from importlib.metadata import version

    return version("funasr")


# ---- self-check --------------------------------------------------------------------------------


def _speech_wav(seconds: float) -> bytes:
    """``seconds`` of the tests' espeak-ng recording (tiled) as a 16 kHz mono 16-bit WAV."""
    import io
    import wave

    import numpy as np

    from server.transcription.audio import decode_audio

    speech = decode_audio((REPO / "tests/data/speech_pauses.flac").read_bytes(), max_seconds=60)
    audio = np.tile(speech, int(seconds * 16000 // len(speech)) + 1)[:int(seconds * 16000)]
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def _ours(kind: str, model_dir: Path, path: str, **request) -> dict:
    """One request to our own server (in this process, float32) serving ``model_dir``."""
    from server.background import serve_in_thread
    from server.config import Settings

    settings = Settings(**{"embedding_model": "none", "reranker_model": "none", "asr_model": "none",
                           f"{kind}_model": str(model_dir)}, port=free_port(), dtype="float32", log_level="warning")
    with serve_in_thread(settings) as srv:
        response = httpx.post(srv.url + path, timeout=120, **request)
    response.raise_for_status()
    return response.json()


def _check(size: str, venv: Path) -> None:
    """Start each peer on random-weight models of ``size`` and compare its answers with ours."""
    import numpy as np

    from server.models.tiny_xlmr import (
        XLMR_SIZES,
        build_tiny_bge_m3,
        build_tiny_reranker,
    )
    from server.transcription.tiny import SENSEVOICE_SIZES, build_tiny_sensevoice

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


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Start each peer on random-weight models and check its answers.")
    parser.add_argument("--size", default="small")
    parser.add_argument("--venv", type=Path, default=DEFAULT_INFINITY_VENV)
    args = parser.parse_args()
    _check(args.size, args.venv)
