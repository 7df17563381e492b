"""Everything the front door and the operator CLI ask of Temporal, with its failures named.

Temporal's errors are translated here into a few exceptions the HTTP layer maps to statuses: unreachable -> 503
(Alertmanager retries), unknown incident -> 404, a refused decision -> 403/409.

Identical notifications that arrive while the first one's Temporal write is still in flight share that write:
an HA pair or trio of Alertmanagers delivers every notification once per replica, at the same moment, and one
signal-with-start per notification is all an incident needs (a later copy would be folded away by the workflow
anyway). Temporal writes are what bounds the front door's throughput, so this triples it in such a storm.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.memory import summary_of
from config.settings import Settings
from models.incident import (
    AlertNotification,
    Decision,
    DecisionResult,
    Feedback,
    FeedbackRecord,
    IncidentInput,
    IncidentSettings,
    IncidentState,
)
from models.stats import IncidentStats, IncidentSummary
from reports.stats import incident_stats
from triage.identity import incident_workflow_id
from triage.labels import highest_severity, namespace_of, workload_of
from triage.planning import lead_alert
from triage.summary import one_line_summary
from workflows.incident import (
    ALREADY_DECIDED,
    BAD_FEEDBACK,
    FEEDBACK_RECORDED,
    NO_DIAGNOSIS,
    NO_PENDING_PLAN,
    STALE_PLAN,
    UNKNOWN_APPROVER,
    IncidentWorkflow,
)
from workflows.search_attributes import (
    INCIDENT_NAMESPACE,
    INCIDENT_PHASE,
    INCIDENT_SERVICE,
    initial_search_attributes,
    quoted,
)

# Alertmanager gives a webhook 10 s by default; answer well within it so a retry is its own decision.
RPC_TIMEOUT = timedelta(seconds=5)
_UNAVAILABLE = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.CANCELLED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
}


class TemporalUnavailable(Exception):
    """Temporal could not be reached or is overloaded; the caller should retry."""


class IncidentNotFound(Exception):
    pass


class DecisionRefused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class FeedbackRefused(DecisionRefused):
    """The workflow's validator refused a verdict on the diagnosis (kind: one of its error types)."""


_DECISION_REFUSALS = (NO_PENDING_PLAN, STALE_PLAN, UNKNOWN_APPROVER, ALREADY_DECIDED)
_FEEDBACK_REFUSALS = (NO_DIAGNOSIS, FEEDBACK_RECORDED, BAD_FEEDBACK, UNKNOWN_APPROVER)
# Stats read every closed incident of the window: a bound keeps one request from reading a whole cluster.
STATS_LIMIT = 5_000


@dataclass(frozen=True)
class Delivery:
    workflow_id: str
    action: Literal["started", "signalled", "ignored"]
    reason: str | None = None
    # Answered by an identical delivery's Temporal write that was already in flight (not in the HTTP answer).
    coalesced: bool = False

    def as_json(self) -> dict[str, str]:
        body = {"workflow_id": self.workflow_id, "action": self.action}
        if self.reason:
            body["reason"] = self.reason
        return body


@asynccontextmanager
async def _temporal_errors() -> AsyncIterator[None]:
    try:
        yield
    except RPCError as err:
        if err.status in _UNAVAILABLE:
            raise TemporalUnavailable(f"Temporal unavailable: {err.message}") from err
        raise
    except RuntimeError as err:
        # A lazy client that cannot connect raises RuntimeError("Failed client connect: ...").
        if "connect" in str(err).lower():
            raise TemporalUnavailable(f"Temporal unreachable: {err}") from err
        raise


