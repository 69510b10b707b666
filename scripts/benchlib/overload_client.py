"""One overload request and what became of it (good, refused, late or an error), the pools of
clients that send them, and a phase's answers summed up."""

from __future__ import annotations

import asyncio
import collections
import math
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import httpx

from benchlib.endpoint import Endpoint, Request

POOL = 16  # connections per httpx client
LATE = ("504 timeout", "503 deadline_exceeded", "200 after T", "client timeout")


@dataclass(frozen=True)
class Outcome:
    sent_s: float  # when it was sent, from the phase's start
    seconds: float  # until its answer (or the client gave up)
    status: int | None
    code: str | None  # the error body's code; "client timeout", or the exception's name, where no answer
    retry_after: str | None

    def verdict(self, timeout_s: float) -> str:
        if self.status == 200:
            return "good" if self.seconds <= timeout_s else "200 after T"
        if self.status == 503 and self.code == "overloaded":
            return "refused"
        if self.status == 503 and self.code == "deadline_exceeded":
            return "503 deadline_exceeded"
        if self.status == 504:
            return "504 timeout"
        return "client timeout" if self.code == "client timeout" else "error"


def error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except Exception:  # a peer's body, HTML, plain text: never crash on it
        return None


async def send(ep: Endpoint, http: httpx.AsyncClient, req: Request, limit_s: float, t0: float) -> Outcome:
    started = time.perf_counter()
    status = code = retry_after = None
    try:
        response = await asyncio.wait_for(ep.send(http, req), limit_s)
        status, retry_after = response.status_code, response.headers.get("retry-after")
        code = None if status == 200 else error_code(response)
    except (asyncio.TimeoutError, httpx.TimeoutException):
        code = "client timeout"
    except httpx.HTTPError as e:
        code = type(e).__name__
    return Outcome(started - t0, time.perf_counter() - started, status, code, retry_after)


def client(ep: Endpoint, connections: int, limit_s: float) -> httpx.AsyncClient:
    connections = max(1, connections)
    # verify=False: plain HTTP on loopback, and loading the CA store costs ~25 ms of CPU a client.
    return httpx.AsyncClient(base_url=ep.base_url, timeout=limit_s + 5, verify=False,
                             limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))


@asynccontextmanager
async def clients(ep: Endpoint, connections: int, limit_s: float) -> AsyncIterator[list[httpx.AsyncClient]]:
    """``connections`` in pools of POOL: httpcore's pool does work quadratic in its connections (a
    burst of 500 on one pool took ~9 s of this process's CPU, which the server then lacked)."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(client(ep, POOL, limit_s))
               for _ in range(max(1, math.ceil(connections / POOL)))]


def pct(values: list[float], q: float) -> float | None:
    return 1000 * sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else None


def summary(outcomes: list[Outcome], timeout_s: float) -> dict:
    """Counts by verdict, the refusals' latency, and every (status, code) seen."""
    verdicts = collections.Counter(o.verdict(timeout_s) for o in outcomes)
    refused = [o for o in outcomes if o.verdict(timeout_s) == "refused"]
    late = sum(verdicts[v] for v in LATE)
    retry = [float(o.retry_after) for o in refused if (o.retry_after or "").strip().isdigit()]
    return {"requests": len(outcomes), "good": verdicts["good"], "refused": len(refused),
            "refusal p50 ms": pct([o.seconds for o in refused], 0.5),
            "refusal p95 ms": pct([o.seconds for o in refused], 0.95),
            "refusals without Retry-After": len(refused) - len(retry),
            "Retry-After s (median)": statistics.median(retry) if retry else None,
            "late": " / ".join(str(verdicts[v]) for v in LATE),
            "late share": late / len(outcomes) if outcomes else None,
            "errors": verdicts["error"],
            "answers": dict(collections.Counter(f"{o.status} {o.code}" for o in outcomes))}
