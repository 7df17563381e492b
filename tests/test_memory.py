"""Incident memory: closed incidents of the same alert on the same workload, recalled through Temporal visibility
(the real dev server) and used as a prior by the diagnosis."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.memory import memory_query, past_incident
from config.settings import Settings
from diagnosis.engine import weigh
from diagnosis.facts import facts_of
from frontdoor.gateway import IncidentGateway
from models.incident import (
    Category,
    Decision,
    DecisionRecord,
    Evidence,
    IncidentSettings,
    IncidentState,
    PastIncident,
    Phase,
    VerificationRecord,
    Workload,
)
from models.memory import MemoryRequest
from tests.harness import RUNBOOKS, FakePrometheus, RecordingNotifier, alert, incident_worker, notification, wait_for
from triage.planning import triage
from triage.runbooks import find_runbook
from workflows.incident import IncidentWorkflow

AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_the_query_selects_closed_incidents_of_the_alert_on_the_workload_and_quotes_values() -> None:
    query = memory_query(MemoryRequest(alertname="HighErrorRate", namespace="food", service="it's"))
    assert query == (
        "AlertName = 'HighErrorRate' AND IncidentNamespace = 'food' AND IncidentService = 'it\\'s'"
        " AND ExecutionStatus = 'Completed'"
    )


def _closed(*, approve: bool | None, verified: str | None) -> IncidentState:
    state = IncidentState(workflow_id="incident-1", outcome="resolved", closed_at=AT)
    state.diagnosis.category = Category.bad_deploy
    state.diagnosis.root_cause = Workload(namespace="food", workload="search")
    if approve is not None:
        state.decision = DecisionRecord(approve=approve, by="alice", at=AT)
    if verified is not None:
        state.verification = [VerificationRecord(at=AT, method="prometheus", outcome=verified, detail="")]  # type: ignore[arg-type]
    return state


@pytest.mark.parametrize(
    ("approve", "verified", "confirmed"),
    [(True, "recovered", True), (True, "still_failing", False), (False, None, False), (None, None, False)],
)
def test_a_past_cause_is_confirmed_only_by_an_approved_fix_that_recovered(
    approve: bool | None, verified: str | None, confirmed: bool
) -> None:
    past = past_incident("incident-1", "run-1", _closed(approve=approve, verified=verified))
    assert past.confirmed is confirmed
    assert (past.category, past.root_cause.workload) == (Category.bad_deploy, "search")
    assert "bad_deploy" in past.line and "incident-1" in past.line


def _weighed(seen: list[PastIncident]) -> dict[Category, float]:
    alerts = [alert()]
    result = triage(alerts, RUNBOOKS)
    runbook = find_runbook(RUNBOOKS, "HighErrorRate", alerts[0].labels)
    facts = facts_of(alerts, result, Evidence(), seen)
    return {tally.category: probability for tally, probability in weigh(facts, runbook)}


def test_memory_alone_cannot_carry_a_diagnosis_but_raises_a_supported_cause() -> None:
    confirmed = [
        PastIncident(workflow_id=f"incident-{i}", run_id="r", category=Category.application_error, confirmed=True)
        for i in range(3)
    ]
    unconfirmed = [p.model_copy(update={"confirmed": False}) for p in confirmed]
    # With no evidence at all, even three confirmed past causes stay under the cap of an unsupported cause.
    assert _weighed(confirmed)[Category.application_error] <= 0.2
    assert _weighed(unconfirmed) == _weighed([])


async def _closed_in_visibility(env: WorkflowEnvironment, workflow_id: str) -> None:
    query = f"WorkflowId = '{workflow_id}' AND ExecutionStatus = 'Completed'"
    for _ in range(100):
        if [w async for w in env.client.list_workflows(query)]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id} never showed as completed in visibility")


async def test_a_second_incident_of_the_alert_remembers_the_first_and_its_confirmed_cause(
    dev_server: WorkflowEnvironment, task_queue: str
) -> None:
    settings = Settings(_env_file=None, temporal_task_queue=task_queue)  # type: ignore[call-arg]
    gateway = IncidentGateway(dev_server.client, settings, IncidentSettings(verify_after_s=1))
    prometheus, notifier = FakePrometheus(), RecordingNotifier()
    service = f"memo-{task_queue}"  # this test's own workload: other tests' incidents are not its memory
    async with incident_worker(dev_server.client, task_queue, prometheus, notifier):
        first = await gateway.deliver(notification(alert(service=service), group_key=f"{{}}:{{first={task_queue}}}"))
        handle: WorkflowHandle = dev_server.client.get_workflow_handle_for(IncidentWorkflow.run, first.workflow_id)
        waiting = await wait_for(handle, lambda s: s.phase == Phase.awaiting_approval, timeout_s=30)
        assert waiting.seen_before == [] and any(e.message == "not seen before" for e in waiting.timeline)
        prometheus.series = []  # the approved fix works: the alert expression recovers
        await handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice"))
        closed = await handle.result()
        assert closed.outcome == "resolved"
        await _closed_in_visibility(dev_server, first.workflow_id)

        prometheus.series = FakePrometheus().series  # the alert fires again
        second = await gateway.deliver(notification(alert(service=service), group_key=f"{{}}:{{second={task_queue}}}"))
        state = await wait_for(
            dev_server.client.get_workflow_handle_for(IncidentWorkflow.run, second.workflow_id),
            lambda s: s.phase == Phase.awaiting_approval,
            timeout_s=30,
        )

    [past] = state.seen_before
    assert (past.workflow_id, past.category, past.confirmed) == (first.workflow_id, Category.bad_deploy, True)
    cited = state.diagnosis.hypotheses[0].evidence
    assert any(line.startswith("for (+0.5): seen before: 1 closed incident") for line in cited)
    assert state.diagnosis.confidence > waiting.diagnosis.confidence
