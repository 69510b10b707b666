"""Settings and the command line: flags, env vars, defaults, validation, and two real process starts."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server import cli
from server.cli import _settings, build_parser, main
from server.config import ENV_PREFIX, Settings
from server.families import make_settings, settings_class

ROOT = Path(__file__).resolve().parents[1]
FULL_FLAGS = [
    "serve", "--host", "0.0.0.0", "--port", "9000", "--device", "cpu", "--dtype", "bfloat16",
    "--embedding-model", "/x", "--reranker-model", "none", "--asr-model", "none",
    "--api-key", "a", "--api-key", "b", "--offline",
    "--max-batch-tokens", "20000", "--max-batch-size", "8", "--max-queue", "100", "--batch-lookahead", "16",
    # max_queue 100 is below the default max_inputs_per_request (2048), which the settings
    # rightly refuse; lower it too so the combination is valid.
    "--max-inputs-per-request", "50",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No INFERENCE_* variable from the surrounding shell may leak into these tests."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)


def settings_from(argv: list[str]) -> Settings:
    return _settings(build_parser().parse_args(argv))


def serve_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"]


# --- flags, env vars, defaults ---------------------------------------------------------------------------


def test_every_flag_maps_onto_its_setting():
    s = settings_from(FULL_FLAGS)
    assert s.host == "0.0.0.0"
    assert s.port == 9000
    assert s.device == "cpu"
    assert s.dtype == "bfloat16"
    assert s.embedding_model == "/x"
    assert s.reranker_model == "none"
    assert s.asr_model == "none"
    assert s.api_keys == ["a", "b"]
    assert s.offline is True
    assert s.max_batch_tokens == 20000
    assert s.max_batch_size == 8
    assert s.max_queue == 100
    assert s.batch_lookahead == 16
    assert s.max_inputs_per_request == 50
    # Not given: defaults.
    defaults = make_settings()
    for name in ("cpu_threads", "models_dir", "demo", "request_timeout", "shutdown_timeout",
                 "embedding_max_tokens", "max_body_bytes", "log_level"):
        assert getattr(s, name) == getattr(defaults, name), name


def test_no_flags_gives_the_documented_defaults():
    s = settings_from(["serve"])
    assert s.host == "127.0.0.1"
    assert s.port == 8000
    assert s.device == "auto"
    assert s.dtype == "auto"
    assert s.embedding_model == "BAAI/bge-m3"
    assert s.models_dir == Path("models")
    assert s.offline is False
    assert s.api_keys == []
    assert s.max_batch_tokens == 0  # by device
    assert (s.batch_tokens("cpu"), s.batch_tokens("cuda")) == (1024, 16384)


def test_typed_flags_are_converted():
    s = settings_from(["serve", "--models-dir", "/srv/models", "--request-timeout", "2.5", "--cpu-threads", "3",
                       "--log-level", "debug"])
    assert s.models_dir == Path("/srv/models")
    assert s.request_timeout == 2.5
    assert s.cpu_threads == 3
    assert s.log_level == "debug"


def test_omitted_flag_falls_back_to_env_then_default(monkeypatch):
    monkeypatch.setenv("INFERENCE_PORT", "9123")
    monkeypatch.setenv("INFERENCE_API_KEYS", "k1, k2")
    monkeypatch.setenv("INFERENCE_OFFLINE", "true")
    s = settings_from(["serve"])
    assert s.port == 9123
    assert s.api_keys == ["k1", "k2"]
    assert s.offline is True
    assert s.host == "127.0.0.1"  # neither flag nor env: the default
    assert s.max_queue == 4096


@pytest.mark.parametrize(("env", "flags", "source"), [
    ("", [], "INFERENCE_API_KEYS"),  # an empty Secret: was an open server with a warning
    (",", [], "INFERENCE_API_KEYS"),
    ("k1,,k2", [], "INFERENCE_API_KEYS"),
    (None, ["--api-key", ""], "--api-key"),  # was a server that refused every request
    (None, ["--api-key", "k1", "--api-key", " "], "--api-key"),
])
def test_an_empty_key_from_any_source_refuses_to_start_and_names_the_source(env, flags, source, monkeypatch,
                                                                             capsys, no_serving):
    if env is not None:
        monkeypatch.setenv("INFERENCE_API_KEYS", env)
    assert main(["serve", *flags]) == 2
    err = capsys.readouterr().err
    assert source in err and "empty key" in err
    assert not no_serving


def test_keys_from_the_env_are_trimmed(monkeypatch):
    monkeypatch.setenv("INFERENCE_API_KEYS", " k1 , k2")
    assert settings_from(["serve"]).api_keys == ["k1", "k2"]


CANARY = "sk-canary-3f9a7c"


@pytest.mark.parametrize("from_env", [True, False])
@pytest.mark.parametrize("bad", [["--max-queue", "10"],  # refused by the model check, which saw every value
                                 ["--port", "eighty"], ["--cors-allow-origins", "*", "--max-batch-size", "0"]])
def test_a_settings_error_never_prints_a_key(from_env, bad, monkeypatch, capsys, no_serving):
    flags = list(bad)
    if from_env:
        monkeypatch.setenv("INFERENCE_API_KEYS", f"{CANARY},{CANARY}-2")
    else:
        flags += ["--api-key", CANARY]
    assert main(["serve", *flags]) == 2
    out = capsys.readouterr()
    assert CANARY not in out.err + out.out
    assert "input_value" not in out.err and "errors.pydantic.dev" not in out.err  # no raw pydantic text


def test_a_device_or_dtype_this_machine_cannot_serve_fails_before_anything_is_built(monkeypatch):
    import server.app
    from server.errors import StartupError

    built: list = []
    monkeypatch.setattr(server.app, "create_app", lambda *a, **k: built.append(a))
    for flags, said in ((["--device", "tpu"], "--device"), (["--device", "cpu", "--dtype", "float16"], "--dtype"),
                        (["--device", "cuda:7"], "--device")):
        with pytest.raises(StartupError, match=said):
            cli.serve(settings_from(["serve", "--demo", *flags]))
    assert not built


def test_flag_beats_env(monkeypatch):
    monkeypatch.setenv("INFERENCE_PORT", "9123")
    monkeypatch.setenv("INFERENCE_API_KEYS", "k1,k2")
    monkeypatch.setenv("INFERENCE_OFFLINE", "1")
    s = settings_from(["serve", "--port", "9200", "--api-key", "flag-key", "--no-offline"])
    assert s.port == 9200
    assert s.api_keys == ["flag-key"]
    assert s.offline is False


# --- invalid settings -------------------------------------------------------------------------------------


def test_a_set_batch_budget_wins_over_the_device_default_even_below_the_longest_input():
    # One item costlier than the budget runs alone (test_batching), so any positive budget is valid.
    s = settings_from(["serve", "--max-batch-tokens", "500", "--embedding-max-tokens", "2000"])
    assert (s.batch_tokens("cpu"), s.batch_tokens("cuda")) == (500, 500)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        settings_from(["serve", "--max-batch-tokens", "-1"])


def test_request_larger_than_queue_is_rejected():
    with pytest.raises(ValueError, match="--max-inputs-per-request must be at most --max-queue"):
        settings_from(["serve", "--max-queue", "10", "--max-inputs-per-request", "11"])
    assert settings_from(["serve", "--max-queue", "10", "--max-inputs-per-request", "10"]).max_queue == 10


@pytest.mark.parametrize("flags", [["--dtype", "float64"], ["--log-level", "loud"], ["--bogus-flag", "1"]])
def test_bad_choice_or_unknown_flag_is_an_argparse_error(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["serve", *flags])
    assert exit_info.value.code == 2
    assert flags[0] in capsys.readouterr().err


@pytest.fixture
def no_serving(monkeypatch) -> list:
    """main() must never reach serve() in the invalid-settings tests; if it does, record it."""
    calls: list = []

    def fake_serve(settings):
        calls.append(settings)
        return 0

    monkeypatch.setattr(cli, "serve", fake_serve)
    return calls


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--max-batch-tokens", "-5"], "--max-batch-tokens (INFERENCE_MAX_BATCH_TOKENS)"),
        (["--port", "70000"], "--port (INFERENCE_PORT)"),
        (["--port", "eighty"], "--port (INFERENCE_PORT)"),
        (["--max-batch-size", "0"], "--max-batch-size (INFERENCE_MAX_BATCH_SIZE)"),
    ],
)
def test_main_returns_2_with_a_readable_message_on_invalid_settings(flags, field, capsys, no_serving):
    assert main(["serve", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("inference-server: invalid settings:")
    assert field in err
    assert "Traceback" not in err
    assert not no_serving


def test_main_reaches_serve_with_valid_settings(no_serving):
    # The counterpart of the test above: valid settings do get served (the fake returns 0).
    assert main(["serve", "--port", "9001", "--asr-model", "none"]) == 0
    assert [s.port for s in no_serving] == [9001]
    assert no_serving[0].asr_model == "none"


# --- every setting is documented and reachable ---------------------------------------------------------


def test_every_setting_has_a_description_and_a_flag():
    actions = {a.dest: a for a in serve_parser()._actions if a.dest != "help"}
    for name, field in settings_class().model_fields.items():
        assert field.description and field.description.strip(), f"Settings.{name} has no description"
        assert name in actions, f"Settings.{name} has no CLI flag"
        action = actions[name]
        assert action.option_strings, f"Settings.{name} is not an option"
        assert field.description in action.help, f"--help for {name} does not show its description"
        assert f"{ENV_PREFIX}{name.upper()}" in action.help, f"--help for {name} does not name its env var"
    # And no flag of `serve` that is not a setting.
    assert set(actions) == set(settings_class().model_fields)



def _readme_settings_rows() -> dict[str, list[str]]:
    """The README's configuration tables: {flag: its cells}."""
    section = (ROOT / "README.md").read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `--")]
    return {cells[0].removeprefix("| ").strip("`").split()[0]: cells for cells in rows}


