"""The Hugging Face hub as a place to download models from: can it be reached, and if not, why."""

from __future__ import annotations

from server.errors import StartupError

# A start waits this long for the hub before reporting it unreachable; a firewall that drops
# packets (rather than refusing them) would otherwise hold the start for minutes.
PROBE_TIMEOUT_S = 10.0


class HubUnreachable(StartupError):
    """A download failed because the hub cannot be reached from this machine."""


def endpoint() -> str:
    """The hub's address (``HF_ENDPOINT`` when a mirror is set)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def connection_problem(err: BaseException) -> str | None:
    """Why ``err`` means the hub cannot be reached, in a few words; None for any other failure."""
    import requests
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so the Hugging Face hub is not asked"
    # snapshot_download reports a failed connection with nothing cached as LocalEntryNotFoundError.
    if isinstance(err, (requests.ConnectionError, requests.Timeout, LocalEntryNotFoundError, TimeoutError)):
        return f"the Hugging Face hub ({endpoint()}) cannot be reached from this machine"
    return None


def unavailable(repo_id: str) -> str | None:
    """None when ``repo_id`` can be downloaded now, else why not; HubUnreachable when no model can
    be. Asks the hub for the repo's metadata only (one small request), never for its files."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo_id, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        return f"{repo_id} is gated on the hub: accept its terms there and log in (HF_TOKEN)"
    except RepositoryNotFoundError:
        return f"{repo_id} does not exist on the hub ({endpoint()})"
    except Exception as err:  # any other failure is a reason to name, not a crash
        unreachable = connection_problem(err)
        if unreachable is not None:
            raise HubUnreachable(unreachable) from err
        return f"the hub answered {type(err).__name__}: {err}"
    return None
