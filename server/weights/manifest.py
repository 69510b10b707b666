"""Sizes and SHA-256 checksums of a model directory, for moving weights to an air-gapped host.

``inference-server download`` calls :func:`record` on each model it fetched: it prints one line
per file (size, checksum, path) and writes ``MANIFEST.sha256`` into the model directory, in the
format of GNU ``sha256sum``, so the copy on the other side is checked with::

    cd models/bge-m3 && sha256sum -c MANIFEST.sha256

(``shasum -a 256 -c MANIFEST.sha256`` on macOS).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import NamedTuple, TextIO

MANIFEST_NAME = "MANIFEST.sha256"
# huggingface_hub keeps download metadata and lock files in <local_dir>/.cache/; they are not model files.
_SKIPPED_DIRS = frozenset({".cache"})
_CHUNK = 1024 * 1024


class FileEntry(NamedTuple):
    path: str  # relative to the model directory, "/"-separated
    size: int  # bytes
    sha256: str  # hex digest


def sha256_of(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe(model_dir: Path) -> list[FileEntry]:
    """Every file under ``model_dir`` (symlinked files followed), sorted by path, without the
    manifest itself and huggingface_hub's ``.cache/``."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise NotADirectoryError(f"{model_dir} is not a directory")
    entries = []
    for root, dirs, files in os.walk(model_dir):
        dirs[:] = sorted(d for d in dirs if not (Path(root) == model_dir and d in _SKIPPED_DIRS))
        for name in files:
            file = Path(root) / name
            relative = file.relative_to(model_dir).as_posix()
            if relative == MANIFEST_NAME or not file.is_file():  # a dangling link is not a file
                continue
            entries.append(FileEntry(relative, file.stat().st_size, sha256_of(file)))
    return sorted(entries)


def _manifest_line(entry: FileEntry) -> str:
    # GNU sha256sum's escaping: a name with a backslash or a newline gets a leading backslash.
    name = entry.path
    if any(c in name for c in "\\\n\r"):
        name = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return f"\\{entry.sha256}  {name}\n"
    return f"{entry.sha256}  {name}\n"


def write_manifest(model_dir: Path, entries: list[FileEntry] | None = None) -> Path:
    """Write ``MANIFEST.sha256`` (``sha256sum -c`` format) into ``model_dir``; return its path."""
    model_dir = Path(model_dir)
    entries = describe(model_dir) if entries is None else entries
    target = model_dir / MANIFEST_NAME
    tmp = target.with_name(MANIFEST_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(_manifest_line(e) for e in entries)
    os.replace(tmp, target)
    return target


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_table(entries: list[FileEntry]) -> str:
    """One line per file: size, SHA-256, path; then the total."""
    width = max((len(human_size(e.size)) for e in entries), default=4)
    lines = [f"  {'size':>{width}}  {'sha256':<64}  file"]
    lines += [f"  {human_size(e.size):>{width}}  {e.sha256}  {e.path}" for e in entries]
    total = sum(e.size for e in entries)
    lines.append(f"  {human_size(total):>{width}}  total, {len(entries)} file{'s' if len(entries) != 1 else ''}")
    return "\n".join(lines)


def record(model_dir: Path, out: TextIO | None = None) -> list[FileEntry]:
    """Print the size and checksum of every file of ``model_dir`` and write its ``MANIFEST.sha256``."""
    out = sys.stdout if out is None else out
    entries = describe(model_dir)
    manifest = write_manifest(model_dir, entries)
    print(format_table(entries), file=out)
    print(f"  checksums written to {manifest} (check a copy with: cd {model_dir} && sha256sum -c {MANIFEST_NAME})",
          file=out)
    return entries
