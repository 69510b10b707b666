"""server.background.started_process (what the benchmark uses to run servers), and the benchmark's
verdict arithmetic, which decides what the README calls met."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from benchlib import load, throughput
from benchlib.endpoint import Endpoint, Request
from benchlib.throughput import bench_workload, measure
from benchlib.throughput_report import targets
from benchlib.throughput_systems import OFFLINE, SERVER, SERVER_OFF
from benchlib.throughput_workloads import Workload

from server.background import free_port, started_process


def test_started_process_waits_for_ready_and_stops_the_process(tmp_path):
    (tmp_path / "ready").write_text("ok")
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    with started_process(cmd, f"http://127.0.0.1:{port}/ready", ready_timeout=60) as proc:
        assert proc.poll() is None
    assert proc.poll() is not None  # stopped when the block ended


def test_started_process_reports_a_process_that_dies_with_its_output():
    cmd = [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"exited with 3(.|\n)*no model here"):
        with started_process(cmd, f"http://127.0.0.1:{free_port()}/ready", ready_timeout=60):
            pass


def test_benchmark_measures_the_load_generators_cpu():
    async def busy(http, req):  # a client that burns CPU, as one parsing large responses would
        deadline = time.process_time() + 0.05
        while time.process_time() < deadline:
            pass
        return httpx.Response(200)

    async def idle(http, req):
        return httpx.Response(200)

    def closed_loop(send):
        ep = Endpoint("client", send, "http://127.0.0.1:9")
        return asyncio.run(load.closed_loop(ep, [Request({})] * 4, 1, 60))

    # Making the HTTP client costs CPU too (its TLS context), more on a busy machine and most the
    # first time in a process (imports, certificates): the 4 x 50 ms the busy client burns are what
    # it adds over an idle one run after a first, warming one.
    closed_loop(idle)
    baseline, run = closed_loop(idle), closed_loop(busy)
    assert run.client_cpu_s - baseline.client_cpu_s == pytest.approx(0.2, abs=0.05)
    assert run.client_share == pytest.approx(run.client_cpu_s / (run.seconds * len(os.sched_getaffinity(0))))


def test_benchmark_ratios_and_targets():
    rows = [
        {"system": OFFLINE, "texts/s": 100.0},
        {"system": SERVER, "texts/s": 95.0, "padding efficiency": 0.9, "lone p50 ms": 11.0, "lone forward ms": 10.0,
         "client CPU share": 0.08},
        {"system": SERVER_OFF, "texts/s": 25.0},
        {"system": "Infinity 0.0.78", "texts/s": 100.0},
    ]
    ratios = throughput.ratios(rows, "texts")
    assert ratios == pytest.approx({f"server / {OFFLINE}": 0.95, f"server / {SERVER_OFF}": 3.8,
                                    "server / Infinity 0.0.78": 0.95, "lone p50 / its forward pass": 1.1})
    judged = targets([{"kind": "embedding", "workload": "mixed lengths", "rows": rows, "ratios": ratios}])
    verdicts = {t["target"]: t["met"] for t in judged}
    ceilings = {t["target"]: t["ceiling here"] for t in judged if t["ceiling here"] is not None}
    # What batching could give at most here: the offline limit (100/s) over batching off (25/s);
    # against the offline limit, the machine less the load generator's share.
    assert ceilings == pytest.approx({"embedding (mixed lengths): server / batching off": 4.0,
                                      "embedding (mixed lengths): server / offline limit": 0.92})
    assert verdicts == {
        "embedding (mixed lengths): server / offline limit": True,  # 0.95 >= 0.9
        "embedding (mixed lengths): server / batching off": True,  # 3.8 >= 3
        "embedding (mixed lengths): padding efficiency": True,
        "embedding: lone p50 / its forward pass": True,  # 1.1 <= 1.2
        "embedding (mixed lengths): server / Infinity 0.0.78 (peer)": False,  # behind the peer
    }


def test_no_batching_ceiling_from_an_offline_reference_slower_than_the_server():
    rows = [
        {"system": OFFLINE, "documents/s": 27.0},
        {"system": SERVER, "documents/s": 48.0, "padding efficiency": 0.96, "client CPU share": 0.0},
        {"system": SERVER_OFF, "documents/s": 37.0},
    ]
    res = {"kind": "reranker", "workload": "10-100 documents, first 512 tokens", "rows": rows,
           "ratios": throughput.ratios(rows, "documents")}
    judged = {t["target"]: t for t in targets([res])}
    off = judged["reranker (10-100 documents, first 512 tokens): server / batching off"]
    assert off["measured"] == pytest.approx(48 / 37) and off["ceiling here"] is None


def test_the_lone_request_is_timed_only_by_the_workload_that_has_one():
    sent = []

    async def answer(http, req):
        sent.append(req)
        return httpx.Response(200)

    ep = Endpoint("server", answer, "http://127.0.0.1:9")
    args = argparse.Namespace(max_seconds=60, lone=3)
    requests, lone = [Request({"n": i}) for i in range(4)], Request({"lone": True})
    with_lone = measure(ep, Workload("embedding", "mixed lengths", "texts", requests, lone, 2, None), args)
    assert with_lone["lone p50 ms"] is not None and sent.count(lone) == 3
    sent.clear()
    without = measure(ep, Workload("embedding", "short texts", "texts", requests, None, 2, None), args)
    assert "lone p50 ms" not in without and lone not in sent and len(sent) == 2 + 4  # warm-up, then the run


def test_rounds_take_turns_and_ratios_are_taken_within_each_round(monkeypatch):
    # Each system's speed by round: the machine is fast in round 0 and slow in round 1, so only a
    # ratio within a round compares like with like.
    speed = {SERVER: [120.0, 90.0, 100.0], SERVER_OFF: [100.0, 60.0, 80.0]}
    offline = [60.0, 50.0, 100.0]
    order = []

    def started(name):
        @contextmanager
        def start():
            order.append(name)
            yield Endpoint(name, None, "http://127.0.0.1:9")
        return start

    monkeypatch.setattr(throughput, "systems", lambda wl, model_dir, args: [started(SERVER), started(SERVER_OFF)])
    monkeypatch.setattr(throughput, "measure", lambda ep, wl, args, bare_s: {
        "system": ep.name, "texts/s": speed[ep.name][order.count(ep.name) - 1], "requests/s": 1.0})

    def offline_seconds(model_dir):
        order.append(OFFLINE)
        return 10 / offline[order.count(OFFLINE) - 1]  # 10 texts of 1 unit each

    wl = Workload("embedding", "short texts", "texts", [Request({}, units=1.0)] * 10, None, 2, offline_seconds)
    args = argparse.Namespace(rounds=3, sweep_seconds=0, sweep_fractions=[])
    res = bench_workload(wl, Path("unused"), args)
    assert order == [OFFLINE, SERVER, SERVER_OFF] * 3  # in turn, round by round
    rows = {r["system"]: r for r in res["rows"]}
    assert rows[SERVER]["texts/s"] == 100.0 and rows[SERVER]["rounds"] == "120.0 / 90.0 / 100.0"
    assert list(rows[SERVER])[:3] == ["system", "texts/s", "rounds"]  # the same columns in every table
    assert rows[OFFLINE]["texts/s"] == pytest.approx(60.0)
    # Within each round: 1.2, 1.5, 1.25 against batching off; 2.0, 1.8, 1.0 against offline.
    assert res["ratios"] == pytest.approx({f"server / {SERVER_OFF}": 1.25, f"server / {OFFLINE}": 1.8})
