"""A peer server as a subprocess on 127.0.0.1, and the linked copies of model directories the peers
are given: our weights with their own configuration files beside them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from server.background import started_process

HOST = "127.0.0.1"  # loopback only: the peers are never reachable from outside
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inference-server" / "peers"


@dataclass
class Peer:
    """A running peer server."""

    name: str
    url: str  # base URL, e.g. http://127.0.0.1:7997
    process: subprocess.Popen


@contextmanager
def serve(name: str, argv: list[str], port: int, ready_path: str, ready_timeout_s: float,
           env: dict[str, str], workdir: Path) -> Iterator[Peer]:
    """Start argv (cwd in workdir), wait until ready_path answers 200, stop it on exit."""
    url = f"http://{HOST}:{port}"
    with started_process(argv, url + ready_path, ready_timeout=ready_timeout_s, env=env, cwd=workdir) as process:
        yield Peer(name, url, process)


def linked_copy(src: Path, dst: Path) -> Path:
    """dst with a symlink to each top-level entry of src, so single files can be replaced cheaply."""
    dst.mkdir(parents=True)
    for entry in Path(src).resolve().iterdir():
        if not entry.name.startswith("."):
            (dst / entry.name).symlink_to(entry)
    return dst


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` at ``path`` in a linked copy, as a file of the copy's own."""
    path.unlink(missing_ok=True)  # a symlink into the original directory: never write through it
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
