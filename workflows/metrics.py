"""The agent's own metrics from inside IncidentWorkflow, through the Temporal SDK's workflow meter.

``workflow.metric_meter()`` is replay-safe: the SDK drops what a workflow records while it replays history (after a
worker restart, a sticky-cache eviction, a query on an evicted run), so each phase change is counted once, by the
worker that made it. Recording a metric is not a workflow command: history is the same with or without it, so no
``workflow.patched`` guards it. With ``METRICS_PORT`` the counters land on the worker's ``/metrics`` endpoint,
with the SDK's ``namespace``, ``task_queue`` and ``workflow_type`` labels.
"""

from __future__ import annotations

from temporalio import workflow

from models.incident import IncidentState, Phase
from reports.stats import resolution_of

PHASES_ENTERED = "incident_agent_incident_phases_entered_total"
INCIDENTS_CLOSED = "incident_agent_incidents_closed_total"


def phase_entered(phase: Phase) -> None:
    workflow.metric_meter().create_counter(PHASES_ENTERED, "Incidents entering each phase").add(
        1, {"phase": phase.value}
    )


def incident_closed(state: IncidentState) -> None:
    """At close: how it ended (the stats' resolution: auto_resolved, approved, escalated, other), its severity and
    its diagnosed category, each from a closed set (the free-text ``outcome`` would make a series per incident)."""
    workflow.metric_meter().create_counter(INCIDENTS_CLOSED, "Incidents closed, by outcome").add(
        1,
        {
            "outcome": resolution_of(state),
            "severity": state.severity.value,
            "category": state.diagnosis.category.value,
        },
    )
