"""The ``omnistitch`` command line: one entry point, a subcommand per process."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from omnistitch.settings import CollectorSettings, SettingsError, WorkerSettings, load

if TYPE_CHECKING:
    from pipeline.rules import Rules

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


@kafka_cli.command("reset")
def kafka_reset() -> None:
    """Stop the local broker and delete its data (topics, offsets); the jars stay cached."""
    _launcher("reset")


@cli.command()
def worker() -> None:
    """Run a stream-processor worker (agents, state tables and the query API)."""
    from pipeline.worker import run

    run(*_stage_config_or_exit(context_policy=True))


@cli.command()
def ingest() -> None:
    """Run the ingest stage alone (raw events to identity requests), for workers started
    with OMNISTITCH_INGEST_IN_WORKER=false."""
    from pipeline.ingest_process import run

    run(*_stage_config_or_exit(context_policy=False))


def _stage_config_or_exit(*, context_policy: bool) -> tuple[WorkerSettings, Rules]:
    """The settings and identity rules a stage process starts from, and the context policy
    checked where the process folds contexts; a bad file exits with status 2, named."""
    from pipeline.context_policy import ContextPolicyError, load_context_policy
    from pipeline.rules import RulesError, load_rules

    settings = _load_or_exit(WorkerSettings)
    try:
        rules = load_rules(settings.rules_file)
        if context_policy:
            load_context_policy(settings.context_file)
    except (RulesError, ContextPolicyError) as exc:
        typer.echo(f"omnistitch: {exc}", err=True)
        raise typer.Exit(2) from None
    return settings, rules


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


connector_cli = typer.Typer(help="Channel connectors, each its own process (connectors/README.md).")
cli.add_typer(connector_cli, name="connector")


@connector_cli.command("list")
def connector_list() -> None:
    """List the installed connectors (entry points in group omnistitch.connectors)."""
    from connectors.base import available

    for name, entry in sorted(available().items()):
        summary = getattr(entry.load(), "summary", "")
        typer.echo(f"{name}\t{entry.value}\t{summary}")


@connector_cli.command("run")
def connector_run(
    name: Annotated[str, typer.Argument(help="A connector name, see: omnistitch connector list.")],
    env_file: Annotated[
        Path | None, typer.Option(help="Read settings from this file instead of .env.")
    ] = None,
) -> None:
    """Run one connector until SIGINT/SIGTERM; exit 2 on a bad or missing setting."""
    from connectors.base import UnknownConnector
    from connectors.runner import prepare, run

    try:
        prepared = prepare(name, env_file)
    except (SettingsError, UnknownConnector) as exc:
        typer.echo(f"omnistitch: {exc}", err=True)
        raise typer.Exit(2) from None
    run(prepared)


@cli.command()
def quality(
    customers: Annotated[int, typer.Option(help="People to generate.")] = 20_000,
    events: Annotated[int, typer.Option(help="Events to generate.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same dataset.")] = 7,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON to this file.")
    ] = None,
    rules_path: Annotated[
        Path | None, typer.Option("--rules", help="A rules TOML file (default: built-in rules).")
    ] = None,
) -> None:
    """Score the identity rules on generated, labelled journeys: rails on versus off."""
    from omnistitch.quality import benchmark
    from pipeline.rules import RulesError, load_rules

    try:
        report = benchmark(customers, events, seed, load_rules(rules_path))
    except (RulesError, ValueError) as exc:
        typer.echo(f"omnistitch: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.table())
    if json_path is not None:
        json_path.write_text(report.to_json() + "\n")
        typer.echo(f"wrote {json_path}")


@cli.command("lag-exporter")
def lag_exporter() -> None:
    """Serve consumer lag read from the broker: /metrics, /healthz, /readyz (deploy/README.md)."""
    from omnistitch.lag_exporter import run
    from omnistitch.settings import LagExporterSettings

    try:
        settings = load(LagExporterSettings)
    except SettingsError as exc:
        typer.echo(f"omnistitch: {exc}", err=True)
        raise typer.Exit(2) from None
    run(settings)


@cli.command("routing-consumer")
def routing_consumer() -> None:
    """Publish routing hints (routing.hints) from customer.context: the example consumer."""
    from omnistitch.routing_consumer import run
    from omnistitch.settings import RoutingConsumerSettings

    try:
        settings = load(RoutingConsumerSettings)
    except SettingsError as exc:
        typer.echo(f"omnistitch: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run(settings))


dlq_cli = typer.Typer(help="The dead-letter topic raw.events.dlq (deploy/RUNBOOK.md).")
cli.add_typer(dlq_cli, name="dlq")


@dlq_cli.command("replay")
def dlq_replay(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, publish nothing.")] = False,
    reason: Annotated[
        list[str] | None, typer.Option("--reason", help="Only this reason (repeatable).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most N records.")] = None,
) -> None:
    """Republish dead letters' original records to raw.events; one JSON line per record."""
    from omnistitch.dlq_replay import ReplayError, replay
    from omnistitch.settings import KafkaSettings

    try:
        settings = load(KafkaSettings)
        replay(settings, reasons=reason or (), limit=limit, dry_run=dry_run, emit=typer.echo)
    except (SettingsError, ReplayError) as exc:
        typer.echo(f"omnistitch: {exc}", err=True)
        raise typer.Exit(2 if isinstance(exc, SettingsError) else 1) from None


