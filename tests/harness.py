"""Helpers for workflow tests: notifications, stand-in activities (replaced by name), waiting on phases."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.alertmanager import AlertmanagerActivities
from activities.llm import LLMActivities
from activities.loki import LokiActivities
from activities.memory import MemoryActivities
from activities.pagerduty import PagerDutyActivities
from activities.policy import PolicyActivities
from activities.remediation import RemediationActivities
from activities.triage import TriageActivities
from models.evidence import EvidenceRequest, KubernetesEvidence, MetricEvidence, Rollout
from models.incident import (
    Alert,
    AlertNotification,
    IncidentState,
    Notification,
    Phase,
    PromQueryRequest,
    PromQueryResult,
    PromSeries,
)
from remediation.policy import Policy, default_policy
from triage.runbooks import load_runbooks
from workflows.governor import GovernorActivities, GovernorWorkflow
from workflows.incident import IncidentWorkflow

RUNBOOKS = load_runbooks(Path(__file__).resolve().parent.parent / "runbooks")
EXPR = 'sum by (namespace, service) (rate(http_requests_total{code=~"5.."}[5m])) > 0.05'
GENERATOR_URL = (
    "http://prometheus:9090/graph?g0.expr=sum+by+%28namespace%2C+service%29+%28rate%28http_requests_total"
    "%7Bcode%3D~%225..%22%7D%5B5m%5D%29%29+%3E+0.05&g0.tab=1"
)
GROUP_KEY = '{}/{severity=~"critical|warning"}:{alertname="HighErrorRate", namespace="food"}'


def alert(
    fingerprint: str = "f88fef4435c3dcd9",
    status: str = "firing",
    *,
    alertname: str = "HighErrorRate",
    severity: str = "critical",
    service: str = "search",
    starts_at: datetime = datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
    ends_at: datetime | None = None,
) -> Alert:
    return Alert(
        fingerprint=fingerprint,
        status=status,  # type: ignore[arg-type]
        labels={"alertname": alertname, "namespace": "food", "service": service, "severity": severity},
        annotations={"summary": f"High 5xx error rate on {service}"},
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url=GENERATOR_URL,
    )


def notification(*alerts: Alert, status: str | None = None, group_key: str = GROUP_KEY) -> AlertNotification:
    alerts = alerts or (alert(),)
    overall = status or ("firing" if any(a.status == "firing" for a in alerts) else "resolved")
    return AlertNotification(
        group_key=group_key,
        status=overall,  # type: ignore[arg-type]
        alerts=list(alerts),
        received_at=datetime.now(UTC),
    )


def resolved(notification_: AlertNotification) -> AlertNotification:
    return notification_.model_copy(
        update={
            "status": "resolved",
            "alerts": [
                a.model_copy(update={"status": "resolved", "ends_at": datetime(2026, 1, 1, 12, 30, tzinfo=UTC)})
                for a in notification_.alerts
            ],
        }
    )


class FakePrometheus:
    """Stands in for ``query_alert_expression``; tests set what the expression returns now."""

    def __init__(self) -> None:
        self.series: list[PromSeries] = [PromSeries(labels={"namespace": "food", "service": "search"}, value=0.35)]
        # What expressions other than the alert's return (a runbook's verify check, say), by expression.
        self.other_expressions: dict[str, list[PromSeries]] = {}
        self.error: ApplicationError | None = None
        self.calls: list[PromQueryRequest] = []
        self.metric_evidence = MetricEvidence()
        self.evidence_requests: list[EvidenceRequest] = []

    @activity.defn(name="query_alert_expression")
    async def query_alert_expression(self, request: PromQueryRequest) -> PromQueryResult:
        self.calls.append(request)
        if self.error is not None:
            raise self.error
        series = self.other_expressions.get(request.expr, self.series)
        return PromQueryResult(
            expr=request.expr, evaluated_at=datetime.now(UTC), series=list(series), total_series=len(series)
        )

    @activity.defn(name="gather_metric_evidence")
    async def gather_metric_evidence(self, request: EvidenceRequest) -> MetricEvidence:
        self.evidence_requests.append(request)
        if self.error is not None:
            raise self.error
        return self.metric_evidence


class FakeKubernetes:
    """Stands in for ``gather_kubernetes_evidence``. By default the alerting service was rolled out five minutes
    before the alert began, so the real diagnosis finds a bad deploy and plans a rollback for a person to approve."""

    def __init__(self) -> None:
        self.rolled_out = True
        self.requests: list[EvidenceRequest] = []

    @activity.defn(name="gather_kubernetes_evidence")
    async def gather_kubernetes_evidence(self, request: EvidenceRequest) -> KubernetesEvidence:
        self.requests.append(request)
        if not self.rolled_out:
            return KubernetesEvidence()
        at = request.onset - timedelta(minutes=5)
        return KubernetesEvidence(
            rollouts=[
                Rollout(
                    namespace=request.namespace,
                    deployment=request.workload,
                    revision=7,
                    replicaset=f"{request.workload}-6d5f8c7b9a",
                    at=at,
                    images=[f"{request.workload}:v2"],
                    previous_images=[f"{request.workload}:v1"],
                    changed=["image"],
                    current=True,
                    summary=f"revision 7 at {at:%H:%M}Z: image {request.workload}:v1 -> {request.workload}:v2",
                )
            ]
        )


class RecordingNotifier:
    """Stands in for ``notify``; a test can hold an event's notification open to act while it is in flight."""

    def __init__(self) -> None:
        self.sent: list[Notification] = []
        self.hold: dict[str, asyncio.Event] = {}

    @activity.defn(name="notify")
    async def notify(self, notification: Notification) -> None:
        self.sent.append(notification)
        gate = self.hold.get(notification.event)
        if gate is not None:
            await gate.wait()

    @property
    def events(self) -> list[str]:
        """What was announced, without the in-place updates of the incident's message at each phase."""
        return [n.event for n in self.sent if n.event != "phase"]


