"""One way to connect to Temporal: the pydantic data converter everywhere, settings from the environment."""

from __future__ import annotations

import asyncio

import structlog
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from config.settings import Settings

log = structlog.get_logger(__name__)


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        lazy=lazy,
    )


async def connect_with_retry(settings: Settings, *, attempts: int = 30, delay_s: float = 1.0) -> Client:
    """Connect, waiting for a Temporal that is still starting (e.g. ``make run`` brings both up together)."""
    for attempt in range(1, attempts + 1):
        try:
            return await connect(settings)
        except RuntimeError as exc:  # the SDK reports "Failed client connect" as RuntimeError
            if attempt == attempts:
                raise
            log.warning("temporal_unreachable", address=settings.temporal_address, attempt=attempt, error=str(exc))
            await asyncio.sleep(delay_s)
    raise AssertionError("unreachable")
