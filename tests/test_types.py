"""The type checker over server/ (its settings: pyproject.toml's [tool.mypy]): the seams between the
parts are typed, and a change that breaks a type fails the suite like any other test."""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[1]


def test_the_server_type_checks():
    out, err, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir",
                                str(ROOT / ".mypy_cache"), str(ROOT / "server")])
    assert status == 0, out + err
