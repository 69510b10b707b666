"""server.engine.torch_threads: each model loads, warms up and computes on its own worker thread, and torch
work on any other thread runs single-threaded, so that torch's OpenMP teams are one per model."""

from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np
import torch
from audio_files import encode
from conftest import in_new_thread, live_server

from server.embedding.model import BgeM3
from server.engine.torch_threads import one_torch_thread
from server.asr.model import SenseVoice


def test_one_torch_thread_is_for_this_thread_alone():
    default = torch.get_num_threads()
    with one_torch_thread():
        assert torch.get_num_threads() == 1
        assert in_new_thread(torch.get_num_threads) == default  # threads started meanwhile
    assert torch.get_num_threads() == default
    assert in_new_thread(torch.get_num_threads) == default


def recording(calls: dict, name: str, method):
    """``method``, noting the thread it ran on and torch's thread count there."""
    def wrapper(*args, **kwargs):
        calls[name].append((threading.get_ident(), torch.get_num_threads()))
        return method(*args, **kwargs)
    return wrapper


def test_models_load_and_compute_on_their_own_threads(monkeypatch, bge_m3_dir, sensevoice_dir):
    calls = defaultdict(list)
    for cls in (BgeM3, SenseVoice):
        for method in ("__init__", "warm_up", "run_batch"):
            monkeypatch.setattr(cls, method, recording(calls, f"{cls.__name__}.{method}", getattr(cls, method)))
    monkeypatch.setattr(SenseVoice, "with_features", recording(calls, "features", SenseVoice.with_features))
    clip = (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32)

    with live_server(embedding_model=str(bge_m3_dir), asr_model=str(sensevoice_dir)) as srv, srv.client() as client:
        for text in ("one", "two words", "and three words"):
            assert client.post("/v1/embeddings", json={"model": "bge-m3", "input": text}).status_code == 200
        response = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", encode(clip[None], 16000, "wav_s16"))},
                               data={"model": "FunAudioLLM/SenseVoiceSmall", "language": "en"})
        assert response.status_code == 200, response.text

    for model in ("BgeM3", "SenseVoice"):
        threads = {thread for name in ("__init__", "warm_up", "run_batch") for thread, _ in calls[f"{model}.{name}"]}
        assert len(threads) == 1, model  # loaded, warmed up and run on one thread
        assert all(count == torch.get_num_threads() for _, count in calls[f"{model}.run_batch"])
    assert calls["BgeM3.run_batch"][0][0] != calls["SenseVoice.run_batch"][0][0]  # a thread each
    # The clip's features were computed in request preparation, on one torch thread.
    assert calls["features"] and all(count == 1 for _, count in calls["features"])
