"""scripts/soak.py (its code in scripts/benchlib/soak*.py): the memory verdict's arithmetic, and a
short run against the server subprocess it starts (memory read from that process, which is stopped
at the end)."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import soak
from benchlib.soak import serve_command
from benchlib.soak_load import Stats
from benchlib.soak_memory import window_medians
from benchlib.soak_report import report

from server.cli import build_parser

MB = 2**20


def sawtooth(seconds: int, level_mb: float, slope_mb_per_s: float = 0.0) -> list[tuple[float, int]]:
    """One reading a second of a server trimmed every 10 s: 100 MB up and down around ``level``."""
    return [(float(t), int((level_mb + slope_mb_per_s * t + 10 * (t % 10)) * MB)) for t in range(1, seconds + 1)]


def test_window_medians_read_the_level_not_the_phase_of_the_trim_sawtooth():
    levels = window_medians(sawtooth(120, 900), warmup_s=24, load_s=120, window_s=30)
    assert levels["warm_window_s"] == [24, 54] and levels["end_window_s"] == [90, 120]
    assert abs(levels["end"] - levels["warm"]) <= 10 * MB  # single readings differ by up to 90 MB


def test_windows_shrink_so_that_they_never_overlap_and_fall_back_to_the_nearest_reading():
    levels = window_medians(sawtooth(30, 900), warmup_s=6, load_s=30, window_s=30)
    assert levels["warm_window_s"] == [6, 18] and levels["end_window_s"] == [18, 30]
    sparse = [(5.0, 100 * MB), (60.0, 200 * MB)]
    levels = window_medians(sparse, warmup_s=20, load_s=60, window_s=1)
    assert (levels["warm"], levels["end"]) == (100 * MB, 200 * MB)


def _verdict(samples) -> tuple[dict, list[str]]:
    stats = Stats()
    stats.statuses["embeddings"] = Counter({200: 100})
    stats.latencies["embeddings"] = [0.1] * 100
    memory = {"samples": samples, "start": 700 * MB, "end": 800 * MB, "elapsed_s": 120.0}
    return report(stats, memory, max_growth=0.05, warmup_s=24, load_s=120, window_s=30)


def test_a_flat_sawtooth_passes_and_a_rising_level_fails():
    summary, failures = _verdict(sawtooth(120, 900))
    assert failures == [] and abs(summary["rss_growth_after_warmup"]) < 0.01
    summary, failures = _verdict(sawtooth(120, 900, slope_mb_per_s=1.0))  # +66 MB between the windows
    assert summary["rss_growth_after_warmup"] > 0.05
    assert any("resident memory grew" in f for f in failures)


def test_the_serve_command_is_one_the_cli_accepts():
    models = {"embedding_model": "/m/e", "reranker_model": "/m/r", "asr_model": "/m/a"}
    cmd = serve_command(models, 8123, api_key="sk-test")
    assert cmd[:4] == [sys.executable, "-m", "server.cli", "serve"]
    args = build_parser().parse_args(cmd[3:])
    assert (args.port, args.host, args.device, args.api_keys) == ("8123", "127.0.0.1", "cpu", ["sk-test"])
    assert (args.embedding_model, args.reranker_model, args.asr_model) == ("/m/e", "/m/r", "/m/a")


def test_a_short_soak_measures_the_server_subprocess_and_stops_it(tmp_path, bge_m3_dir, reranker_dir,
                                                                   sensevoice_dir, capsys):
    # The session's tiny models under the names build_models gives them: it finds them built.
    root = tmp_path / "models"
    root.mkdir()
    for name, built in (("bge-m3-tiny", bge_m3_dir), ("reranker-tiny", reranker_dir),
                        ("sensevoice-tiny", sensevoice_dir)):
        (root / name).symlink_to(built, target_is_directory=True)
    out = tmp_path / "soak.json"
    code = soak.main(["--minutes", "0.2", "--concurrency", "2", "--models-dir", str(root), "--warmup", "3",
                      "--window", "3", "--max-growth", "10", "--json", str(out), "--ready-timeout", "180"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    result = json.loads(out.read_text())
    assert "server subprocess" in printed
    assert result["server_pid"] != os.getpid()
    assert result["requests_served"] > 0 and result["errors_by_status"] == {} and not result["transport_errors"]
    assert result["rss_start"] and result["rss_warm"] and result["rss_end"]
    assert not Path(f"/proc/{result['server_pid']}").exists()  # stopped and reaped
