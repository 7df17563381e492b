"""Incident memory: closed incidents of the same alert on the same workload, recalled through Temporal visibility
(the real dev server) and used as a prior by the diagnosis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.memory import MemoryActivities, memory_query, past_incident
from config.settings import Settings
from diagnosis.engine import weigh
from diagnosis.facts import facts_of
from frontdoor.gateway import IncidentGateway
from models.incident import (
    Category,
    Decision,
    DecisionRecord,
    Evidence,
    Feedback,
    FeedbackRecord,
    IncidentSettings,
    IncidentState,
    PastIncident,
    Phase,
    VerificationRecord,
    Workload,
)
from models.memory import MemoryRequest
from reports.stats import incident_summary
from tests.harness import RUNBOOKS, FakePrometheus, RecordingNotifier, alert, incident_worker, notification, wait_for
from triage.planning import triage
from triage.runbooks import find_runbook
from workflows.incident import IncidentWorkflow
from workflows.search_attributes import search_attribute_updates

AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_the_query_selects_closed_incidents_of_the_alert_on_the_workload_and_quotes_values() -> None:
    query = memory_query(MemoryRequest(alertname="HighErrorRate", namespace="food", service="it's"))
    assert query == (
        "AlertName = 'HighErrorRate' AND IncidentNamespace = 'food' AND IncidentService = 'it\\'s'"
        " AND IncidentPhase = 'closed'"
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
    past = past_incident("incident-1", "run-1", incident_summary(_closed(approve=approve, verified=verified)))
    assert past.confirmed is confirmed and past.judged_by is None
    assert (past.category, past.root_cause.workload) == (Category.bad_deploy, "search")
    assert "bad_deploy" in past.line and "incident-1" in past.line


@pytest.mark.parametrize(
    ("verdict", "cause", "remembered", "confirmed"),
    [
        ("correct", None, Category.bad_deploy, True),
        ("wrong", Category.oom_kill, Category.oom_kill, True),  # the person's cause is what is remembered
        ("wrong", None, Category.bad_deploy, False),  # wrong, cause unknown: even a fix that "worked" confirms nothing
    ],
)
def test_a_verdict_on_the_diagnosis_outranks_what_the_alert_did(
    verdict: str, cause: Category | None, remembered: Category, confirmed: bool
) -> None:
    state = _closed(approve=True, verified="recovered")
    state.feedback = FeedbackRecord(verdict=verdict, by="alice", cause=cause, at=AT, diagnosed=Category.bad_deploy)  # type: ignore[arg-type]
    past = past_incident("incident-1", "run-1", incident_summary(state))
    assert (past.category, past.confirmed, past.judged_by) == (remembered, confirmed, "alice")
    assert f"({'confirmed' if confirmed else 'not confirmed'} by alice)" in past.line


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


async def _memo_in_visibility(env: WorkflowEnvironment, workflow_id: str, ready: Callable[[dict], bool]) -> None:
    query = f"WorkflowId = '{workflow_id}' AND IncidentPhase = 'closed'"
    for _ in range(100):
        for execution in [w async for w in env.client.list_workflows(query)]:
            if ready(dict(await execution.memo())):
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id} never showed the expected memo in visibility")


async def test_a_verdict_on_a_closed_incident_is_what_the_next_one_remembers(
    dev_server: WorkflowEnvironment, task_queue: str
) -> None:
    settings = Settings(_env_file=None, temporal_task_queue=task_queue)  # type: ignore[call-arg]
    windowed = IncidentSettings(verify_after_s=1, feedback_window_s=3600)
    gateway = IncidentGateway(dev_server.client, settings, windowed)
    prometheus, notifier = FakePrometheus(), RecordingNotifier()
    service = f"verdict-{task_queue}"

    async def incident(tag: str) -> tuple[str, IncidentState]:
        delivery = await gateway.deliver(notification(alert(service=service), group_key=f"{{}}:{{{tag}={task_queue}}}"))
        handle = dev_server.client.get_workflow_handle_for(IncidentWorkflow.run, delivery.workflow_id)
        return delivery.workflow_id, await wait_for(handle, lambda s: s.phase == Phase.awaiting_approval, timeout_s=30)

    async with incident_worker(dev_server.client, task_queue, prometheus, notifier):
        first, _ = await incident("first")
        first_handle = dev_server.client.get_workflow_handle_for(IncidentWorkflow.run, first)
        prometheus.series = []  # the approved fix "works"
        await first_handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice"))
        await wait_for(first_handle, lambda s: s.phase == Phase.closed and s.feedback_until is not None, timeout_s=30)
        await _memo_in_visibility(dev_server, first, lambda memo: "incident" in memo)

        prometheus.series = FakePrometheus().series
        _, second = await incident("second")
        # Still open for feedback, the first incident is remembered from its memo, confirmed by the recovery.
        [past] = second.seen_before
        assert (past.workflow_id, past.category, past.confirmed, past.judged_by) == (
            first,
            Category.bad_deploy,
            True,
            None,
        )

        # Afterwards, the team finds the fix worked by chance: the real cause was a failing dependency.
        await gateway.feedback(first, Feedback(verdict="wrong", by="alice", cause=Category.dependency_failure))
        final = await first_handle.result()
        assert final.feedback is not None and final.feedback.cause == Category.dependency_failure
        await _memo_in_visibility(dev_server, first, lambda memo: bool(memo["incident"].get("feedback")))
        _, third = await incident("third")

    [past] = third.seen_before
    assert (past.workflow_id, past.category, past.confirmed, past.judged_by) == (
        first,
        Category.dependency_failure,
        True,
        "alice",
    )
    assert third.diagnosis.hypotheses[0].category == Category.bad_deploy  # memory is a prior, not evidence
    recalled = next(e.message for e in third.timeline if e.kind == "memory")
    assert "1 confirmed" in recalled and "dependency_failure (confirmed by alice)" in recalled, recalled


@workflow.defn(name="LegacyIncident", sandboxed=False)
class LegacyIncident:
    """An incident as closed by a version of the agent that kept no summary in its memo: search attributes and the
    final state as the result, nothing else."""

    @workflow.run
    async def run(self, state: IncidentState) -> IncidentState:
        workflow.upsert_search_attributes(search_attribute_updates(state))
        return state


async def test_an_incident_closed_before_memos_is_read_from_its_result(
    dev_server: WorkflowEnvironment, task_queue: str
) -> None:
    service = f"legacy-{task_queue}"
    state = _closed(approve=True, verified="recovered")
    state.alertname, state.namespace, state.service, state.phase = "HighErrorRate", "food", service, Phase.closed
    async with Worker(dev_server.client, task_queue=task_queue, workflows=[LegacyIncident]):
        await dev_server.client.execute_workflow(
            LegacyIncident.run, state, id=f"legacy-{task_queue}", task_queue=task_queue
        )
    memory = MemoryActivities(dev_server.client)
    request = MemoryRequest(alertname="HighErrorRate", namespace="food", service=service)
    for _ in range(100):
        recalled = await memory.recall_incidents(request)
        if recalled.incidents:
            break
        await asyncio.sleep(0.1)
    [past] = recalled.incidents
    assert (past.workflow_id, past.category, past.confirmed) == (f"legacy-{task_queue}", Category.bad_deploy, True)
