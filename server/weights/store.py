"""Where a model's files come from: an explicit directory, ``models/<name>``, the Hugging Face cache,
or (only when downloads are allowed) the hub. It never loads weights; adapters do that."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from server.errors import StartupError
from server.weights import hub

log = logging.getLogger(__name__)

NONE = "none"


def is_off(value: str) -> bool:
    """Whether a model setting switches its model off (``none``, in any case, spaces around)."""
    return value.strip().lower() == NONE


@dataclass(frozen=True)
class ModelSpec:
    """Where one model family's files come from (declared in the family's package)."""

    kind: str  # the family's name: its folder, its settings' prefix, its download choice
    served_name: str  # the name /v1/models lists
    aliases: tuple[str, ...]
    repo_id: str  # default hub id
    required_files: tuple[str, ...]  # each entry: one file, or alternatives separated by "|"
    # Weights in other formats (ONNX, TF, flax) are skipped: they would triple the download.
    ignore_patterns: tuple[str, ...] = ("onnx/*", "*.onnx", "*.onnx_data", "*.h5", "*.msgpack", "*.ot", "imgs/*")
    # Bytes a download of ``repo_id`` fetches (ignore_patterns applied), kept here so that a start
    # without the hub can say what getting the model costs; 0 when not known.
    download_size: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        return (self.served_name, *self.aliases)


def local_name(repo_id: str) -> str:
    """``BAAI/bge-m3`` lives in ``models/bge-m3``."""
    return repo_id.rstrip("/").split("/")[-1]


def _looks_like_path(value: str) -> bool:
    # A hub id is "name" or "org/name"; anything else is meant as a directory.
    return value.startswith((".", "/", "~")) or value.count("/") > 1 or "\\" in value


def check_files(spec: ModelSpec, path: Path) -> None:
    """A present but broken directory is an error at start, not a traceback at the first request."""
    missing = [f for f in spec.required_files if not any((path / alt).is_file() for alt in f.split("|"))]
    if missing:
        raise StartupError(
            f"The {spec.kind} model directory {path} is incomplete: missing {', '.join(missing)}. "
            f"Re-download it with `inference-server download {spec.kind}` or copy the full {spec.repo_id} repo there."
        )


def find_local(spec: ModelSpec, value: str, models_dir: Path) -> Path | None:
    """The directory of a model on this machine, without touching the network; None when it would
    have to be downloaded. A named directory that is missing or incomplete is an error."""
    candidate = Path(value).expanduser()
    if candidate.is_dir():
        check_files(spec, candidate)
        return candidate
    if _looks_like_path(value):
        raise StartupError(f"The {spec.kind} model directory {value} does not exist.")

    in_models = models_dir / local_name(value)
    if in_models.is_dir():
        check_files(spec, in_models)
        return in_models
    return _from_hf_cache(value, spec)


def resolve(spec: ModelSpec, value: str, models_dir: Path, offline: bool) -> Path | None:
    """Find the directory of a model given its setting (a path, a hub id, or ``none``)."""
    if is_off(value):
        return None
    local = find_local(spec, value, models_dir)
    if local is not None:
        return local
    if offline:
        in_models = models_dir / local_name(value)
        raise StartupError(
            f"The {spec.kind} model {value} is not available offline. Put its files in {in_models.resolve()} "
            f"(on a connected machine: `inference-server download {spec.kind}`, then copy {models_dir}/), "
            f"or pass --{spec.kind}-model /path/to/dir, or --{spec.kind}-model none to not serve it."
        )
    return download(spec, value, models_dir)


def _from_hf_cache(repo_id: str, spec: ModelSpec) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, local_files_only=True, ignore_patterns=list(spec.ignore_patterns)))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    try:
        check_files(spec, path)
    except StartupError:
        log.warning("ignoring incomplete Hugging Face cache entry for %s at %s", repo_id, path)
        return None
    return path


def download(spec: ModelSpec, repo_id: str, models_dir: Path) -> Path:
    """Fetch a model into ``models/<name>`` (huggingface_hub shows a progress bar)."""
    from huggingface_hub import snapshot_download

    target = models_dir / local_name(repo_id)
    log.info("downloading %s into %s", repo_id, target)
    try:
        snapshot_download(repo_id, local_dir=target, ignore_patterns=list(spec.ignore_patterns))
    except Exception as err:
        unreachable = hub.connection_problem(err)
        if unreachable is not None:
            raise hub.HubUnreachable(f"Could not download {repo_id} into {target}: {unreachable}.") from err
        raise StartupError(f"Could not download {repo_id} into {target}: {err}") from err
    check_files(spec, target)
    return target
