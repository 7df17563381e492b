"""Shared fixtures: real Temporal servers from the project's own packages (never an SDK download)."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from frontdoor.app import create_app
from frontdoor.gateway import IncidentGateway
from models.incident import IncidentSettings
from workflows.search_attributes import ALL_KEYS, register_search_attributes

BIN = Path(sys.executable).parent
PAYLOADS = Path(__file__).parent / "payloads"


def _binary(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make test`, which installs the project's dev dependencies")
    return str(path)


@pytest_asyncio.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=_binary("temporal-test-server"),
    )
    # The time-skipping server knows no custom search attributes until they are added.
    await register_search_attributes(env.client, env.client.namespace)
    yield env
    await env.shutdown()


@pytest_asyncio.fixture
async def own_time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own: an activity another test left in flight when its worker stopped
    keeps a shared server from skipping time until that activity times out."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=_binary("temporal-test-server"),
    )
    await register_search_attributes(env.client, env.client.namespace)
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=_binary("temporal"),
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture
async def front(dev_server: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Callable[..., Any]]:
    """Build front doors (``await front(**settings)``) against the dev server, with a worker on the same queue
    whose Prometheus says the alert is over (verification recovers)."""
    from tests.harness import FakePrometheus, RecordingNotifier, incident_worker

    clients: list[TestClient] = []
    prometheus = FakePrometheus()
    prometheus.series = []

    async def make(**overrides: Any) -> TestClient:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            temporal_address=dev_server.client.service_client.config.target_host,
            temporal_task_queue=task_queue,
            **overrides,
        )
        gateway = IncidentGateway(dev_server.client, settings, IncidentSettings(approvers=settings.approvers))
        client = TestClient(TestServer(create_app(gateway, settings)))
        await client.start_server()
        clients.append(client)
        return client

    async with incident_worker(dev_server.client, task_queue, prometheus, RecordingNotifier()):
        yield make
        for client in clients:
            await client.close()


def load_payload(name: str) -> dict:
    return json.loads((PAYLOADS / name).read_text())
