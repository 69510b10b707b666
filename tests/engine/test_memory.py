"""server/engine/memory.py: the oneDNN primitive cache cap the server sets at start-up (the cause of its
memory growth under a mixed load), and that oneDNN really reads it when set from Python."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import live_server

from server.engine.memory import (
    ONEDNN_CACHE_CAPACITY,
    ONEDNN_CACHE_ENV,
    limit_onednn_cache,
)

ROOT = Path(__file__).resolve().parents[2]


def test_limit_onednn_cache_sets_the_cap_unless_the_environment_has_one(monkeypatch):
    monkeypatch.delenv(ONEDNN_CACHE_ENV, raising=False)
    assert limit_onednn_cache() == str(ONEDNN_CACHE_CAPACITY)
    assert os.environ[ONEDNN_CACHE_ENV] == str(ONEDNN_CACHE_CAPACITY)

    monkeypatch.setenv(ONEDNN_CACHE_ENV, "1024")  # an operator's own value wins
    assert limit_onednn_cache() == "1024"
    assert os.environ[ONEDNN_CACHE_ENV] == "1024"


def test_the_app_caps_the_cache_when_it_starts(monkeypatch):
    monkeypatch.delenv(ONEDNN_CACHE_ENV, raising=False)
    with live_server():
        assert os.environ[ONEDNN_CACHE_ENV] == str(ONEDNN_CACHE_CAPACITY)


# GELU on float32 CPU tensors runs as a oneDNN primitive, cached per shape. After the first shape
# and 8 others, is the first one still cached? ONEDNN_VERBOSE=2 logs every creation as a hit or miss.
_PROBE = textwrap.dedent("""
    import torch
    from server.engine.memory import limit_onednn_cache

    limit_onednn_cache(4)  # after importing torch, as the server does: oneDNN reads it at first use
    first = torch.ones(2, 37, 64)
    torch.nn.functional.gelu(first)
    for n in range(8):
        torch.nn.functional.gelu(torch.ones(2, 40 + n, 64))
    print("AGAIN", flush=True)
    torch.nn.functional.gelu(first)
""")


def _first_shape_again(env_capacity: str | None) -> str | None:
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_CACHE_ENV}
    env["ONEDNN_VERBOSE"] = "2"
    if env_capacity is not None:
        env[ONEDNN_CACHE_ENV] = env_capacity
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    after = out.split("AGAIN", 1)[1]
    lines = [line for line in after.splitlines() if ",eltwise," in line and "2x37x64" in line and ",create:" in line]
    return lines[0].split(",")[3] if lines else None


def test_onednn_reads_the_cap_set_from_python():
    capped = _first_shape_again(None)
    if capped is None:
        pytest.skip("this torch build does not run GELU through oneDNN here")
    assert capped == "create:cache_miss"  # evicted: 4 entries hold only the last shapes
    assert _first_shape_again("1024") == "create:cache_hit"  # the environment's value won
