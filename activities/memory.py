"""Recall closed incidents of the same alert on the same workload through Temporal visibility.

The incidents' own search attributes find them; each one's final state (its workflow result) says what the
diagnosis was and whether a person's approved fix then recovered the alert, which is what "confirmed" means here.
Memory is a prior, not evidence: when visibility cannot answer, the incident goes on without it.
"""

from __future__ import annotations

import asyncio

import structlog
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError

from models.incident import IncidentState
from models.memory import Memory, MemoryRequest, PastIncident
from workflows.search_attributes import ALERT_NAME, INCIDENT_NAMESPACE, INCIDENT_SERVICE

log = structlog.get_logger(__name__)


def memory_query(request: MemoryRequest) -> str:
    """The visibility query for closed incidents of this alert on this workload (values quoted safely)."""

    def quoted(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return (
        f"{ALERT_NAME.name} = {quoted(request.alertname)}"
        f" AND {INCIDENT_NAMESPACE.name} = {quoted(request.namespace)}"
        f" AND {INCIDENT_SERVICE.name} = {quoted(request.service)}"
        " AND ExecutionStatus = 'Completed'"
    )


def past_incident(workflow_id: str, run_id: str, state: IncidentState) -> PastIncident:
    last = state.verification[-1].outcome if state.verification else None
    approved = state.decision is not None and state.decision.approve
    return PastIncident(
        workflow_id=workflow_id,
        run_id=run_id,
        closed_at=state.closed_at,
        category=state.diagnosis.category,
        confidence=state.diagnosis.confidence,
        root_cause=state.diagnosis.root_cause,
        outcome=state.outcome or "",
        confirmed=approved and last == "recovered",
    )


class MemoryActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn
    async def recall_incidents(self, request: MemoryRequest) -> Memory:
        if not (request.alertname and request.service):
            return Memory(unavailable="the alert names no workload to remember")
        query = memory_query(request)
        try:
            found = [w async for w in self._client.list_workflows(query, limit=request.limit)]
        except RPCError as err:
            log.warning("memory_unavailable", error=str(err))
            return Memory(unavailable=f"Temporal visibility did not answer: {err}")
        recalled = await asyncio.gather(*(self._recall(w.id, w.run_id) for w in found))
        incidents = sorted(
            (incident for incident in recalled if incident is not None),
            key=lambda incident: incident.closed_at.timestamp() if incident.closed_at else 0.0,
            reverse=True,
        )
        log.info("memory", query=query, found=len(found), recalled=len(incidents))
        return Memory(incidents=incidents)

    async def _recall(self, workflow_id: str, run_id: str | None) -> PastIncident | None:
        handle = self._client.get_workflow_handle(workflow_id, run_id=run_id, result_type=IncidentState)
        try:
            state = await handle.result(follow_runs=False)
        except (RPCError, WorkflowFailureError) as err:
            log.warning("memory_unreadable", workflow_id=workflow_id, error=str(err))
            return None
        return past_incident(workflow_id, run_id or "", state)
