"""Crash proofs on real processes: whatever dies, and whenever, every incident completes, once.

1. ``python worker.py`` is killed with SIGKILL while four incidents (four alert groups, each on its own namespace's
   ``search`` Deployment) stand in four phases: investigating (the Alertmanager request held unanswered),
   awaiting_approval, remediating (the rollback stored in the cluster, its answer held) and verifying (inside the
   durable verify timer). A new worker takes over.
2. The Temporal dev server (the test's own, state in a SQLite file) is stopped cleanly and started again, then
   killed with SIGKILL and started again, while one incident awaits approval and another sits in its verify timer
   through both. The worker stays up through both outages.

In both, every incident reaches ``closed``, resolved by a verification that saw it recover: one workflow run per
group, each phase entered once, each step (diagnosis, plan, policy verdict, decision, action, verification)
recorded once, one ledger entry per action at the governor, and with ``DRY_RUN=false`` exactly one mutating
request per approved action reaches the cluster.

Real parts: the Temporal dev server (the session's in the first proof, the test's own in the second),
``python worker.py`` as a subprocess, a real Prometheus that scrapes each service's error ratio and answers the
alerts' own PromQL, and the Kubernetes emulator over HTTP holding a real bad-deploy cluster excerpt per
namespace. The service "recovers" (its error ratio drops to 0) when its rollback reaches the emulator. The one
stand-in is Alertmanager's alert API, because a real Alertmanager cannot be told to leave a request unanswered.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import aiohttp
from aiohttp import web
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.alertmanager import matcher
from config.settings import Settings
from frontdoor.gateway import IncidentGateway
from models.incident import (
    Alert,
    AlertNotification,
    Decision,
    DecisionResult,
    IncidentSettings,
    IncidentState,
    Phase,
)
from models.remediation import ACTION_ID_ANNOTATION
from tests.e2e.stack import TemporalDevServer, bad_deploy_cluster, eventually, worker_process
from tests.fixtures.http_stand_in import serve_loopback
from tests.fixtures.kube import KubeAPI, KubeEmulator, kube_api
from tests.fixtures.prometheus import PrometheusServer, backfill, gauge_openmetrics, openmetrics_document
from tests.harness import phases, state_of, wait_for
from workflows.governor import GOVERNOR_WORKFLOW_ID, governor_state
from workflows.incident import IncidentWorkflow

METRIC = "service_error_ratio"
# The alerts' own expression, as Prometheus would put it in the generatorURL: the share of 5xx per service.
EXPR = f"max by (namespace, service) ({METRIC}) > 0.05"
FAILING_RATIO = 0.35
EVERY_PHASE = ["triaging", "investigating", "diagnosing", "awaiting_approval", "remediating", "verifying", "resolved"]
# A restarted worker, a restarted server, a retried activity: generous bounds, for a loaded machine.
SLOW_S = 90.0


# ---- the world the incidents live in ------------------------------------------------------------------------


def in_namespace(document: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The recorded cluster excerpt moved from namespace ``food`` to ``namespace`` (every ``namespace`` field)."""

    def move(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: namespace if k == "namespace" and v == "food" else move(v) for k, v in value.items()}
        if isinstance(value, list):
            return [move(item) for item in value]
        return value

    moved: dict[str, Any] = move(dict(document))  # rebuilds every dict and list: the recorded one stays as it was
    return moved


def rolled_back(emulator: KubeEmulator, namespace: str) -> bool:
    """Has the agent's rollback of ``search`` reached the cluster? (A real apply carries the action-id annotation.)"""
    deployment = emulator.objects["apps/v1/deployments", namespace, "search"].raw
    return ACTION_ID_ANNOTATION in (deployment["metadata"].get("annotations") or {})