@cli.command()
def bench(
    events: Annotated[int, typer.Option(help="Events to generate.")] = 50_000,
    customers: Annotated[int, typer.Option(help="People to generate.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 7,
    latency_rate: Annotated[int, typer.Option(help="Offered load for latency, ev/s.")] = 2_000,
    latency_seconds: Annotated[
        float, typer.Option(help="Latency phase length, after the warm-up.")
    ] = 20.0,
    latency_warmup: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds the latency load is offered before the measured window (the "
            "worker was just restarted); their latency is reported apart.",
        ),
    ] = 3.0,
    java_baseline: Annotated[bool, typer.Option(help="Run Kafka's perf tools too.")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    profile: Annotated[
        Path | None,
        typer.Option(
            help="Record the worker with py-spy while it drains "
            "(.svg: a flame graph; otherwise collapsed stacks)."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Also drain the same events with N workers and report the scaling ratio.",
        ),
    ] = 1,
    scaling_rounds: Annotated[
        int,
        typer.Option(
            min=1,
            help="Rounds of the --workers drains (each: 1 worker, then N with standby "
            "replicas and without, one after another); the scaling ratios are their medians.",
        ),
    ] = 1,
    growth: Annotated[
        str | None,
        typer.Option(
            help="Customer counts, comma separated (10000,100000): one 1-worker drain each, "
            "of --events-per-customer events per customer."
        ),
    ] = None,
    events_per_customer: Annotated[
        int, typer.Option(min=1, help="Events per customer of the --growth runs.")
    ] = 2,
    ingest_process: Annotated[
        bool,
        typer.Option(
            help="Run ingest as a process beside each worker (omnistitch ingest) instead of "
            "a worker thread; CPU per event counts both processes."
        ),
    ] = False,
    keep_scratch: Annotated[
        bool,
        typer.Option(
            help="Keep each run's topics (<prefix>.*, <prefix>-app-*) and state directories "
            "for inspection; by default they are deleted when the run ends."
        ),
    ] = False,
    chat_history: Annotated[
        int,
        typer.Option(
            min=0,
            help="Also drain N customers with long chat histories (--chat-messages each), "
            "with the defaults and with the context cache bounded by count only.",
        ),
    ] = 0,
    chat_messages: Annotated[
        int, typer.Option(min=1, help="Messages per customer of the --chat-history runs.")
    ] = 120,
    chat_visits: Annotated[
        int,
        typer.Option(
            min=1,
            help="Visits each --chat-history customer's messages come in, round-robin over "
            "the customers: with more customers than the context cache holds, each visit "
            "after the first reads the context back (a cache miss).",
        ),
    ] = 1,
) -> None:
    """Benchmark one worker against Kafka's and a Python passthrough's ceilings, same run."""
    from omnistitch.bench import BenchConfig, parse_growth, run_bench, to_json

    try:
        sizes = parse_growth(growth) if growth is not None else []
    except ValueError as exc:
        typer.echo(f"omnistitch: {exc}", err=True)
        raise typer.Exit(2) from None
    if scaling_rounds > 1 and workers < 2:
        typer.echo(
            "omnistitch: --scaling-rounds repeats the --workers drains: give --workers 2 or more",
            err=True,
        )
        raise typer.Exit(2)
    cfg = BenchConfig(
        events=events,
        customers=customers,
        seed=seed,
        latency_rate=latency_rate,
        latency_seconds=latency_seconds,
        latency_warmup_s=latency_warmup,
        java_baseline=java_baseline,
        profile=profile,
        bootstrap=os.environ.get("OMNISTITCH_BOOTSTRAP_SERVERS", ""),
        workers=workers,
        scaling_rounds=scaling_rounds,
        growth=sizes,
        events_per_customer=events_per_customer,
        ingest_process=ingest_process,
        keep_scratch=keep_scratch,
        chat_history=chat_history,
        chat_messages=chat_messages,
        chat_visits=chat_visits,
    )
    report = run_bench(cfg)
    typer.echo(report.table())
    if json_out is not None:
        json_out.write_text(to_json(report))
        typer.echo(f"wrote {json_out}")


def main() -> None:
    cli()
