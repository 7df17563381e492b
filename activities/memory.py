"""Recall closed incidents of the same alert on the same workload through Temporal visibility.

The incidents' own search attributes find them (``IncidentPhase = 'closed'``: completed runs, and runs still open
for feedback on their diagnosis). Each one's summary comes with the listing, in its memo; an incident closed by an
older version of the agent has none, and its final state (the workflow result) is read instead.

"Confirmed" means a person said so: they judged the diagnosis correct afterwards, or they named the real cause
(which then is the remembered category), or they approved the plan and the alert's own expression then recovered.
A diagnosis judged wrong without a cause is remembered, unconfirmed. Memory is a prior, not evidence: when
visibility cannot answer, the incident goes on without it.
"""

from __future__ import annotations

import asyncio

import structlog
from pydantic import ValidationError
from temporalio import activity
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError

from models.incident import IncidentState
from models.memory import Memory, MemoryRequest, PastIncident
from models.stats import SUMMARY_MEMO_KEY, IncidentSummary
from reports.stats import incident_summary
from workflows.search_attributes import (
    ALERT_NAME,
    INCIDENT_NAMESPACE,
    INCIDENT_PHASE,
    INCIDENT_SERVICE,
    keyword_value,
    quoted,
)

log = structlog.get_logger(__name__)


def memory_query(request: MemoryRequest) -> str:
    """The visibility query for closed incidents of this alert on this workload (values quoted safely)."""
    return (
        # The incidents' own values as they were published (an over-long label is kept cut to a prefix).
        f"{ALERT_NAME.name} = {quoted(keyword_value(request.alertname))}"
        f" AND {INCIDENT_NAMESPACE.name} = {quoted(keyword_value(request.namespace))}"
        f" AND {INCIDENT_SERVICE.name} = {quoted(keyword_value(request.service))}"
        f" AND {INCIDENT_PHASE.name} = 'closed'"
    )


def past_incident(workflow_id: str, run_id: str, summary: IncidentSummary) -> PastIncident:
    feedback = summary.feedback
    category, confirmed = summary.category, summary.recovered_after_approval
    if feedback is not None:
        # People's word after the fact outranks what the alert did: a fix can "work" for the wrong reason.
        confirmed = feedback.verdict == "correct" or feedback.cause is not None
        category = feedback.cause if feedback.verdict == "wrong" and feedback.cause is not None else category
    return PastIncident(
        workflow_id=workflow_id,
        run_id=run_id,
        closed_at=summary.closed_at,
        category=category,
        confidence=summary.confidence,
        root_cause=summary.root_cause,
        outcome=summary.outcome,
        confirmed=confirmed,
        judged_by=feedback.by if feedback is not None else None,
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
        recalled = await asyncio.gather(*(self._recall(execution) for execution in found))
        incidents = sorted(
            (incident for incident in recalled if incident is not None),
            key=lambda incident: incident.closed_at.timestamp() if incident.closed_at else 0.0,
            reverse=True,
        )
        log.info("memory", query=query, found=len(found), recalled=len(incidents))
        return Memory(incidents=incidents)

    async def _recall(self, execution: WorkflowExecution) -> PastIncident | None:
        summary = await summary_of(execution)
        if summary is None and execution.status == WorkflowExecutionStatus.COMPLETED:
            summary = await self._summary_from_result(execution)
        if summary is None:
            log.warning("memory_unreadable", workflow_id=execution.id, run_id=execution.run_id)
            return None
        return past_incident(execution.id, execution.run_id or "", summary)

    async def _summary_from_result(self, execution: WorkflowExecution) -> IncidentSummary | None:
        """An incident closed before summaries were kept in the memo: its final state is its result."""
        handle = self._client.get_workflow_handle(execution.id, run_id=execution.run_id, result_type=IncidentState)
        try:
            state = await handle.result(follow_runs=False)
        except (RPCError, WorkflowFailureError) as err:
            log.warning("memory_result_unreadable", workflow_id=execution.id, error=str(err))
            return None
        return incident_summary(state)


async def summary_of(execution: WorkflowExecution) -> IncidentSummary | None:
    """The incident summary a closed run keeps in its memo, or None (none kept, or not readable)."""
    try:
        raw = (await execution.memo()).get(SUMMARY_MEMO_KEY)
    except Exception as err:  # a memo another tool wrote in another encoding
        log.warning("memo_unreadable", workflow_id=execution.id, error=repr(err))
        return None
    if raw is None:
        return None
    try:
        return IncidentSummary.model_validate(raw)
    except ValidationError as err:
        log.warning("memo_summary_invalid", workflow_id=execution.id, error=str(err))
        return None
