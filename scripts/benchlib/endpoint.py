"""What every load driver sends, and to what: a Request (a JSON body or an audio upload, and how much
work it carries), an Endpoint (a running system, ours or a peer, and how to send it a Request), and
a System (one not started yet)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Request:
    json: dict | None = None  # the body of a JSON endpoint
    audio: bytes | None = None  # a WAV file, for transcription
    units: float = 1.0  # texts, documents or audio seconds it carries


@dataclass
class Endpoint:
    """A running system that serves one kind: how to send it a request, and its batch counters."""

    name: str
    send: Callable[[httpx.AsyncClient, Request], Awaitable[httpx.Response]]
    base_url: str
    counters: Callable[[], dict[str, float]] | None = None


@dataclass(frozen=True)
class System:
    """A system under test, not started yet: its name in the tables ("peer": the peer's own, once
    started) and what starts it."""

    name: str
    start: Callable[[], AbstractContextManager[Endpoint]]
    # Interactive beside bulk: interactive requests sent as "interactive", the bulk as "background".
    priorities: bool = False
