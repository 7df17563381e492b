"""Identical deliveries in flight together share one Temporal write; nothing is lost on the way."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import Client, Interceptor, OutboundInterceptor, StartWorkflowInput, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from frontdoor.gateway import Delivery, IncidentGateway, SingleFlight, TemporalUnavailable, delivery_key
from models.incident import IncidentSettings, Phase
from tests.harness import FakePrometheus, RecordingNotifier, alert, incident_worker, notification, wait_for
from workflows.incident import IncidentWorkflow


class CountingInterceptor(Interceptor):
    """Counts the client's workflow starts (signal-with-start included): the front door's Temporal writes."""

    def __init__(self) -> None:
        self.starts = 0

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Counting(next, self)


class _Counting(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, counter: CountingInterceptor) -> None:
        super().__init__(next)
        self._counter = counter

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        self._counter.starts += 1
        await asyncio.sleep(0.05)  # a write that takes a moment, as under load: copies arrive while it is in flight
        return await super().start_workflow(input)


def counted_client(env: WorkflowEnvironment) -> tuple[Client, CountingInterceptor]:
    counter = CountingInterceptor()
    config = env.client.config()
    config["interceptors"] = [*config["interceptors"], counter]
    return Client(**config), counter


async def test_three_copies_in_flight_make_one_write_and_a_later_notification_adds_its_alert(
    dev_server: WorkflowEnvironment, task_queue: str
) -> None:
    client, counter = counted_client(dev_server)
    settings = Settings(_env_file=None, temporal_task_queue=task_queue)  # type: ignore[call-arg]
    gateway = IncidentGateway(client, settings, IncidentSettings())
    group = f"{{}}:{{storm={task_queue}}}"
    first = notification(alert(), group_key=group)
    # Each replica of an HA Alertmanager sends the same body; the front door receives each at its own moment.
    copies = [first.model_copy(update={"received_at": first.received_at + timedelta(milliseconds=i)}) for i in range(3)]

    async with incident_worker(dev_server.client, task_queue, FakePrometheus(), RecordingNotifier()):
        deliveries = await asyncio.gather(*(gateway.deliver(copy) for copy in copies))
        assert counter.starts == 1
        assert {d.workflow_id for d in deliveries} == {deliveries[0].workflow_id}
        assert sorted(d.coalesced for d in deliveries) == [False, True, True]
        assert all(d.action in ("started", "signalled") for d in deliveries)

        # A later notification of the group adds an alert: a different body, a write of its own.
        later_start = datetime(2026, 1, 1, 12, 5, tzinfo=UTC)
        second_alert = alert("0a1b2c3d4e5f6a7b", service="search-worker", starts_at=later_start)
        later = await gateway.deliver(notification(alert(), second_alert, group_key=group))
        assert counter.starts == 2 and not later.coalesced and later.workflow_id == deliveries[0].workflow_id
        # The same body again once the first write finished is a write again (the workflow folds it away).
        await gateway.deliver(copies[0])
        assert counter.starts == 3

        handle = dev_server.client.get_workflow_handle_for(IncidentWorkflow.run, later.workflow_id)
        state = await wait_for(handle, lambda s: len(s.alerts) == 2 and s.phase != Phase.received, timeout_s=30)
    assert set(state.alerts) == {"f88fef4435c3dcd9", "0a1b2c3d4e5f6a7b"}
    assert state.notifications == 3  # the copies made one notification; the later one and the re-send two more


async def test_a_failed_write_fails_every_copy_that_shared_it() -> None:
    calls = 0

    async def unavailable() -> Delivery:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        raise TemporalUnavailable("Temporal unreachable")

    flight = SingleFlight()
    results = await asyncio.gather(*(flight.run("k", unavailable) for _ in range(3)), return_exceptions=True)
    assert calls == 1 and all(isinstance(r, TemporalUnavailable) for r in results)
    assert len(flight) == 0  # nothing left behind: the next copy tries again
    with pytest.raises(TemporalUnavailable):
        await flight.run("k", unavailable)
    assert calls == 2


async def test_a_caller_that_goes_away_cancels_neither_the_write_nor_the_others() -> None:
    release = asyncio.Event()

    async def write() -> Delivery:
        await release.wait()
        return Delivery("incident-x", "started")

    flight = SingleFlight()
    leader = asyncio.create_task(flight.run("k", write))
    follower = asyncio.create_task(flight.run("k", write))
    await asyncio.sleep(0.01)
    leader.cancel()
    release.set()
    delivery, joined = await follower
    assert (delivery.workflow_id, joined) == ("incident-x", True)
    assert leader.cancelled()


def test_the_key_ignores_only_the_moment_of_receipt() -> None:
    base = notification(alert())
    assert delivery_key(base) == delivery_key(base.model_copy(update={"received_at": datetime.now(UTC)}))
    assert delivery_key(base) != delivery_key(notification(alert(), status="resolved"))
    assert delivery_key(base) != delivery_key(notification(alert(), group_key="{}:{other}"))
