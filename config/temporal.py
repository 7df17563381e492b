"""One way to connect to Temporal: the pydantic data converter everywhere, settings from the environment."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import structlog
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from config.settings import Settings

log = structlog.get_logger(__name__)


async def connect(settings: Settings, *, lazy: bool = False, runtime: Runtime | None = None) -> Client:
    """``runtime`` None is the SDK's default runtime (no metrics endpoint), as before it was a parameter."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        lazy=lazy,
        runtime=runtime,
    )


async def connect_with_retry(
    settings: Settings, *, attempts: int = 30, delay_s: float = 1.0, runtime: Runtime | None = None
) -> Client:
    """Connect, waiting for a Temporal that is still starting (e.g. ``make run`` brings both up together)."""
    for attempt in range(1, attempts + 1):
        try:
            return await connect(settings, runtime=runtime)
        except RuntimeError as exc:  # the SDK reports "Failed client connect" as RuntimeError
            if attempt == attempts:
                raise
            log.warning("temporal_unreachable", address=settings.temporal_address, attempt=attempt, error=str(exc))
            await asyncio.sleep(delay_s)
    raise AssertionError("unreachable")


def metrics_runtime(
    port: int,
    *,
    host: str = "0.0.0.0",  # noqa: S104 - Prometheus scrapes the worker from outside its pod
    buckets: Mapping[str, Sequence[float]] | None = None,
) -> Runtime:
    """A Temporal runtime whose Prometheus exporter serves ``http://<host>:<port>/metrics``: the SDK's own metrics
    (``temporal_*``: workflow task latency and failures, activity execution, schedule-to-start, sticky cache ...)
    and whatever workflows and activities record through their ``metric_meter()``.

    The exporter's defaults are kept (counters without an added ``_total``, durations in milliseconds) so the SDK's
    metric names are the ones Temporal documents. ``buckets`` overrides histogram buckets by metric name: the
    defaults (50 ms .. 10 s, as numbers) suit millisecond latencies, not the agent's seconds.

    Raises ValueError when the port cannot be bound (the exporter starts here, not at connect).
    """
    prometheus = PrometheusConfig(bind_address=f"{host}:{port}", histogram_bucket_overrides=buckets)
    return Runtime(telemetry=TelemetryConfig(metrics=prometheus))