def test_the_readme_tables_every_setting_with_its_flag_env_and_default():
    """The table is checked against the declarations (the server's and each family's), so a setting
    added, renamed or given a new default anywhere fails here until the README says so."""
    rows = _readme_settings_rows()
    settings_cls = settings_class()
    formers = settings_cls.former_names()
    flags = {cli._flag(name): name for name in settings_cls.model_fields}
    assert set(rows) == set(flags), "README rows without a setting, or settings without a row"
    for flag, name in flags.items():
        _, env, default, meaning = rows[flag][:4]
        assert env == f"`{ENV_PREFIX}{name.upper()}`", flag
        value = settings_cls.model_fields[name].get_default(call_default_factory=True)
        if isinstance(value, bool):
            assert default == ("on" if value else "off"), flag
        elif isinstance(value, (int, float, str, Path)) and not isinstance(value, bool):
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            assert default == f"`{shown}`", (flag, default, shown)
        if name in formers:  # the names deployments already use are still documented
            assert f"`{cli._flag(formers[name])}`" in meaning and f"`{ENV_PREFIX}{formers[name].upper()}`" in meaning


def test_a_setting_s_former_name_still_works_as_flag_and_env_var(monkeypatch):
    """The reranker's limits took its family's prefix (reranker_): deployments that set the old
    names keep working, and the new name wins where both are given."""
    assert settings_from(["serve", "--rerank-max-documents", "7"]).reranker_max_documents == 7
    monkeypatch.setenv("INFERENCE_RERANK_MAX_TOKENS", "300")
    assert settings_from(["serve"]).reranker_max_tokens == 300
    assert settings_from(["serve", "--rerank-max-tokens", "400"]).reranker_max_tokens == 400  # a flag beats env
    monkeypatch.setenv("INFERENCE_RERANKER_MAX_TOKENS", "500")
    assert settings_from(["serve"]).reranker_max_tokens == 500
    assert make_settings(rerank_max_documents=9).reranker_max_documents == 9
    # A bad value under the former name is refused in the setting's own words.
    assert main(["serve", "--rerank-max-documents", "0"]) == 2

