"""The ``omnistitch`` command line: one entry point, a subcommand per process."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from omnistitch.settings import CollectorSettings, SettingsError, WorkerSettings, load

REPO = Path(__file__).resolve().parents[1]
KAFKA_LAUNCHER = REPO / "deploy" / "local" / "kafka.sh"

cli = typer.Typer(
    help="omnistitch: real-time identity stitching for omnichannel customer service.",
    no_args_is_help=True,
    add_completion=False,
)
kafka_cli = typer.Typer(help="The local single-node Kafka broker (deploy/local/kafka.sh).")
schemas_cli = typer.Typer(help="JSON Schemas of the wire contracts (schemas/json/).")
rules_cli = typer.Typer(help="Identity rules (OMNISTITCH_RULES_FILE).")
cli.add_typer(kafka_cli, name="kafka")
cli.add_typer(schemas_cli, name="schemas")
cli.add_typer(rules_cli, name="rules")


_S = TypeVar("_S", WorkerSettings, CollectorSettings)


def _load_or_exit(cls: type[_S]) -> _S:
    try:
        return load(cls)
    except SettingsError as exc:
        typer.echo(f"omnistitch: {exc}", err=True)
        raise typer.Exit(2) from None


def _launcher(action: str) -> None:
    proc = subprocess.run([str(KAFKA_LAUNCHER), action], check=False)
    raise typer.Exit(proc.returncode)


@kafka_cli.command("start")
def kafka_start() -> None:
    """Fetch the jars if needed, start the broker, wait until it answers; print the bootstrap."""
    _launcher("start")


@kafka_cli.command("stop")
def kafka_stop() -> None:
    """Stop the local broker."""
    _launcher("stop")


@kafka_cli.command("status")
def kafka_status() -> None:
    """Say whether the local broker runs; print the bootstrap address (exit 3 if stopped)."""
    _launcher("status")


@cli.command()
def worker() -> None:
    """Run a stream-processor worker (agents, state tables and the query API)."""
    from pipeline.rules import RulesError, load_rules
    from pipeline.worker import run

    settings = _load_or_exit(WorkerSettings)
    try:
        rules = load_rules(settings.rules_file)
    except RulesError as exc:
        typer.echo(f"omnistitch: {exc}", err=True)
        raise typer.Exit(2) from None
    run(settings, rules)


@cli.command()
def collector() -> None:
    """Run the Segment-compatible tracking collector."""
    from connectors.tracking.app import run

    settings = _load_or_exit(CollectorSettings)
    logging.basicConfig(level=settings.log_level)
    run(settings)


@schemas_cli.command("export")
def schemas_export(
    check: bool = typer.Option(False, "--check", help="Fail if the files differ; write nothing."),
) -> None:
    """Write the JSON Schemas of the wire models to schemas/json/."""
    from schemas.export import export

    stale = export(check=check)
    if check and stale:
        typer.echo("out of date: " + ", ".join(stale) + " (run: omnistitch schemas export)")
        raise typer.Exit(1)
    for name in stale:
        typer.echo(f"wrote schemas/json/{name}")


@rules_cli.command("check")
def rules_check(path: Annotated[Path, typer.Argument(help="A rules TOML file.")]) -> None:
    """Validate a rules file the way the worker does at start-up; print the resolved rules."""
    from pipeline.rules import RulesError, load_rules

    try:
        rules = load_rules(path)
    except RulesError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(rules.model_dump_json(indent=2))


@cli.command()
def demo(
    keep_running: bool = typer.Option(True, help="Keep the stack up until Ctrl-C."),
) -> None:
    """Start broker, worker and collector; replay a sample journey; print the customer."""
    from omnistitch.demo import run_demo

    raise typer.Exit(run_demo(keep_running=keep_running))


def main() -> None:
    cli()