class SingleFlight:
    """One call per key at a time: callers with the key of a call in flight await that call's outcome.

    The call runs as its own task, so a caller that goes away (a client that hung up) cancels neither the write
    nor the other callers' wait."""

    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Task[Delivery]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    async def run(self, key: str, call: Callable[[], Awaitable[Delivery]]) -> tuple[Delivery, bool]:
        """The call's result, and whether it was another caller's call (coalesced)."""
        task = self._calls.get(key)
        joined = task is not None
        if task is None:
            task = asyncio.ensure_future(call())
            self._calls[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task), joined

    def _finished(self, key: str, task: asyncio.Task[Delivery]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have gone, and the error was theirs to see


def delivery_key(notification: AlertNotification) -> str:
    """What makes two deliveries the same notification: everything but the moment it was received."""
    body = notification.model_dump_json(exclude={"received_at"})
    return hashlib.sha256(body.encode()).hexdigest()


class IncidentGateway:
    def __init__(self, client: Client, settings: Settings, incident_settings: IncidentSettings | None = None) -> None:
        self._client = client
        self._settings = settings
        self._incident_settings = incident_settings or settings.incident_settings()
        self._in_flight = SingleFlight()

    @property
    def client(self) -> Client:
        return self._client

    async def deliver(self, notification: AlertNotification) -> Delivery:
        """Open the group's incident or add the notification to the one already running; an identical
        notification whose write is in flight shares it."""
        delivery, coalesced = await self._in_flight.run(delivery_key(notification), lambda: self._deliver(notification))
        return Delivery(delivery.workflow_id, delivery.action, delivery.reason, coalesced) if coalesced else delivery

    async def _deliver(self, notification: AlertNotification) -> Delivery:
        workflow_id = incident_workflow_id(notification.group_key)
        if notification.status == "resolved":
            return await self._deliver_resolved(workflow_id, notification)
        preview = _preview_state(workflow_id, notification)
        async with _temporal_errors():
            handle = await self._client.start_workflow(
                IncidentWorkflow.run,
                IncidentInput(settings=self._incident_settings),
                id=workflow_id,
                task_queue=self._settings.temporal_task_queue,
                start_signal="alerts",
                start_signal_args=[notification],
                # A running incident gets the signal; a closed one lets the same group open a new run.
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                search_attributes=initial_search_attributes(preview),
                static_summary=one_line_summary(preview),
                rpc_timeout=RPC_TIMEOUT,
            )
        # SignalWithStart answers whether it started a run; the SDK keeps that answer on the handle only.
        response = getattr(handle, "_start_workflow_response", None)
        started = bool(getattr(response, "started", False))
        return Delivery(workflow_id, "started" if started else "signalled")

    async def _deliver_resolved(self, workflow_id: str, notification: AlertNotification) -> Delivery:
        handle = self._client.get_workflow_handle(workflow_id)
        try:
            async with _temporal_errors():
                await handle.signal("alerts", notification, rpc_timeout=RPC_TIMEOUT)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                # Nothing is open for this group (already closed, or never opened): nothing to resolve.
                return Delivery(workflow_id, "ignored", "no open incident for this group")
            raise
        return Delivery(workflow_id, "signalled")

    async def state(self, workflow_id: str) -> IncidentState:
        handle = self._client.get_workflow_handle(workflow_id)
        try:
            async with _temporal_errors():
                return await handle.query("state", result_type=IncidentState, rpc_timeout=RPC_TIMEOUT)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise IncidentNotFound(workflow_id) from err
            raise

    async def list_incidents(self, *, open_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        query = 'WorkflowType = "IncidentWorkflow"'
        if open_only:
            # A closed incident may still run for a while, waiting for feedback on its diagnosis: not open.
            query += f' AND ExecutionStatus = "Running" AND {INCIDENT_PHASE.name} != "closed"'
        incidents: list[dict[str, Any]] = []
        async with _temporal_errors():
            async for execution in self._client.list_workflows(query, limit=limit, rpc_timeout=RPC_TIMEOUT):
                attributes = {key.name: value for key, value in execution.typed_search_attributes}
                incidents.append(
                    {
                        "workflow_id": execution.id,
                        "run_id": execution.run_id,
                        "status": execution.status.name if execution.status else None,
                        "start_time": execution.start_time.isoformat(),
                        "close_time": execution.close_time.isoformat() if execution.close_time else None,
                        "phase": attributes.get("IncidentPhase"),
                        "severity": attributes.get("IncidentSeverity"),
                        "alertname": attributes.get("AlertName"),
                        "namespace": attributes.get("IncidentNamespace"),
                        "service": attributes.get("IncidentService"),
                        "category": attributes.get("RootCauseCategory"),
                        "confidence": attributes.get("DiagnosisConfidence"),
                    }
                )
        return incidents

    async def decide(self, workflow_id: str, decision: Decision) -> DecisionResult:
        try:
            return await self._update(workflow_id, "decide", decision, DecisionResult)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type in _DECISION_REFUSALS:
                raise DecisionRefused(cause.type, cause.message) from err
            raise

    async def feedback(self, workflow_id: str, feedback: Feedback) -> FeedbackRecord:
        """Record a verdict on the diagnosis; IncidentNotFound once the incident's feedback window is over."""
        try:
            return await self._update(workflow_id, "feedback", feedback, FeedbackRecord)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type in _FEEDBACK_REFUSALS:
                raise FeedbackRefused(cause.type, cause.message) from err
            raise

    async def _update(self, workflow_id: str, name: str, argument: object, result_type: type[Any]) -> Any:
        handle = self._client.get_workflow_handle(workflow_id)
        try:
            async with _temporal_errors():
                return await handle.execute_update(
                    name, argument, result_type=result_type, rpc_timeout=timedelta(seconds=30)
                )
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise IncidentNotFound(workflow_id) from err
            raise

    async def stats(
        self, window: timedelta, now: datetime, *, namespace: str | None = None, service: str | None = None
    ) -> IncidentStats:
        """Figures over the incidents opened in the last ``window`` (of one namespace or service when given), from
        visibility and the closed runs' memos."""
        start = now - window
        # A closed run started no earlier than its incident opened, so this finds every incident opened in the
        # window (and some opened a little before, left out by the figures).
        where = f"WorkflowType = 'IncidentWorkflow' AND StartTime >= {quoted(start.isoformat())}"
        if namespace:
            where += f" AND {INCIDENT_NAMESPACE.name} = {quoted(namespace)}"
        if service:
            where += f" AND {INCIDENT_SERVICE.name} = {quoted(service)}"
        closed_query = f"{where} AND {INCIDENT_PHASE.name} = 'closed'"
        open_query = f"{where} AND ExecutionStatus = 'Running' AND {INCIDENT_PHASE.name} != 'closed'"
        async with _temporal_errors():
            executions = [
                e async for e in self._client.list_workflows(closed_query, limit=STATS_LIMIT, rpc_timeout=RPC_TIMEOUT)
            ]
            still_open = await self._client.count_workflows(open_query, rpc_timeout=RPC_TIMEOUT)
        summaries: list[IncidentSummary | None] = list(await asyncio.gather(*(summary_of(e) for e in executions)))
        readable = [summary for summary in summaries if summary is not None]
        return incident_stats(
            readable,
            window_start=start,
            window_end=now,
            open_incidents=still_open.count,
            unreadable=len(summaries) - len(readable),
        )

    async def ready(self) -> bool:
        try:
            async with _temporal_errors():
                return await self._client.service_client.check_health(timeout=timedelta(seconds=2))
        except (TemporalUnavailable, RPCError):
            return False


def _preview_state(workflow_id: str, notification: AlertNotification) -> IncidentState:
    """What the notification alone says, so a new incident is findable in the UI before its first task."""
    firing = [alert for alert in notification.alerts if alert.status == "firing"] or notification.alerts
    lead = lead_alert(firing)
    return IncidentState(
        workflow_id=workflow_id,
        severity=highest_severity(alert.labels for alert in firing),
        alertname=lead.alertname,
        namespace=namespace_of(lead.labels),
        service=workload_of(lead.labels),
        title=(lead.annotations.get("summary") or "").strip()[:200],
    )
