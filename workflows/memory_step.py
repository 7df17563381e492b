"""Incident memory in workflow context: recall closed incidents of the same alert before diagnosing.

Memory is a prior, not evidence: when visibility cannot answer, the step says so in the timeline and the
diagnosis goes on without it (it is never an evidence gap and never fails the incident).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.memory import MemoryActivities
    from models.incident import IncidentState
    from models.memory import Memory, MemoryRequest
    from workflows.failures import failure_reason

MEMORY_PATCH = "incident-memory-v1"
_MEMORY_TIMEOUT = timedelta(seconds=30)
_MEMORY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


async def recall(state: IncidentState) -> Memory:
    request = MemoryRequest(alertname=state.alertname, namespace=state.namespace, service=state.service)
    try:
        return await workflow.execute_activity_method(
            MemoryActivities.recall_incidents,
            request,
            start_to_close_timeout=_MEMORY_TIMEOUT,
            retry_policy=_MEMORY_RETRY,
        )
    except ActivityError as err:
        return Memory(unavailable=f"recall failed: {failure_reason(err)}")


def describe(memory: Memory) -> str:
    if memory.unavailable:
        return f"no memory: {memory.unavailable}"
    if not memory.incidents:
        return "not seen before"
    confirmed = sum(1 for past in memory.incidents if past.confirmed)
    last = memory.incidents[0].line
    return f"seen before: {len(memory.incidents)} closed incident(s), {confirmed} confirmed; last {last}"
