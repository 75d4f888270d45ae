"""``omnistitch lag-exporter``: consumer lag read from the broker, served to Prometheus.

The role kafka-lag-exporter or Burrow play, for omnistitch's groups: it reads committed
and log-end offsets from the broker, so lag stays visible while workers are stuck or
down. ``GET /metrics`` (Prometheus), ``GET /healthz`` (alive), ``GET /readyz`` (the
latest reading of the offsets succeeded recently, i.e. the broker answers).
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from omnistitch.kafka_client import client_config
from omnistitch.lag_monitor import LagMonitor, LagProbe, LagTarget
from omnistitch.logs import logging_config
from omnistitch.settings import LagExporterSettings
from omnistitch.topics import pipeline_groups


def targets(settings: LagExporterSettings) -> list[LagTarget]:
    """The groups to watch, with the topics they read: the workers' groups their inputs,
    others what ``lag_topics`` names for them (none: every topic they committed on)."""
    own = pipeline_groups(settings, settings.app_id)
    return [
        LagTarget(g, tuple(dict.fromkeys([*own.get(g, ()), *settings.lag_topics.get(g, ())])))
        for g in settings.groups
    ]


def registry_for(monitor: LagMonitor) -> CollectorRegistry:
    """The exporter's metrics: the lag readings and the process's own."""
    registry = CollectorRegistry()
    registry.register(monitor.collector())
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def create_app(monitor: LagMonitor) -> FastAPI:
    app = FastAPI(title="omnistitch lag exporter", docs_url=None, redoc_url=None, openapi_url=None)
    registry = registry_for(monitor)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        if monitor.healthy():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unavailable", "reason": "broker"}, status_code=503)

    return app


def run(settings: LagExporterSettings) -> None:
    """Watch the groups and serve the metrics until interrupted."""
    probe = LagProbe(
        client_config(settings),
        timeout_s=max(settings.lag_interval_s, 5.0),
        sample_limit=settings.lag_sample_partitions,
    )
    monitor = LagMonitor(probe, targets(settings), settings.lag_interval_s).start()
    try:
        uvicorn.run(
            create_app(monitor),
            host=settings.lag_exporter_host,
            port=settings.lag_exporter_port,
            log_config=logging_config(settings.log_level),
            log_level=settings.log_level.lower(),
        )
    finally:
        monitor.stop()
