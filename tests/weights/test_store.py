"""The model store (where a model's files come from) and the device/dtype settings.

Everything here runs against the tiny bge-m3 on disk and hand-built Hugging Face cache entries;
nothing touches the network (the offline cases prove it with a socket guard).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch

from server.embedding import SPEC as EMBEDDING
from server.errors import StartupError
from server.compute.device import resolve_device, resolve_dtype
from server.weights.store import local_name, resolve

SNAPSHOT_HASH = "0123456789abcdef0123456789abcdef01234567"  # any 40-hex commit id


# --- helpers and fixtures --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated_hf_cache(tmp_path, monkeypatch) -> Path:
    """Point the Hugging Face cache at an empty tmp dir, so a real cache on this machine never
    makes a test pass (or fail). huggingface_hub reads HF_HUB_CACHE into ``constants`` at import
    and snapshot_download reads ``constants.HF_HUB_CACHE`` at call time, so both are set."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return cache


class NetworkUsed(Exception):
    """Deliberately not an OSError: code that swallows OSError must not hide a connection attempt."""


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Any outgoing connection (or host name look-up) raises and is recorded."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise NetworkUsed(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    # Name resolution comes first: on a machine without DNS it would fail before any connect().
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # The guard itself must work, or the tests relying on it prove nothing.
    with pytest.raises(NetworkUsed):
        socket.create_connection(("127.0.0.1", 9))
    with socket.socket() as s, pytest.raises(NetworkUsed):
        s.connect(("127.0.0.1", 9))
    with pytest.raises(NetworkUsed):
        socket.getaddrinfo("huggingface.co", 443)
    attempts.clear()
    return attempts


def copy_model(src: Path, dst: Path, *, without: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst)
    for name in without:
        (dst / name).unlink()
    return dst


