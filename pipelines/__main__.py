"""The CLI: `python -m pipelines <command>`; every DVC stage's cmd is one of these."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from pipelines.config import ConfigError, Settings, json_schema, load_settings


def _config(settings: Settings, args: argparse.Namespace) -> int:
    if args.schema:
        print(json.dumps(json_schema(), indent=2))
    else:
        print(json.dumps(settings.model_dump(mode="json", by_alias=True), indent=2))
    return 0


def _stage(name: str) -> Callable[[Settings, argparse.Namespace], int]:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        import importlib

        module = importlib.import_module(f"pipelines.stages.{name}")
        result = module.main(settings) if hasattr(module, "main") else module.run(settings)
        return result if isinstance(result, int) else 0

    return run


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines import simulate

    return simulate.main(args.rest, settings) or 0


COMMANDS: dict[str, tuple[str, Callable[[Settings, argparse.Namespace], int]]] = {
    "config": ("print the settings (or --schema: their JSON schema)", _config),
    "simulate": ("write the synthetic source (see `simulate --help`)", _simulate),
    "ingest": ("read the source window into the raw snapshot", _stage("ingest")),
    "validate": ("the blocking data-quality gate (Great Expectations)", _stage("validate")),
    "featurize": ("point-in-time features and the time split", _stage("featurize")),
    "train": ("fit the model and its baseline", _stage("train")),
    "evaluate": ("metrics, slices and plots on the test period", _stage("evaluate")),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    p.add_argument("--params", help="params file (default: $PIPELINES_PARAMS or params.yaml)")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    for name, (help_, _) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, add_help=name != "simulate")
        if name == "config":
            sp.add_argument("--schema", action="store_true", help="print the JSON schema of params.yaml")
        if name == "simulate":
            sp.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "config" and args.schema:
            return _config(None, args)  # type: ignore[arg-type]
        settings = load_settings(args.params)
        return COMMANDS[args.command][1](settings, args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError, TypeError) as err:
        print(f"{args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
