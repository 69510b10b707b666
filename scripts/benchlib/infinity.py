"""Infinity (``infinity-emb``, https://github.com/michaelfeil/infinity), the peer for embeddings and
rerank: it serves /v1/embeddings and /v1/rerank.

It pins ``numpy<2`` and ``sentence-transformers<4``, which clash with our own environment, so it
lives in a virtual environment of its own that ``ensure_infinity`` creates on demand (default:
``~/.cache/inference-server/peers/infinity-venv``, outside the repo), with the CPU build of torch
installed first so pip never pulls a CUDA one. ``start_infinity`` runs ``infinity_emb v2 --engine
torch --device cpu`` in a subprocess. Infinity loads an embedding model through
sentence-transformers, which pools by MEAN unless the directory says otherwise; bge-m3 pools by
CLS, and the real BAAI/bge-m3 repo carries the sentence-transformers files that say so. Our
builders write only the transformers layout, so ``infinity_model_dir`` lays out a copy (symlinks to
the weights plus modules.json, 1_Pooling/config.json, ...) as the real repo has it. The reranker
copy caps the pair length at 512 tokens like our server and FlagReranker (Infinity would otherwise
use the tokenizer's 8192).

``infinity_request`` translates our request into Infinity's, returning ``{"path": ..., "kwargs":
{...}}`` for ``httpx.AsyncClient.post(path, **kwargs)``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchlib.peer_process import CACHE, HOST, Peer, linked_copy, replace_file, serve

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
        copy = linked_copy(model_dir, Path(workdir) / "infinity-model")
        hidden = json.loads((model_dir / "config.json").read_text())["hidden_size"]
        replace_file(copy / "modules.json", json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]))
        replace_file(copy / "1_Pooling" / "config.json", json.dumps({
            "word_embedding_dimension": hidden, "pooling_mode_cls_token": True,
            "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False}))
        (copy / "2_Normalize").mkdir()
        replace_file(copy / "sentence_bert_config.json", json.dumps({"max_seq_length": 8192, "do_lower_case": False}))
        return copy
    if kind == "reranker":
        if rerank_max_length is None:
            return model_dir
        copy = linked_copy(model_dir, Path(workdir) / "infinity-model")
        tok = json.loads((model_dir / "tokenizer_config.json").read_text())
        replace_file(copy / "tokenizer_config.json", json.dumps({**tok, "model_max_length": rerank_max_length}))
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
        with serve(f"infinity-{kind}", argv, port, "/health", ready_timeout_s, env, workdir) as peer:
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
