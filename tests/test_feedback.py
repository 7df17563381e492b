"""Feedback on the diagnosis: a closed incident stays open (phase closed) for a verdict, records it as a search
attribute, in its memo and timeline, and completes on the verdict, at the end of the window, or on a re-fire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from frontdoor.gateway import FeedbackRefused, IncidentNotFound
from models.incident import Category, Feedback, IncidentInput, IncidentState, Phase
from models.stats import SUMMARY_MEMO_KEY, IncidentSummary
from tests.harness import alert, capture, resolved, wait_for, wait_for_phase
from tests.test_incident_workflow import Rig, make_rig_factory, open_incident
from workflows.incident import (
    BAD_FEEDBACK,
    FEEDBACK_RECORDED,
    NO_DIAGNOSIS,
    UNKNOWN_APPROVER,
    IncidentWorkflow,
)
from workflows.search_attributes import DIAGNOSIS_FEEDBACK, INCIDENT_PHASE

WINDOW_S = 3600.0


@pytest_asyncio.fixture
async def rig(time_skipping_env: WorkflowEnvironment, task_queue: str, request: pytest.FixtureRequest):
    async for value in make_rig_factory(time_skipping_env, task_queue)(**getattr(request, "param", {})):
        yield value


@pytest_asyncio.fixture
async def windowed(own_time_skipping_env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Rig]:
    """Incidents with a one-hour feedback window, on a time-skipping server of the test's own (time is skipped)."""
    async for value in make_rig_factory(own_time_skipping_env, task_queue)(feedback_window_s=WINDOW_S):
        yield value


async def close_by_resolution(rig: Rig) -> tuple[str, IncidentState]:
    """An incident that reached a plan, then closed because Alertmanager said every alert resolved."""
    handle, _ = await open_incident(rig)
    await rig.gateway.deliver(resolved(rig.notification()))
    return handle.id, await wait_for(
        handle, lambda s: s.phase == Phase.closed and s.feedback_until is not None, timeout_s=30
    )


async def test_a_closed_incident_waits_for_a_verdict_then_records_it_everywhere(windowed: Rig) -> None:
    rig = windowed
    workflow_id, closed = await close_by_resolution(rig)
    handle = rig.handle(workflow_id)
    assert closed.diagnosis.category == Category.bad_deploy
    assert closed.feedback_until == closed.closed_at + timedelta(seconds=WINDOW_S)
    described = await handle.describe()
    assert described.status == WorkflowExecutionStatus.RUNNING
    assert described.typed_search_attributes.get(INCIDENT_PHASE) == "closed"
    summary = IncidentSummary.model_validate((await described.memo())[SUMMARY_MEMO_KEY])
    assert (summary.resolution, summary.category, summary.feedback) == ("auto_resolved", Category.bad_deploy, None)
    closing = next(n for n in rig.notifier.sent if n.event == "closed")
    assert closing.feedback_open and closing.feedback is None  # the message asks "Diagnosis correct?"

    record = await rig.gateway.feedback(
        workflow_id, Feedback(verdict="wrong", by="alice", cause=Category.oom_kill, note="the heap, not the deploy")
    )
    assert (record.verdict, record.cause, record.diagnosed, record.by) == ("wrong", "oom_kill", "bad_deploy", "alice")

    final = await handle.result()
    assert final.feedback == record and final.feedback_until is None
    # It completed on the verdict, not at the end of the window.
    assert (await handle.describe()).close_time - final.closed_at < timedelta(seconds=60)  # type: ignore[operator]
    described = await handle.describe()
    assert described.typed_search_attributes.get(DIAGNOSIS_FEEDBACK) == "wrong"
    remembered = IncidentSummary.model_validate((await described.memo())[SUMMARY_MEMO_KEY])
    assert remembered.feedback == record
    event = next(e for e in final.timeline if e.kind == "feedback")
    assert event.message == ("diagnosis bad_deploy judged wrong (it was oom_kill) by alice: the heap, not the deploy")
    last = rig.notifier.sent[-1]
    assert (last.event, last.feedback, last.feedback_open) == ("feedback", record, False)
    await capture(handle, "feedback_recorded")

    # The window is over with the run: a late verdict meets no incident.
    with pytest.raises(IncidentNotFound):
        await rig.gateway.feedback(workflow_id, Feedback(verdict="correct", by="bob"))


async def test_without_a_verdict_the_window_ends_and_the_controls_go_away(windowed: Rig) -> None:
    rig = windowed
    workflow_id, closed = await close_by_resolution(rig)
    handle = rig.handle(workflow_id)
    await rig.env.sleep(WINDOW_S + 1)  # the time-skipping server jumps over the hour
    final = await handle.result()

    assert final.feedback is None and final.feedback_until is None
    assert final.timeline[-1].kind == "feedback_closed"
    assert (await handle.describe()).close_time - closed.closed_at >= timedelta(seconds=WINDOW_S)  # type: ignore[operator]
    last = rig.notifier.sent[-1]
    assert (last.event, last.feedback_open) == ("feedback_closed", False)
    assert (await handle.describe()).typed_search_attributes.get(DIAGNOSIS_FEEDBACK) is None
    await capture(handle, "feedback_window_closed")


