"""Before the server listens: is every configured model on this machine, or can it be downloaded now?

Resolution only, no weights loaded, so it takes a moment. Without it a start without the hub
would listen first and fail a little later on the first model alone; with it, a start that cannot
get its models fails at once and names every missing one, its download size and the ways out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from server.config import Settings
from server.errors import StartupError
from server.weights import hub, store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Absent:
    """A configured model that is not on this machine."""

    kind: str
    spec: store.ModelSpec
    repo_id: str  # the hub id it is configured as
    looked_in: Path

    @property
    def size(self) -> int:
        return self.spec.download_size if self.repo_id == self.spec.repo_id else 0  # known for the default only


def check_models(settings: Settings, models: dict[store.ModelSpec, str]) -> None:
    """Raise one StartupError naming every configured model that can be neither found nor downloaded.
    ``models``: each family's spec and its model setting (a directory, a hub id, or none)."""
    problems: list[str] = []  # directories named by the settings that are missing or incomplete
    absent: list[Absent] = []
    for spec, value in models.items():
        kind = spec.kind
        if store.is_off(value):
            continue
        try:
            if store.find_local(spec, value, settings.models_dir) is None:
                looked_in = (settings.models_dir / store.local_name(value)).resolve()
                absent.append(Absent(kind, spec, value, looked_in))
        except StartupError as err:
            problems.append(str(err))
    missing, why = _not_downloadable(absent, settings.offline)
    if problems or missing:
        report = _report(missing, why, settings, every_kind={spec.kind for spec in models}) if missing else []
        raise StartupError("\n".join([*problems, *report]))
    for model in absent:  # the hub has them: the loader downloads them after the server starts listening
        log.info("%s is not on this machine: it will be downloaded (%s) into %s", model.repo_id,
                 _size(model.size), model.looked_in)


def _not_downloadable(absent: list[Absent], offline: bool) -> tuple[dict[Absent, str], str | None]:
    """The absent models that cannot be downloaded now, each with its own reason (or ""), and the
    reason they share, if one: --offline, or a hub that cannot be reached."""
    if offline:
        return {model: "" for model in absent}, "--offline forbids downloads"
    missing: dict[Absent, str] = {}
    for i, model in enumerate(absent):
        try:
            reason = hub.unavailable(model.repo_id)
        except hub.HubUnreachable as err:
            # Asking again for the other models would only add waiting.
            missing.update({m: "" for m in absent[i:]})
            return missing, str(err)
        if reason is not None:
            missing[model] = reason
    return missing, None


def _report(missing: dict[Absent, str], why: str | None, settings: Settings, every_kind: set[str]) -> list[str]:
    count = f"{len(missing)} model{'s are' if len(missing) > 1 else ' is'}"
    headline = f"cannot start: {count} not on this machine and cannot be downloaded now"
    lines = [headline + (f": {why}." if why else ".")]
    width = max(len(m.repo_id) for m in missing)
    for model, reason in missing.items():
        where = f"looked in {model.looked_in} and the Hugging Face cache" + (f"; {reason}" if reason else "")
        lines.append(f"  {model.kind:<9}  {model.repo_id:<{width}}  {_size(model.size):>12}  ({where})")

    kinds = [m.kind for m in missing]
    command = "inference-server download" + ("" if set(kinds) == every_kind else " " + " ".join(kinds))
    sizes = [m.size for m in missing]
    total = f" ({_size(sum(sizes))})" if all(sizes) else ""
    flags = ", ".join(f"--{kind}-model" for kind in kinds)
    demo = ("`inference-server serve --demo` serves tiny random-weight models (their outputs are "
            "meaningless)")
    return [
        *lines,
        "Three ways out:",
        (f"  1. Where there is internet, run `{command}`{total}, then copy the models/ directory it fills to "
         f"{settings.models_dir.resolve()} on this machine."),
        f"  2. Point {flags} at a directory holding that model's files (or set it to none to serve without it).",
        f"  3. Try the API without downloading anything: {demo}.",
    ]


def _size(n_bytes: int) -> str:
    return f"about {n_bytes / 1e9:.1f} GB" if n_bytes else "size unknown"
