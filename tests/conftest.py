"""Shared fixtures: tiny models built once per session, and live servers on 127.0.0.1."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from server.background import RunningServer, free_port, serve_in_thread
from server.config import ENV_PREFIX
from server.families import FAMILIES, make_settings
from server.compute.tiny_xlmr import build_tiny_bge_m3, build_tiny_reranker

# The suite's servers (in-process and subprocesses alike) run where its references are computed,
# on the CPU in float32, also on a GPU host (whose --device auto would pick CUDA in float16). Tests
# marked ``gpu`` run on CUDA with float16 tolerances: TEST_DEVICE=cuda pytest -m gpu
# (scripts/gpu_check.sh).
TEST_DEVICE = os.environ.get("TEST_DEVICE", "cpu")
os.environ[f"{ENV_PREFIX}DEVICE"] = "cpu"


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available() and TEST_DEVICE.startswith("cuda"):
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and TEST_DEVICE=cuda (scripts/gpu_check.sh)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bge_m3_dir(tmp_path_factory) -> Path:
    return build_tiny_bge_m3(tmp_path_factory.mktemp("models") / "bge-m3")


@pytest.fixture(scope="session")
def reranker_dir(tmp_path_factory) -> Path:
    return build_tiny_reranker(tmp_path_factory.mktemp("models") / "bge-reranker-v2-m3")


@pytest.fixture(scope="session")
def sensevoice_dir(tmp_path_factory) -> Path:
    from server.asr.tiny import build_tiny_sensevoice

    return build_tiny_sensevoice(tmp_path_factory.mktemp("models") / "SenseVoiceSmall")


class LiveServer(RunningServer):
    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kw)


@contextmanager
def live_server(**overrides) -> Iterator[LiveServer]:
    """A real server on a free loopback port, serving only the models named in ``overrides``."""
    opts: dict = {f"{name}_model": "none" for name in FAMILIES}
    opts.update(host="127.0.0.1", port=free_port(), log_level="warning", device="cpu")
    opts.update(overrides)
    with serve_in_thread(make_settings(**opts)) as running:
        yield LiveServer(running.app, running.url)


@pytest.fixture(scope="module")
def embed_server(bge_m3_dir) -> Iterator[LiveServer]:
    with live_server(embedding_model=str(bge_m3_dir)) as srv:
        yield srv


def in_new_thread(fn):
    """``fn()`` run on a thread started for it (torch keeps some settings per thread)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


def assert_error_shape(response: httpx.Response, status: int | None = None, code: str | None = None) -> dict:
    """OpenAI's error body, exactly; with no ``status``, any 4xx."""
    if status is None:
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    else:
        assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert err["param"] is None or isinstance(err["param"], str)
    assert err["code"] is None or isinstance(err["code"], str)
    if code is not None:
        assert err["code"] == code, err
    return err