async def test_a_verdict_given_before_the_close_needs_no_window(windowed: Rig) -> None:
    rig = windowed
    handle, waiting = await open_incident(rig)
    await rig.gateway.feedback(handle.id, Feedback(verdict="correct", by="alice"))
    await rig.gateway.deliver(resolved(rig.notification()))
    final = await handle.result()

    assert final.feedback is not None and final.feedback.diagnosed == waiting.diagnosis.category
    assert final.feedback_until is None and all(e.kind != "feedback_closed" for e in final.timeline)
    assert (await handle.describe()).close_time - final.closed_at < timedelta(seconds=60)  # type: ignore[operator]
    closing = next(n for n in rig.notifier.sent if n.event == "closed")
    assert closing.feedback == final.feedback and not closing.feedback_open
    assert rig.notifier.events[-1] == "closed"  # nothing more to say after the closing message
    memo = IncidentSummary.model_validate((await (await handle.describe()).memo())[SUMMARY_MEMO_KEY])
    assert memo.feedback == final.feedback


@pytest.mark.parametrize("rig", [{"approvers": ["alice"]}], indirect=True)
async def test_the_validator_refuses_unknown_judges_contradictions_and_second_verdicts(rig: Rig) -> None:
    handle, waiting = await open_incident(rig)
    assert waiting.diagnosis.category == Category.bad_deploy

    async def refused(feedback: Feedback) -> str:
        with pytest.raises(FeedbackRefused) as info:
            await rig.gateway.feedback(handle.id, feedback)
        return info.value.kind

    assert await refused(Feedback(verdict="correct", by="mallory")) == UNKNOWN_APPROVER
    assert await refused(Feedback(verdict="wrong", by="alice", cause=Category.bad_deploy)) == BAD_FEEDBACK
    assert await refused(Feedback(verdict="correct", by="alice", cause=Category.oom_kill)) == BAD_FEEDBACK
    assert (await state_feedback(rig, handle.id)) is None  # nothing a refusal touched

    accepted = await rig.gateway.feedback(handle.id, Feedback(verdict="wrong", by="alice"))
    assert accepted.cause is None
    assert await refused(Feedback(verdict="correct", by="alice")) == FEEDBACK_RECORDED
    await rig.gateway.deliver(resolved(rig.notification()))  # closes: no window (the rig's window is 0)
    final = await handle.result()
    assert final.feedback == accepted and [e.kind for e in final.timeline].count("feedback") == 1


async def state_feedback(rig: Rig, workflow_id: str) -> object:
    return (await rig.gateway.state(workflow_id)).feedback


async def test_an_incident_with_no_diagnosis_yet_has_nothing_to_judge(windowed: Rig) -> None:
    # Started by hand with no alerts: it waits in "received" with no plan. (On a server of the test's own: the
    # terminated run's first notification may still be in flight, which would stall a shared server's clock.)
    rig = windowed
    handle = await rig.env.client.start_workflow(
        IncidentWorkflow.run, IncidentInput(), id=f"incident-nodiag-{rig.task_queue}", task_queue=rig.task_queue
    )
    await wait_for_phase(handle, Phase.received)
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(IncidentWorkflow.feedback, Feedback(verdict="correct", by="alice"))
    assert isinstance(info.value.cause, ApplicationError) and info.value.cause.type == NO_DIAGNOSIS
    await handle.terminate("test over")


@pytest_asyncio.fixture
async def dev_windowed(dev_server: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Rig]:
    async for value in make_rig_factory(dev_server, task_queue)(feedback_window_s=WINDOW_S, verify_after_s=1):
        yield value


async def test_alerts_firing_again_during_the_window_open_the_groups_next_run(dev_windowed: Rig) -> None:
    rig = dev_windowed
    workflow_id, _ = await close_by_resolution(rig)
    handle = rig.handle(workflow_id)
    first_run = (await handle.describe()).run_id
    listed = await rig.gateway.list_incidents(open_only=True)
    assert all(incident["workflow_id"] != workflow_id for incident in listed)  # closed, though still running

    await rig.gateway.deliver(rig.notification(alert(starts_at=alert().starts_at + timedelta(hours=1))))
    reopened = await wait_for(handle, lambda s: s.phase == Phase.awaiting_approval and s.runs == 1, timeout_s=30)
    assert reopened.timeline[0].message.startswith("incident re-opened")
    previous = rig.env.client.get_workflow_handle(workflow_id, run_id=first_run)
    assert (await previous.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    before = await previous.query("state", result_type=IncidentState)
    assert before.phase == Phase.closed and before.feedback is None
    kinds = [e.kind for e in before.timeline]
    assert kinds.index("alerts_fired_again") < kinds.index("feedback_closed")
    # The new run remembers the run the window was holding open (read from its memo).
    assert workflow_id in [past.workflow_id for past in reopened.seen_before]