@dataclass
class ErrorRatios:
    """The scrape target Prometheus reads: each namespace's ``search`` reports a 5xx share of 0.35 until its rollback
    reaches the cluster, then 0; so the alert's expression stops matching once the fix is in, as it would."""

    emulator: KubeEmulator
    namespaces: list[str]

    async def metrics(self, request: web.Request) -> web.Response:
        lines = [f"# TYPE {METRIC} gauge"]
        for namespace in self.namespaces:
            ratio = 0.0 if rolled_back(self.emulator, namespace) else FAILING_RATIO
            lines.append(f'{METRIC}{{namespace="{namespace}",service="search"}} {ratio}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")


@dataclass
class HeldAlertmanager:
    """Alertmanager's ``GET /api/v2/alerts`` with nothing else firing. A request filtering on ``hold`` (a namespace)
    is left unanswered until its client goes away, which keeps that incident investigating for as long as the
    test needs. ``answered`` counts, per namespace, the requests that got an answer."""

    hold: str | None = None
    held: asyncio.Event = field(default_factory=asyncio.Event)
    answered: Counter[str] = field(default_factory=Counter)
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    async def alerts(self, request: web.Request) -> web.Response:
        wanted = request.query.get("filter", "")
        if self.hold is not None and wanted == matcher("namespace", self.hold):
            self.held.set()
            await self._released.wait()  # cancelled when the worker that asked dies (handler cancellation)
            return web.json_response([], status=503)
        prefix = 'namespace="'
        if wanted.startswith(prefix):
            self.answered[wanted.removeprefix(prefix).removesuffix('"')] += 1
        return web.json_response([])

    def release(self) -> None:
        self._released.set()


@dataclass
class World:
    api: KubeAPI
    prometheus: PrometheusServer
    alertmanager: HeldAlertmanager
    alertmanager_url: str
    namespaces: int

    async def ready(self) -> None:
        """Wait until Prometheus answers the alerts' expression for every namespace."""

        async def failing() -> bool:
            return await series_count(self.prometheus.url, EXPR) == self.namespaces

        await eventually(failing, 30, "Prometheus to answer the alert expression for every namespace")

    def worker_env(self) -> dict[str, str]:
        # A closed incident completes at once instead of waiting a day for a verdict. The window is fixed into each
        # incident by whoever starts it (the test's gateway, below); the worker is told the same.
        return {
            "PROMETHEUS_URL": self.prometheus.url,
            "ALERTMANAGER_URL": self.alertmanager_url,
            "FEEDBACK_WINDOW": "0",
        }


@asynccontextmanager
async def world(tmp_path: Path, namespaces: list[str], rolled_out_at: datetime) -> AsyncIterator[World]:
    """The emulator holding the bad-deploy excerpt in every namespace, the scrape target, a real Prometheus
    scraping it every second (and holding its last ten minutes already), and the Alertmanager stand-in."""
    cluster = bad_deploy_cluster(rolled_out_at)
    documents = [in_namespace(cluster, namespace) for namespace in namespaces]
    async with kube_api(tmp_path, *documents) as api:
        target = ErrorRatios(api.emulator, namespaces)
        scrape_app = web.Application()
        scrape_app.router.add_get("/metrics", target.metrics)
        scrape_runner, scrape_url = await serve_loopback(scrape_app)
        alertmanager = HeldAlertmanager()
        alertmanager_app = web.Application()
        alertmanager_app.router.add_get("/api/v2/alerts", alertmanager.alerts)
        alertmanager_runner, alertmanager_url = await serve_loopback(alertmanager_app, handler_cancellation=True)
        try:
            target_address = scrape_url.removeprefix("http://")
            # The last ten minutes of failing, as the scrape target's own series (same job and instance labels):
            # Prometheus answers at once instead of after its first scrape (target discovery takes ~5 s).
            history = [(age_s, FAILING_RATIO) for age_s in range(600, 0, -15)]
            series = [
                ({"namespace": n, "service": "search", "job": "app", "instance": target_address}, history)
                for n in namespaces
            ]
            backfill(openmetrics_document(gauge_openmetrics(METRIC, series)), tmp_path / "tsdb")
            prometheus = PrometheusServer(tmp_path / "tsdb", scrape_targets=[target_address])
            with prometheus:
                yield World(api, prometheus, alertmanager, alertmanager_url, len(namespaces))
        finally:
            alertmanager.release()
            await alertmanager_runner.cleanup()
            await scrape_runner.cleanup()


async def series_count(prometheus_url: str, expr: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{prometheus_url}/api/v1/query", params={"query": expr}) as response,
    ):
        body = await response.json()
    return len(body["data"]["result"]) if body.get("status") == "success" else 0


# ---- incidents ----------------------------------------------------------------------------------------------


def firing(namespace: str, starts_at: datetime) -> AlertNotification:
    """Alertmanager's notification for its group ``HighErrorRate`` in ``namespace``: search's 5xx share is high."""
    labels = {"alertname": "HighErrorRate", "namespace": namespace, "service": "search", "severity": "critical"}
    alert = Alert(
        fingerprint=hashlib.sha256(namespace.encode()).hexdigest()[:16],
        status="firing",
        labels=labels,
        annotations={"summary": "High 5xx error rate on search"},
        starts_at=starts_at,
        generator_url=f"http://prometheus:9090/graph?g0.expr={quote_plus(EXPR)}&g0.tab=1",
    )
    return AlertNotification(
        group_key=f'{{}}:{{alertname="HighErrorRate", namespace="{namespace}"}}',
        status="firing",
        alerts=[alert],
        received_at=datetime.now(UTC),
    )


def gateway(client: Client, task_queue: str, verify_after_s: float) -> IncidentGateway:
    settings = Settings(_env_file=None, temporal_address="unused", temporal_task_queue=task_queue)
    return IncidentGateway(client, settings, IncidentSettings(verify_after_s=verify_after_s, feedback_window_s=0))


async def open_incident(gateway_: IncidentGateway, namespace: str, starts_at: datetime) -> WorkflowHandle[Any, Any]:
    delivery = await gateway_.deliver(firing(namespace, starts_at))
    return gateway_.client.get_workflow_handle_for(IncidentWorkflow.run, delivery.workflow_id)


async def pending_activities(handle: WorkflowHandle[Any, Any]) -> list[str]:
    description = await handle.describe()
    return sorted(info.activity_type.name for info in description.raw_description.pending_activities)


async def settled(
    handle: WorkflowHandle[Any, Any], phase: Phase, pending: list[str], timeout_s: float = 60
) -> IncidentState:
    """Wait until the incident is in ``phase`` with exactly ``pending`` activities in flight (none half-done that a
    kill would leave to their full timeout), and return its state."""
    await wait_for(handle, lambda s: s.phase == phase, timeout_s=timeout_s)

    async def quiet() -> bool:
        return await pending_activities(handle) == pending

    await eventually(quiet, timeout_s, f"{handle.id} to run only {pending} in {phase}")
    state = await state_of(handle)
    assert state.phase == phase, f"{handle.id} left {phase} for {state.phase}"
    return state


async def approve(handle: WorkflowHandle[Any, Any]) -> None:
    result = await handle.execute_update("decide", Decision(approve=True, by="alice"), result_type=DecisionResult)
    assert result.accepted and result.phase == Phase.remediating, result


async def closed(handle: WorkflowHandle[Any, Any], log: Path) -> IncidentState:
    try:
        result: IncidentState = await asyncio.wait_for(handle.result(), timeout=SLOW_S)
    except TimeoutError:
        state = await wait_for(handle, lambda s: True, timeout_s=10)
        raise AssertionError(
            f"{handle.id} did not complete; phase {state.phase}, timeline "
            f"{[(e.kind, e.message) for e in state.timeline][-8:]}; worker log:\n{log.read_text()[-3000:]}"
        ) from None
    return result


async def runs_of(client: Client, workflow_id: str) -> list[WorkflowExecutionStatus | None]:
    """Every run of the workflow id that visibility knows, once it lists none still running."""

    async def listed() -> list[WorkflowExecutionStatus | None]:
        runs = [run.status async for run in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        return runs if runs and WorkflowExecutionStatus.RUNNING not in runs else []

    return await eventually(listed, 30, f"visibility to list {workflow_id} completed")


def assert_done_once(state: IncidentState, namespace: str, emulator: KubeEmulator, mode: str) -> None:
    """Closed as recovered, through every phase once, each step recorded once, one change in the cluster."""
    assert state.phase == Phase.closed and state.outcome == "resolved", (state.phase, state.outcome)
    assert phases(state) == [*EVERY_PHASE, "closed"], phases(state)
    kinds = Counter(event.kind for event in state.timeline)
    for kind in ("triaged", "memory", "diagnosed", "plan_proposed", "policy", "decision", "action", "verification"):
        assert kinds[kind] == 1, (namespace, kind, kinds)
    repeated = [key for key, n in Counter((e.kind, e.message) for e in state.timeline).items() if n > 1]
    assert repeated == [], (namespace, repeated)
    evidence = Counter(event.data.get("source") for event in state.timeline if event.kind == "evidence")
    assert evidence == {None: 1, "prometheus": 1, "kubernetes": 1, "alertmanager": 1}, (namespace, evidence)
    assert state.diagnosis.category == "bad_deploy"
    [record] = state.actions_taken
    assert (record.action.type, record.action.namespace, record.action.target) == ("rollback", namespace, "search")
    assert record.mode == mode, (namespace, record.mode, record.result)
    [verified] = state.verification
    assert verified.outcome == "recovered", verified
    changes = [r for r in emulator.mutations() if r.namespace == namespace]
    assert [(r.method.value, r.url.path) for r in changes] == [
        ("PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/search")
    ]
    deployment = emulator.objects["apps/v1/deployments", namespace, "search"].raw
    assert deployment["metadata"]["annotations"][ACTION_ID_ANNOTATION] == record.action_id


async def assert_governed_once(client: Client, done: Mapping[str, IncidentState]) -> None:
    """The governor's ledger holds each incident's action once, applied."""
    ledger = (await governor_state(client)).ledger
    for namespace, state in done.items():
        entries = [(e.action_id, e.outcome) for e in ledger if e.namespace == namespace]
        assert entries == [(state.actions_taken[0].action_id, "applied")], (namespace, entries)


async def end_governor(client: Client) -> None:
    """The governor is a singleton on the session's server: one left by another test (its worker gone) would
    hold every reservation, and ours must not outlive this test either."""
    with suppress(Exception):
        await client.get_workflow_handle(GOVERNOR_WORKFLOW_ID).terminate("crash proof over")


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


# ---- the proofs ---------------------------------------------------------------------------------------------


async def test_a_worker_killed_in_every_phase_loses_nothing_and_does_nothing_twice(
    dev_server: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    client = dev_server.client
    address = client.service_client.config.target_host
    log = tmp_path / "worker.log"
    suffix = task_queue.removeprefix("test-")[:6]  # own namespaces: no memory of other tests' incidents
    ns = {phase: f"crash-{phase[:5]}-{suffix}" for phase in ("investigating", "awaiting", "remediating", "verifying")}
    starts_at = datetime.now(UTC) - timedelta(minutes=2)
    quick = gateway(client, task_queue, verify_after_s=2)
    # The verify timer must still be running when the worker dies, a few seconds after this incident reaches it.
    slow_verify = gateway(client, task_queue, verify_after_s=12)
    await end_governor(client)
    try:
        async with world(tmp_path, list(ns.values()), starts_at - timedelta(minutes=4)) as w:
            emulator = w.api.emulator
            with worker_process(address, task_queue, w.api.kubeconfig, log, w.worker_env()) as first:
                await w.ready()
                # Investigating first: after the kill its retry waits out the lost attempt's 15 s start-to-close
                # timeout, the longest wait here, so that clock runs while the others get into position.
                w.alertmanager.hold = ns["investigating"]
                investigating = await open_incident(quick, ns["investigating"], starts_at)
                await asyncio.wait_for(w.alertmanager.held.wait(), timeout=60)
                awaiting, remediating = await asyncio.gather(
                    open_incident(quick, ns["awaiting"], starts_at), open_incident(quick, ns["remediating"], starts_at)
                )
                verifying = await open_incident(slow_verify, ns["verifying"], starts_at)
                for handle in (awaiting, remediating, verifying):
                    await settled(handle, Phase.awaiting_approval, [])

                await approve(verifying)
                in_timer = await settled(verifying, Phase.verifying, [])
                # The emulator stores the next rollback and holds its answer: the worker dies before it hears.
                emulator.hold_after_change = asyncio.Event()
                await approve(remediating)
                await asyncio.wait_for(emulator.changed.wait(), timeout=30)
                await settled(remediating, Phase.remediating, ["execute_action"])
                await settled(investigating, Phase.investigating, ["gather_related_alerts"])
                await settled(awaiting, Phase.awaiting_approval, [])
                await settled(verifying, Phase.verifying, [])
                assert in_timer.verify_at is not None and datetime.now(UTC) < in_timer.verify_at, "timer ran out"

                kill(first)
                killed_at = datetime.now(UTC)
            emulator.hold_after_change.set()
            emulator.hold_after_change = None
            w.alertmanager.hold = None

            with worker_process(address, task_queue, w.api.kubeconfig, log, w.worker_env()):
                await approve(awaiting)
                await settled(investigating, Phase.awaiting_approval, [], timeout_s=SLOW_S)
                await approve(investigating)
                handles = dict(zip(ns.values(), (investigating, awaiting, remediating, verifying), strict=True))
                results = await asyncio.gather(*(closed(h, log) for h in handles.values()))
                done = dict(zip(handles, results, strict=True))
                await assert_governed_once(client, done)
    finally:
        await end_governor(client)

    for phase, namespace in ns.items():
        # remediating: the rollback was in the cluster before the worker died; the new one finds it there.
        assert_done_once(
            done[namespace], namespace, emulator, "already_applied" if phase == "remediating" else "applied"
        )
        assert await runs_of(client, handles[namespace].id) == [WorkflowExecutionStatus.COMPLETED]
    assert len(emulator.mutations()) == len(ns)
    # The durable timer outlived the worker that started it: verification ran on the new one.
    assert done[ns["verifying"]].verification[0].at > killed_at
    # Evidence gathered before the crash was not asked for again; the lost request was asked once more.
    assert w.alertmanager.answered == dict.fromkeys(ns.values(), 1), w.alertmanager.answered


async def test_a_temporal_server_stopped_or_killed_resumes_its_incidents_from_its_sqlite_file(
    task_queue: str, tmp_path: Path
) -> None:
    suffix = task_queue.removeprefix("test-")[:6]
    ns = {"awaiting": f"restart-await-{suffix}", "verifying": f"restart-verif-{suffix}"}
    starts_at = datetime.now(UTC) - timedelta(minutes=2)
    log = tmp_path / "worker.log"
    server = TemporalDevServer(tmp_path / "temporal.db").start()
    try:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        async with world(tmp_path, list(ns.values()), starts_at - timedelta(minutes=4)) as w:
            emulator = w.api.emulator
            with worker_process(server.address, task_queue, w.api.kubeconfig, log, w.worker_env()) as worker:
                await w.ready()
                awaiting = await open_incident(gateway(client, task_queue, 2), ns["awaiting"], starts_at)
                verifying = await open_incident(gateway(client, task_queue, 8), ns["verifying"], starts_at)
                for handle in (awaiting, verifying):
                    await settled(handle, Phase.awaiting_approval, [])
                await approve(verifying)
                in_timer = await settled(verifying, Phase.verifying, [])
                assert in_timer.verify_at is not None

                server.stop()  # a clean stop: the server shuts down as it is asked to
                server.start()  # same port, same SQLite file
                # The worker polls the server that came back; nothing moved while it was away.
                await settled(awaiting, Phase.awaiting_approval, [])
                await settled(verifying, Phase.verifying, [])
                assert datetime.now(UTC) < in_timer.verify_at, "the verify timer ran out before the second restart"
                server.kill()  # a crash: SIGKILL, no chance to flush or close anything
                server.start()
                back_at = datetime.now(UTC)

                await approve(awaiting)
                handles = {ns["awaiting"]: awaiting, ns["verifying"]: verifying}
                results = await asyncio.gather(*(closed(h, log) for h in handles.values()))
                done = dict(zip(handles, results, strict=True))
                assert worker.poll() is None, "the worker died with the server"
                await assert_governed_once(client, done)

            for namespace, state in done.items():
                assert_done_once(state, namespace, emulator, "applied")
                assert await runs_of(client, handles[namespace].id) == [WorkflowExecutionStatus.COMPLETED]
            assert len(emulator.mutations()) == len(ns)
            # The timer set before both restarts fired after them: verification ran on the twice-restarted server.
            assert done[ns["verifying"]].verification[0].at > back_at
            assert w.alertmanager.answered == dict.fromkeys(ns.values(), 1)
    finally:
        server.stop()
