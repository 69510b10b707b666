"""`inference-server serve|download`. Flags are generated from the settings' fields, so each
setting is declared once (the server's in server/config.py, each family's in its folder) and is
both a flag and an env var."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import typing
from pathlib import Path
from typing import Literal

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from server import families
from server.config import ENV_PREFIX, Settings
from server.errors import StartupError

DESCRIPTION = (
    "Serve bge-m3 embeddings, bge-reranker-v2-m3 rerank and SenseVoiceSmall transcription over HTTP, "
    "compatible with the OpenAI and SiliconFlow APIs."
)
EPILOG = (
    "Start with `inference-server serve`; `inference-server serve --help` lists every setting. "
    "No internet on this machine? Run `inference-server download` where there is and copy models/ here, "
    "or try the API with `inference-server serve --demo`."
)
# Flags whose name differs from the field's: --api-key is given once per key.
_FLAG_NAMES = {"api_keys": "--api-key"}
_TYPE_METAVARS = {int: "N", float: "NUMBER", Path: "DIR", str: "VALUE"}
# A field's unit, told by its name, beats its type's metavar.
_UNIT_METAVARS = {"_seconds": "SECONDS", "_timeout": "SECONDS", "_bytes": "BYTES"}


def _metavar(name: str, field: FieldInfo) -> str:
    if field.annotation is float and any(getattr(bound, "le", None) == 1 for bound in field.metadata):
        return "RATIO"  # a share, at most 1
    unit = next((metavar for suffix, metavar in _UNIT_METAVARS.items() if name.endswith(suffix)), None)
    return unit or (_TYPE_METAVARS.get(field.annotation, "VALUE") if isinstance(field.annotation, type) else "VALUE")


def _help(description: str, name: str, default: object, former: str | None = None) -> str:
    env = f"{ENV_PREFIX}{name.upper()}" + (f" or, as before, {ENV_PREFIX}{former.upper()}" if former else "")
    return f"{description} [env {env}; default: {default}]"


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    settings_cls = families.settings_class()
    formers = settings_cls.former_names()
    for name, field in settings_cls.model_fields.items():
        flags = [_flag(name)] + ([_flag(formers[name])] if name in formers else [])
        default = field.get_default(call_default_factory=True)
        help_text = _help(field.description or "", name, default, formers.get(name))
        if field.annotation is bool:
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        elif name == "api_keys":
            parser.add_argument(*flags, dest=name, action="append", default=argparse.SUPPRESS,
                                metavar="KEY", help=help_text)
        else:
            choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is Literal else None
            metavar = None if choices else _metavar(name, field)
            parser.add_argument(*flags, dest=name, default=argparse.SUPPRESS, choices=choices, metavar=metavar,
                                help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inference-server", description=DESCRIPTION, epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Serve the models over HTTP.")
    _add_settings_flags(serve)
    download = commands.add_parser("download", help="Fetch the real models into models/ (for air-gapped hosts).")
    # argparse checks a list default against `choices` as one value, so the default is a string.
    download.add_argument("which", nargs="*", choices=[*families.FAMILIES, "all"], default="all",
                          help="Which models (default: all).")
    models_dir = Settings.model_fields["models_dir"]
    download.add_argument("--models-dir", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                          help=_help("Where the models are downloaded to.", "models_dir", models_dir.default))
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings_cls = families.settings_class()
    overrides = {k: v for k, v in vars(args).items() if k in settings_cls.model_fields}
    return settings_cls(**overrides)


def _flag(name: str) -> str:
    return _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def settings_errors(err: ValidationError) -> str:
    """Each problem in the CLI's names (``--port`` / ``INFERENCE_PORT``), without the values given:
    pydantic's own text repeats the input, and with it any API key among the settings."""
    lines, fields = [], families.settings_class().model_fields
    for problem in err.errors(include_url=False, include_input=False, include_context=False):
        message = problem["msg"].removeprefix("Value error, ")
        field = next((str(part) for part in problem["loc"] if str(part) in fields), None)
        where = f"{_flag(field)} ({ENV_PREFIX}{field.upper()}): " if field else ""
        lines.append(f"  {where}{message}")
    return "\n".join(lines)


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(settings: Settings) -> int:
    import uvicorn

    from server.app import create_app
    from server.http_server import DrainingServer, http_config
    from server.compute.device import resolve_device, resolve_dtype
    from server.weights.preflight import check_models

    # Before anything is built or bound: a device or dtype this machine cannot serve fails now.
    resolve_dtype(settings.dtype, resolve_device(settings.device))
    if settings.demo:
        from server.demo import demo_settings

        settings = demo_settings(settings)
    if settings.offline:
        # Belt and braces: the libraries underneath (transformers, huggingface_hub) stay off the network too.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # Before listening: a start that cannot get its models fails now, naming every missing one.
    check_models(settings, {f.spec: f.settings_of(settings).model for f in families.FAMILIES.values()})
    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(reason: str) -> None:
        fatal.append(reason)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    server = DrainingServer(http_config(app, settings), app.state.runtime, settings.shutdown_timeout)
    server.run()
    if fatal:
        print(f"inference-server: {fatal[0]}", file=sys.stderr)
        return 1
    return 0


def download(which: list[str] | str, models_dir: Path) -> int:
    from server.weights import manifest, store
    from server.weights.hub import HubUnreachable

    which = [which] if isinstance(which, str) else which
    kinds = list(families.FAMILIES) if "all" in which else which
    for kind in kinds:
        spec = families.FAMILIES[kind].spec
        try:
            path = store.download(spec, spec.repo_id, models_dir)
        except HubUnreachable as err:
            raise StartupError(
                f"`inference-server download` needs internet: {err} Run it on a machine that can reach the hub, "
                f"then copy the {models_dir}/ directory it fills to this machine (or set HF_ENDPOINT to a "
                "mirror you can reach)."
            ) from err
        print(f"{spec.served_name}: {path}")
        manifest.record(path)  # sizes and SHA-256 of every file, and MANIFEST.sha256 to check the copy
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "download":
            _configure_logging("info")
            models_dir = getattr(args, "models_dir", None) or Settings().models_dir  # flag, env, then default
            return download(args.which, models_dir)
        settings = _settings(args)
        _configure_logging(settings.log_level)
        return serve(settings)
    except ValidationError as err:
        print(f"inference-server: invalid settings:\n{settings_errors(err)}", file=sys.stderr)
        return 2
    except StartupError as err:
        print(f"inference-server: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
