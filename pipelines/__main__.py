"""The CLI: `python -m pipelines <command>`; every DVC stage's cmd is one of these."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from pipelines.config import ConfigError, Settings, json_schema
from pipelines.io.storage import StorageError
from pipelines.runtime import bootstrap, tool


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


def _promote(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.io import registry
    from pipelines.jobs import gate

    versions = registry.versions() if args.tag == "latest" else [args.tag]
    tag = versions[-1] if versions else None
    if not tag:
        raise LookupError("the model store has no versions yet: run the package stage")
    record = gate.promote(settings, tag, args.reason)
    print(
        f"promote: {record['tag']} is the champion (was {record['previous']}); published to "
        f"{model_remote_url(settings)}"
    )
    return 0


def model_remote_url(settings: Settings) -> str:
    """The model store's remote this process uses ($MODEL_REMOTE, else paths.model_remote)."""
    from pipelines.io import model_remote

    return model_remote.url_of(None, settings.paths.model_remote)


def _models(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.io import registry

    champ = registry.champion_tag()
    for tag in registry.versions():
        meta = registry.info(tag)
        auc = meta["metadata"].get("metrics", {}).get("roc_auc")
        mark = "*" if tag == champ else " "
        print(
            f"{mark} {tag}  {meta['labels'].get('family', '?'):9s} roc_auc={auc if auc is None else round(auc, 4)}  {meta['created']}"
        )
    return 0


def _registry(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.io import model_remote, registry

    if args.direction == "migrate":
        converted = registry.migrate()
        for old, new in converted.items():
            print(f"registry migrate: {old} → {new}")
        print(
            f"registry migrate: {len(converted)} pickled version(s) converted; champion {registry.champion_tag()}"
        )
        return 0
    url = model_remote.url_of(args.remote, settings.paths.model_remote)
    synced = model_remote.push(url) if args.direction == "push" else model_remote.pull(url)
    print(synced.summary(args.direction, url))
    return 0


def _gate(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.jobs import gate

    print(gate.gate_packaged(settings, args.challenger)["message"])
    return 0


def _bento(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.core.layout import Layout
    from pipelines.jobs import bento

    built = bento.build_champion_bento(settings)
    print(
        f"bento: {built['bento_tag']} carries the champion {built['model_tag']} → {Layout(settings).release}"
    )
    return 0


def _materialize(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.jobs import materialize

    return materialize.run(settings, force=args.force)


def _drift_check(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.jobs import drift_check

    summary = drift_check.run(settings)
    print(f"drift-check: {summary['message']} (report: {summary['report']})")
    return 0


def _predict(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.jobs import predict

    summary = predict.run(settings, args.source, args.target, args.model)
    print(
        f"predict: {summary['rows']:,} rows of {summary['source']} scored by "
        f"{summary['model_version']} → {summary['target']} (decisions: {summary['decisions']})"
    )
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.jobs import demo

    demo.main(settings)
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    s = settings.serving
    cmd = [
        tool("bentoml"),
        "serve",
        args.target,
        "--host",
        s.host,
        "--port",
        str(args.port or s.port),
    ]
    print("serve:", " ".join(cmd), flush=True)
    os.execvp(cmd[0], cmd)


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.sources import simulator

    return simulator.main(args.rest, settings)  # its own parser owns its flags


def _survey(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.sources import survey

    return survey.main(args.rest)  # its own parser owns its flags


def _monitoring(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipelines.jobs import monitoring

    for path in monitoring.write(settings, Path(args.out)):
        print(f"monitoring: {path}")
    return 0


OWN_FLAGS = ("simulate", "survey")  # commands whose own parser reads the rest of the line
COMMANDS: dict[str, tuple[str, Callable[[Settings, argparse.Namespace], int]]] = {
    "config": ("print the settings (or --schema: their JSON schema)", _config),
    "simulate": ("write the synthetic source (see `simulate --help`)", _simulate),
    "survey": (
        "write a yearly survey table, a source unlike the cards (see `survey --help`)",
        _survey,
    ),
    "ingest": ("read the source window into the raw snapshot", _stage("ingest")),
    "validate": ("the blocking data-quality gate (Great Expectations)", _stage("validate")),
    "featurize": ("point-in-time features and the time split", _stage("featurize")),
    "tune": ("Optuna search of each candidate's parameters (tune.trials)", _stage("tune")),
    "train": ("fit, score and choose among the candidate families", _stage("train")),
    "evaluate": ("metrics, slices and plots on the test period", _stage("evaluate")),
    "package": ("save the model with lineage and build the bento", _stage("package")),
    "promote": ("make a model version the champion (atomic)", _promote),
    "models": ("list model versions; * marks the champion", _models),
    "gate": ("champion/challenger gate on the packaged model; promotes only a winner", _gate),
    "bento": ("build the bento a deploy ships: it carries the champion", _bento),
    "registry": (
        "push/pull model versions, bentos and the champion to/from paths.model_remote; migrate",
        _registry,
    ),
    "materialize": ("seed the online feature store from the raw snapshot", _materialize),
    "drift-check": (
        "one drift check now, without Prefect (the flow runs it on a schedule)",
        _drift_check,
    ),
    "predict": (
        "batch scoring: a table at a URL scored by the champion, written to a URL",
        _predict,
    ),
    "serve": ("start the BentoML service on params' host:port", _serve),
    "monitoring": (
        "write monitoring/ (alert rules, Prometheus config, dashboard) for params' project",
        _monitoring,
    ),
    "demo": (
        "the main job: the whole loop, from nothing, on a copy of this project (make demo)",
        _demo,
    ),
}


def parser() -> argparse.ArgumentParser:
    """The CLI's argument parser: one subcommand per entry of COMMANDS."""
    p = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    p.add_argument("--params", help="params file (default: $PIPELINES_PARAMS or params.yaml)")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    for name, (help_, _) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, add_help=name not in OWN_FLAGS)
        if name == "config":
            sp.add_argument(
                "--schema", action="store_true", help="print the JSON schema of params.yaml"
            )
        if name == "promote":
            sp.add_argument("tag", help="model tag, or 'latest'")
            sp.add_argument(
                "--reason", default="manual promotion", help="recorded in the registry history"
            )
        if name == "gate":
            sp.add_argument(
                "--challenger", help="model tag (default: the package stage's last model)"
            )
        if name == "registry":
            sp.add_argument(
                "direction",
                choices=["push", "pull", "migrate"],
                help="migrate: convert versions pickled before portable archives, once",
            )
            sp.add_argument(
                "--remote", help="URL (default: $MODEL_REMOTE, else paths.model_remote)"
            )
        if name == "materialize":
            sp.add_argument(
                "--force", action="store_true", help="replace a store that already has events"
            )
        if name == "monitoring":
            sp.add_argument(
                "--out", default=".monitoring/config", help="directory (default: %(default)s)"
            )
        if name == "predict":
            sp.add_argument("source", help="the table to score: Parquet, or CSV by .csv; a URL")
            sp.add_argument("target", help="where the scores go: Parquet, or CSV by .csv; a URL")
            sp.add_argument("--model", help="a model version tag (default: the champion)")
        if name == "serve":
            sp.add_argument("--port", type=int, help="override serving.port")
            sp.add_argument(
                "--target",
                default="pipelines.serving.service:FraudService",
                help="service import path or a built bento tag",
            )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (2: a config error, 1: any other named error)."""
    p = parser()
    args, rest = p.parse_known_args(argv)
    if rest and args.command not in OWN_FLAGS:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        if args.command == "config" and args.schema:
            return _config(None, args)  # type: ignore[arg-type]
        settings = bootstrap(args.params)
        return COMMANDS[args.command][1](settings, args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except (
        FileNotFoundError,
        StorageError,
        LookupError,
        ValueError,
        RuntimeError,
        TypeError,
    ) as err:
        print(f"{args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