def make_cache_entry(cache: Path, src: Path, repo_id: str = "BAAI/bge-m3", *, without: tuple[str, ...] = ()) -> Path:
    """Lay out ``models--org--name/{refs/main,snapshots/<hash>/...}`` as huggingface_hub does."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = copy_model(src, repo_dir / "snapshots" / SNAPSHOT_HASH, without=without)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(SNAPSHOT_HASH)  # no newline, as the hub writes it
    return snapshot


# --- resolve: none and explicit paths ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["none", "None", "NONE", "  none "])
def test_none_turns_the_model_off(value, tmp_path):
    assert resolve(EMBEDDING, value, tmp_path / "models", offline=True) is None


def test_explicit_directory_is_returned(bge_m3_dir, tmp_path):
    assert resolve(EMBEDDING, str(bge_m3_dir), tmp_path / "models", offline=True) == bge_m3_dir


@pytest.mark.parametrize("suffix", ["does-not-exist", "nested/deeper/does-not-exist"])
def test_missing_explicit_path_names_it(tmp_path, suffix, no_network):
    value = str(tmp_path / suffix)
    with pytest.raises(StartupError) as err:
        resolve(EMBEDDING, value, tmp_path / "models", offline=False)  # a path is never downloaded
    assert value in str(err.value)
    assert "does not exist" in str(err.value)
    assert not no_network


def test_missing_relative_path_names_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StartupError, match=r"\./nowhere/bge-m3"):
        resolve(EMBEDDING, "./nowhere/bge-m3", tmp_path / "models", offline=True)


# --- resolve: models/<name> ----------------------------------------------------------------------------


def test_hub_id_found_in_models_dir(bge_m3_dir, tmp_path, no_network):
    models_dir = tmp_path / "models"
    target = copy_model(bge_m3_dir, models_dir / "bge-m3")
    assert resolve(EMBEDDING, "BAAI/bge-m3", models_dir, offline=True) == target
    # Not offline: still found locally, no download attempted.
    assert resolve(EMBEDDING, "BAAI/bge-m3", models_dir, offline=False) == target
    assert not no_network


def test_hub_id_found_in_models_dir_via_symlink(bge_m3_dir, tmp_path):
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "bge-m3").symlink_to(bge_m3_dir, target_is_directory=True)
    assert resolve(EMBEDDING, "BAAI/bge-m3", models_dir, offline=True) == models_dir / "bge-m3"


@pytest.mark.parametrize("missing", ["colbert_linear.pt", "sparse_linear.pt", "config.json"])
def test_incomplete_models_dir_names_the_missing_file(bge_m3_dir, tmp_path, missing):
    models_dir = tmp_path / "models"
    copy_model(bge_m3_dir, models_dir / "bge-m3", without=(missing,))
    with pytest.raises(StartupError) as err:
        resolve(EMBEDDING, "BAAI/bge-m3", models_dir, offline=True)
    message = str(err.value)
    assert f"missing {missing}" in message
    assert str(models_dir / "bge-m3") in message
    # Only the missing file is listed.
    others = [f for f in ("colbert_linear.pt", "sparse_linear.pt", "config.json") if f != missing]
    assert not any(o in message for o in others)


def test_incomplete_explicit_directory_names_the_missing_file(bge_m3_dir, tmp_path):
    broken = copy_model(bge_m3_dir, tmp_path / "broken", without=("colbert_linear.pt",))
    with pytest.raises(StartupError, match="missing colbert_linear.pt"):
        resolve(EMBEDDING, str(broken), tmp_path / "models", offline=True)


def test_weights_alternatives_are_both_reported_when_neither_exists(bge_m3_dir, tmp_path):
    broken = copy_model(bge_m3_dir, tmp_path / "broken")
    for weights in ("model.safetensors", "pytorch_model.bin"):
        (broken / weights).unlink(missing_ok=True)
    with pytest.raises(StartupError, match=r"model\.safetensors\|pytorch_model\.bin"):
        resolve(EMBEDDING, str(broken), tmp_path / "models", offline=True)


# --- resolve: offline and missing ----------------------------------------------------------------------


def test_offline_and_missing_says_where_to_put_the_files(tmp_path, no_network):
    models_dir = tmp_path / "models"
    with pytest.raises(StartupError) as err:
        resolve(EMBEDDING, "BAAI/bge-m3", models_dir, offline=True)
    message = str(err.value)
    assert str(models_dir / "bge-m3") in message
    assert "inference-server download embedding" in message
    assert "--embedding-model none" in message
    assert not no_network


@pytest.mark.skipif(hf_constants.HF_HUB_OFFLINE,
                    reason="HF_HUB_OFFLINE is set: huggingface_hub would not try the network")
def test_online_and_missing_does_go_to_the_hub(tmp_path, no_network):
    # The positive control for the offline tests: the same lookup with offline=False does reach for the
    # network (and the guard sees it), so "no attempt" above means something.
    models_dir = tmp_path / "models"
    with pytest.raises(StartupError) as err:
        resolve(EMBEDDING, "BAAI/bge-m3", models_dir, offline=False)
    assert no_network
    assert f"Could not download BAAI/bge-m3 into {models_dir / 'bge-m3'}" in str(err.value)


# --- resolve: the Hugging Face cache -------------------------------------------------------------------


def test_found_in_hf_cache_offline(bge_m3_dir, tmp_path, isolated_hf_cache, no_network):
    snapshot = make_cache_entry(isolated_hf_cache, bge_m3_dir)
    found = resolve(EMBEDDING, "BAAI/bge-m3", tmp_path / "models", offline=True)
    assert found is not None
    assert found.resolve() == snapshot.resolve()
    assert not no_network


def test_hf_cache_used_without_download_when_online(bge_m3_dir, tmp_path, isolated_hf_cache, no_network):
    snapshot = make_cache_entry(isolated_hf_cache, bge_m3_dir)
    found = resolve(EMBEDDING, "BAAI/bge-m3", tmp_path / "models", offline=False)
    assert found.resolve() == snapshot.resolve()
    assert not no_network


def test_models_dir_wins_over_hf_cache(bge_m3_dir, tmp_path, isolated_hf_cache):
    make_cache_entry(isolated_hf_cache, bge_m3_dir)
    local = copy_model(bge_m3_dir, tmp_path / "models" / "bge-m3")
    assert resolve(EMBEDDING, "BAAI/bge-m3", tmp_path / "models", offline=True) == local


def test_incomplete_hf_cache_entry_is_ignored(bge_m3_dir, tmp_path, isolated_hf_cache, no_network, caplog):
    make_cache_entry(isolated_hf_cache, bge_m3_dir, without=("sparse_linear.pt",))
    with pytest.raises(StartupError) as err:
        resolve(EMBEDDING, "BAAI/bge-m3", tmp_path / "models", offline=True)
    assert "not available offline" in str(err.value)
    assert str(tmp_path / "models" / "bge-m3") in str(err.value)
    assert "ignoring incomplete Hugging Face cache entry" in caplog.text
    assert not no_network


def test_hf_cache_entry_of_another_repo_is_not_used(bge_m3_dir, tmp_path, isolated_hf_cache):
    make_cache_entry(isolated_hf_cache, bge_m3_dir, repo_id="someone/bge-m3")
    with pytest.raises(StartupError, match="not available offline"):
        resolve(EMBEDDING, "BAAI/bge-m3", tmp_path / "models", offline=True)


# --- names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo_id", "name"),
    [("BAAI/bge-m3", "bge-m3"), ("bge-m3", "bge-m3"), ("BAAI/bge-reranker-v2-m3/", "bge-reranker-v2-m3"),
     ("FunAudioLLM/SenseVoiceSmall", "SenseVoiceSmall")],
)
def test_local_name(repo_id, name):
    assert local_name(repo_id) == name


# --- device and dtype -----------------------------------------------------------------------------------

cuda_present = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error path")


def test_auto_device_follows_cuda_availability():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(" AUTO ").type == expected


def test_cpu_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")


@cuda_present
@pytest.mark.parametrize("value", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_a_startup_error(value):
    with pytest.raises(StartupError, match="no CUDA GPU") as err:
        resolve_device(value)
    assert value in str(err.value)


@pytest.mark.parametrize("value", ["tpu", "banana", "gpu", ""])
def test_unknown_device_is_a_startup_error(value):
    with pytest.raises(StartupError, match="auto, cpu, cuda or cuda:N"):
        resolve_device(value)


def test_known_but_unsupported_torch_device_is_a_startup_error():
    with pytest.raises(StartupError, match="not supported"):
        resolve_device("meta")


def test_auto_dtype():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16  # constructing needs no GPU
    assert resolve_dtype("auto", torch.device("cuda:1")) == torch.float16


def test_explicit_dtypes_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_dtype("float32", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(StartupError, match="float16 is not supported on CPU"):
        resolve_dtype("float16", cpu)


def test_float16_allowed_on_cuda():
    assert resolve_dtype("float16", torch.device("cuda")) == torch.float16
