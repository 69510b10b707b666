"""Forward passes and request preparation take turns on a CPU (server.engine.cpu_gate)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import numpy as np
import pytest

from server.engine.batching import Batcher
from server.engine.cpu_gate import CpuGate
from tests.conftest import live_server


class Turns:
    """Holders of a gate that start when they get their turn and stop when told to."""

    def __init__(self, gate: CpuGate):
        self.gate = gate
        self.started: list[str] = []
        self.holding: set[str] = set()
        self._release: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task] = {}

    def begin(self, name: str, kind: str) -> asyncio.Task:
        self._release[name] = asyncio.Event()
        hold = self.gate.forward_pass if kind == "pass" else self.gate.preparation

        async def holder():
            async with hold():
                self.started.append(name)
                self.holding.add(name)
                await self._release[name].wait()
                self.holding.discard(name)

        self.tasks[name] = asyncio.create_task(holder())
        return self.tasks[name]

    async def end(self, name: str) -> None:
        self._release[name].set()
        await self.tasks[name]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_a_pass_waits_for_running_preparation_and_preparation_for_a_running_pass():
    async def go():
        turns = Turns(CpuGate())
        turns.begin("prep", "prep")
        await settle()
        turns.begin("pass", "pass")
        await settle()
        assert turns.started == ["prep"]
        await turns.end("prep")
        await settle()
        assert turns.holding == {"pass"}
        turns.begin("late prep", "prep")
        await settle()
        assert turns.holding == {"pass"}
        await turns.end("pass")
        await settle()
        assert turns.holding == {"late prep"}
        await turns.end("late prep")

    asyncio.run(go())


def test_preparation_runs_side_by_side():
    async def go():
        turns = Turns(CpuGate())
        for name in ("a", "b", "c"):
            turns.begin(name, "prep")
        await settle()
        assert turns.holding == {"a", "b", "c"}
        for name in ("a", "b", "c"):
            await turns.end(name)

    asyncio.run(go())


def test_turns_alternate_so_neither_side_starves():
    async def go():
        turns = Turns(CpuGate())
        turns.begin("pass 1", "pass")
        await settle()
        turns.begin("prep A", "prep")  # waits through pass 1
        await settle()
        turns.begin("pass 2", "pass")
        await settle()
        assert turns.holding == {"pass 1"}
        await turns.end("pass 1")
        await settle()
        assert turns.holding == {"prep A"}, "what waited through a pass goes before the next pass"
        turns.begin("prep B", "prep")  # arrives while pass 2 waits: goes after it
        await settle()
        assert turns.holding == {"prep A"}
        await turns.end("prep A")
        await settle()
        assert turns.holding == {"pass 2"}, "a waiting pass goes before preparation that came after it"
        await turns.end("pass 2")
        await settle()
        assert turns.holding == {"prep B"}
        await turns.end("prep B")
        assert turns.started == ["pass 1", "prep A", "pass 2", "prep B"]

    asyncio.run(go())


def test_passes_of_different_models_run_one_at_a_time():
    async def go():
        turns = Turns(CpuGate())
        turns.begin("embedding pass", "pass")
        turns.begin("asr pass", "pass")
        await settle()
        assert turns.holding == {"embedding pass"}
        await turns.end("embedding pass")
        await settle()
        assert turns.holding == {"asr pass"}
        await turns.end("asr pass")

    asyncio.run(go())


def test_a_cancelled_waiter_leaves_the_gate_usable():
    async def go():
        turns = Turns(CpuGate())
        turns.begin("prep", "prep")
        await settle()
        waiting_pass = turns.begin("pass", "pass")
        await settle()
        turns.begin("late prep", "prep")  # held back by the waiting pass
        await settle()
        assert turns.holding == {"prep"}
        waiting_pass.cancel()
        await settle()
        assert turns.holding == {"prep", "late prep"}
        await turns.end("prep")
        await turns.end("late prep")
        turns.begin("next pass", "pass")
        await settle()
        assert turns.holding == {"next pass"}
        await turns.end("next pass")

    asyncio.run(go())


def test_a_disabled_gate_never_waits():
    async def go():
        turns = Turns(CpuGate(enabled=False))
        turns.begin("pass", "pass")
        turns.begin("prep", "prep")
        turns.begin("other pass", "pass")
        await settle()
        assert turns.holding == {"pass", "prep", "other pass"}
        for name in ("pass", "prep", "other pass"):
            await turns.end(name)

    asyncio.run(go())


def test_run_preparation_runs_off_the_event_loop_in_its_turn():
    async def go():
        gate = CpuGate()
        turns = Turns(gate)
        turns.begin("pass", "pass")
        await settle()
        ran_on: list[int] = []
        work = asyncio.create_task(gate.run_preparation(lambda x: ran_on.append(threading.get_ident()) or x * 2, 21))
        await asyncio.sleep(0.05)
        assert not ran_on
        await turns.end("pass")
        assert await work == 42
        assert ran_on and ran_on[0] != threading.get_ident()

    asyncio.run(go())



def test_a_cancelled_preparation_ends_only_after_its_thread_even_if_cancelled_twice():
    """What the thread uses (a decoder, a borrowed VAD model) is let go by the caller once it is
    cancelled: so the cancellation waits for the thread, however often it is repeated."""
    async def go():
        gate = CpuGate()
        started, finished = threading.Event(), threading.Event()

        def work():
            started.set()
            threading.Event().wait(0.3)
            finished.set()

        task = asyncio.create_task(gate.run_preparation(work))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished.is_set()
        assert gate.preparing == 0

    asyncio.run(go())

def test_the_batch_is_chosen_when_the_pass_gets_its_turn():
    """Items whose preparation finished while the pass waited for it ride in that pass, and the
    model never computes while preparation holds the gate."""

    async def go():
        gate = CpuGate()
        overlapped = []
        batches = []

        def run_batch(payloads):
            overlapped.append(gate.preparing)
            batches.append(list(payloads))
            return payloads

        batcher = Batcher(name="fake", run_batch=run_batch, max_batch_cost=100, max_batch_size=8, max_queue=16,
                          gate=gate)
        batcher.start()
        turns = Turns(gate)
        turns.begin("preparing b", "prep")
        await settle()
        [a] = batcher.submit([("a", 1)])  # its pass now waits for the preparation of b
        await asyncio.sleep(0.05)
        assert not batches
        [b] = batcher.submit([("b", 1)])
        await turns.end("preparing b")
        assert await asyncio.gather(a, b) == ["a", "b"]
        assert batches == [["a", "b"]]
        assert overlapped == [0]
        await batcher.close()

    asyncio.run(go())


@pytest.fixture(scope="module")
def cpu_server(bge_m3_dir, reranker_dir, sensevoice_dir):
    with live_server(embedding_model=str(bge_m3_dir), reranker_model=str(reranker_dir), asr_model=str(sensevoice_dir),
                     device="cpu") as srv:
        yield srv


def test_on_a_cpu_every_model_shares_one_gate(cpu_server):
    gates = {kind: served.batcher.gate for kind, served in cpu_server.runtime.served.items()}
    assert set(gates) == {"embedding", "reranker", "asr"}
    assert gates["embedding"] is gates["reranker"] is gates["asr"] and gates["asr"].enabled


@pytest.mark.parametrize("route", ["embeddings", "rerank", "transcriptions"])
def test_request_preparation_waits_for_a_pass_in_progress(cpu_server, route):
    from tests.audio_files import encode

    gate = cpu_server.runtime.served["embedding"].batcher.gate
    loop = cpu_server.runtime.served["embedding"].batcher._task.get_loop()
    release = asyncio.Event()
    holding = threading.Event()

    async def hold_a_pass():
        async with gate.forward_pass():
            holding.set()
            await release.wait()

    held = asyncio.run_coroutine_threadsafe(hold_a_pass(), loop)
    assert holding.wait(10)
    result: list[httpx.Response] = []

    def send():
        with cpu_server.client() as client:
            if route == "embeddings":
                result.append(client.post("/v1/embeddings", json={"model": "bge-m3", "input": "hello there"}))
            elif route == "rerank":
                body = {"model": "bge-reranker-v2-m3", "query": "hello", "documents": ["hello there", "goodbye"]}
                result.append(client.post("/v1/rerank", json=body))
            else:
                tone = (0.3 * np.sin(np.arange(32000) * 2 * np.pi * 220 / 16000)).astype(np.float32)
                files = {"file": ("a.wav", encode(tone[None], 16000, "wav_s16"), "audio/wav")}
                result.append(client.post("/v1/audio/transcriptions", files=files, data={"model": "SenseVoiceSmall"}))

    sender = threading.Thread(target=send)
    sender.start()
    try:
        for _ in range(500):
            if gate.preparation_waiting:
                break
            sender.join(0.02)
        assert gate.preparation_waiting == 1 and not result
    finally:
        loop.call_soon_threadsafe(release.set)
        held.result(10)
        sender.join(60)
    assert result and result[0].status_code == 200, result[0].text if result else "no response"


def test_preparation_that_overstays_stops_holding_passes_back():
    """Hour-long audio's speech check would otherwise stall every model's passes behind it."""

    async def go():
        turns = Turns(CpuGate(max_hold=0.2))
        turns.begin("long prep", "prep")
        await settle()
        turns.begin("pass", "pass")
        await asyncio.sleep(0.05)
        assert turns.holding == {"long prep"}
        turns.begin("short prep", "prep")  # arrives while the pass waits: still goes after it
        await asyncio.sleep(0.3)
        assert turns.holding == {"long prep", "pass"}
        await turns.end("pass")
        await settle()
        assert turns.holding == {"long prep", "short prep"}
        await turns.end("short prep")
        await turns.end("long prep")

    asyncio.run(go())