@asynccontextmanager
async def incident_worker(
    client: Client,
    task_queue: str,
    prometheus: FakePrometheus,
    notifier: RecordingNotifier,
    kubernetes: FakeKubernetes | None = None,
    llm: LLMActivities | None = None,
    *,
    executor: RemediationActivities | None = None,
    dry_run: bool = True,
    policy: Policy | None = None,
    pagerduty: PagerDutyActivities | None = None,
) -> AsyncIterator[Worker]:
    """The incident's worker with Prometheus, Kubernetes (read side) and the notifier stood in; the other sources
    are the real adapters, unconfigured, so every incident records their real "not configured" gaps. The executor
    is the real one (unconfigured unless a test points it at the emulator), the policy the shipped policy.yaml, and
    each test's incidents have a governor of their own (``governor-<task queue>``)."""
    kubernetes = kubernetes or FakeKubernetes()
    executor = executor or RemediationActivities(None)
    judge = PolicyActivities(policy or default_policy(), dry_run)
    governor = GovernorActivities(client, task_queue, workflow_id=governor_id(task_queue))
    triage = TriageActivities(RUNBOOKS)
    async with aiohttp.ClientSession() as session:
        loki = LokiActivities(None, None, session)
        alertmanager = AlertmanagerActivities(None, session)
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=[IncidentWorkflow, GovernorWorkflow],
            activities=[
                triage.triage_alerts,
                triage.diagnose_incident,
                MemoryActivities(client).recall_incidents,
                prometheus.query_alert_expression,
                prometheus.gather_metric_evidence,
                loki.gather_log_evidence,
                kubernetes.gather_kubernetes_evidence,
                alertmanager.gather_related_alerts,
                notifier.notify,
                (llm or LLMActivities(None, None)).diagnose_with_llm,
                (llm or LLMActivities(None, None)).summarize_incident,
                judge.judge_plan,
                governor.reserve_action,
                governor.report_action,
                governor.killswitch_state,
                executor.execute_action,
                executor.undo_action,
                (pagerduty or PagerDutyActivities(None, "http://127.0.0.1:9/v2/enqueue", session)).page,
            ],
        )
        async with worker:
            yield worker


def governor_id(task_queue: str) -> str:
    return f"governor-{task_queue}"


async def state_of(handle: WorkflowHandle) -> IncidentState:
    return await handle.query("state", result_type=IncidentState)


async def wait_for(
    handle: WorkflowHandle, predicate: Callable[[IncidentState], bool], timeout_s: float = 15.0
) -> IncidentState:
    """Poll the ``state`` query (real time; the time-skipping server does not skip while we poll)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: IncidentState | None = None
    error: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = await state_of(handle)
        except Exception as exc:
            last, error = None, exc
        if last is not None and predicate(last):
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"condition not reached; last state phase={last.phase if last else None}; last query error: {error!r}"
    )


async def wait_for_phase(handle: WorkflowHandle, phase: Phase, timeout_s: float = 15.0) -> IncidentState:
    return await wait_for(handle, lambda s: s.phase == phase, timeout_s)


async def wait_http_phase(client: TestClient, workflow_id: str, phase: str, timeout_s: float = 30) -> dict[str, Any]:
    """Poll the front door's ``GET /incidents/{id}`` until the incident is in ``phase``; its JSON state."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    body: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        response = await client.get(f"/incidents/{workflow_id}")
        if response.status == 200:
            body = await response.json()
            if body["phase"] == phase:
                return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{workflow_id} never reached {phase}; last {body.get('phase')}")


def phases(state: IncidentState) -> list[str]:
    return [event.data["to"] for event in state.timeline if event.kind == "phase"]


HISTORIES = Path(__file__).resolve().parent / "histories"


async def capture(handle: WorkflowHandle, name: str) -> None:
    """With CAPTURE_HISTORIES=1, keep this run's history for the replay test (tests/histories/)."""
    if os.environ.get("CAPTURE_HISTORIES") == "1":
        history = await handle.fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json())