def test_help_says_what_the_program_does_in_whole_sentences():
    parser = build_parser()
    for text in (parser.description, parser.epilog):
        assert text.rstrip().endswith("."), text
    assert "inference-server download" in parser.epilog and "--demo" in parser.epilog


def test_metavars_name_the_unit_the_value_is_in():
    actions = {a.dest: a for a in serve_parser()._actions if a.dest != "help"}
    assert actions["batch_min_padding_efficiency"].metavar == "RATIO"
    for name, action in actions.items():
        if action.metavar == "SECONDS":
            assert name.endswith(("_seconds", "_timeout")), name
    assert actions["max_body_bytes"].metavar == actions["asr_max_upload_bytes"].metavar == "BYTES"


def test_download_help_names_the_models_dir_variable():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    help_text = sub.choices["download"].format_help()
    assert f"{ENV_PREFIX}MODELS_DIR" in help_text
    assert f"default: {settings_class().model_fields['models_dir'].default}" in help_text


# --- real process starts --------------------------------------------------------------------------------


def _run_serve(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    hf_home = tmp_path / "hf-home"
    hf_home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(HF_HOME=str(hf_home), HF_HUB_CACHE=str(hf_home / "hub"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    # Port 0: the OS picks a free port (uvicorn binds whatever it is given), so nothing collides.
    cmd = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", "0",
           "--reranker-model", "none", "--asr-model", "none", "--device", "cpu", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_process_offline_without_model_exits_and_says_where_to_put_it(tmp_path):
    models_dir = tmp_path / "empty-models"
    models_dir.mkdir()
    proc = _run_serve(["--offline", "--embedding-model", "BAAI/bge-m3", "--models-dir", str(models_dir)], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert str(models_dir / "bge-m3") in proc.stderr
    assert "inference-server download embedding" in proc.stderr
    assert "Traceback" not in proc.stderr
    # The report printed by main() comes last, before uvicorn ever starts.
    report = proc.stderr[proc.stderr.rindex("inference-server: "):]
    assert report.startswith("inference-server: cannot start: 1 model is not on this machine"), report
    assert "BAAI/bge-m3" in report and "Uvicorn running" not in proc.stderr


def test_process_with_incomplete_model_dir_names_the_missing_file(bge_m3_dir, tmp_path):
    broken = tmp_path / "bge-m3-broken"
    shutil.copytree(bge_m3_dir, broken)
    (broken / "sparse_linear.pt").unlink()
    proc = _run_serve(["--embedding-model", str(broken)], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "missing sparse_linear.pt" in proc.stderr
    assert str(broken) in proc.stderr
    assert "Traceback" not in proc.stderr

