"""IncidentWorkflow on the time-skipping server: every branch of the lifecycle, with durable timers skipped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.llm import LLMActivities
from config.settings import Settings
from frontdoor.gateway import IncidentGateway
from models.evidence import MetricEvidence, SeriesChange
from models.incident import Decision, IncidentSettings, IncidentState, Phase, PromSeries
from tests.fixtures.openai_stand_in import OpenAIStandIn, answer, server_error, text
from tests.harness import (
    FakeKubernetes,
    FakePrometheus,
    RecordingNotifier,
    alert,
    capture,
    incident_worker,
    notification,
    phases,
    resolved,
    state_of,
    wait_for,
    wait_for_phase,
)
from triage.identity import incident_workflow_id
from workflows.incident import IncidentWorkflow


@dataclass
class Rig:
    env: WorkflowEnvironment
    gateway: IncidentGateway
    prometheus: FakePrometheus
    notifier: RecordingNotifier
    task_queue: str
    kubernetes: FakeKubernetes

    @property
    def group_key(self) -> str:
        # One server serves every test: each test's incident has a group (and so a workflow id) of its own.
        return f'{{}}:{{alertname="HighErrorRate", test="{self.task_queue}"}}'

    def notification(self, *alerts):
        return notification(*alerts, group_key=self.group_key)

    def handle(self, workflow_id: str) -> WorkflowHandle:
        return self.env.client.get_workflow_handle_for(IncidentWorkflow.run, workflow_id)


def make_rig_factory(env: WorkflowEnvironment, task_queue: str, llm: LLMActivities | None = None):
    async def make(**overrides: object) -> AsyncIterator[Rig]:
        settings = Settings(_env_file=None, temporal_task_queue=task_queue)  # type: ignore[call-arg]
        incident_settings = IncidentSettings(**{"approval_timeout_s": 900, "verify_after_s": 300, **overrides})
        prometheus, notifier, kubernetes = FakePrometheus(), RecordingNotifier(), FakeKubernetes()
        async with incident_worker(env.client, task_queue, prometheus, notifier, kubernetes, llm):
            yield Rig(
                env,
                IncidentGateway(env.client, settings, incident_settings),
                prometheus,
                notifier,
                task_queue,
                kubernetes,
            )

    return make


@pytest_asyncio.fixture
async def rig(time_skipping_env: WorkflowEnvironment, task_queue: str, request: pytest.FixtureRequest):
    overrides = getattr(request, "param", {})
    async for value in make_rig_factory(time_skipping_env, task_queue)(**overrides):
        yield value


async def finish(rig: Rig, handle: WorkflowHandle, skip_s: float) -> IncidentState:
    """Let ``skip_s`` seconds of durable time pass, then take the workflow's result."""
    await rig.env.sleep(skip_s)
    return await handle.result()


async def open_incident(rig: Rig, *alerts) -> tuple[WorkflowHandle, IncidentState]:
    delivery = await rig.gateway.deliver(rig.notification(*alerts))
    # (Whether SignalWithStart started a run is asserted on the dev server: this server does not say.)
    handle = rig.handle(delivery.workflow_id)
    return handle, await wait_for_phase(handle, Phase.awaiting_approval)


async def test_approve_path_verifies_recovery_and_closes(rig: Rig) -> None:
    handle, waiting = await open_incident(rig)
    assert waiting.severity == "critical"
    assert waiting.diagnosis.category == "bad_deploy"
    assert waiting.plan is not None and waiting.plan.actions[0].type == "rollback"
    assert (waiting.plan.actions[0].namespace, waiting.plan.actions[0].target) == ("food", "search")
    assert rig.notifier.events == ["approval_requested"]
    # The investigation saw the incident's own series through the alert's expression.
    assert waiting.evidence.items[0].kind == "alert_expression"
    assert rig.prometheus.calls[0].expr.startswith("sum by (namespace, service)")

    rig.prometheus.series = []  # by verification time the expression no longer returns our series
    result = await handle.execute_update(
        IncidentWorkflow.decide, Decision(approve=True, by="alice", plan_id=waiting.plan.id)
    )
    assert result.accepted and result.by == "alice"
    await wait_for_phase(handle, Phase.verifying)  # after the governor and the executor (a dry run here)
    final = await finish(rig, handle, 301)

    assert final.phase == Phase.closed
    assert final.outcome == "resolved"
    assert phases(final) == [
        "triaging",
        "investigating",
        "diagnosing",
        "awaiting_approval",
        "remediating",
        "verifying",
        "resolved",
        "closed",
    ]
    assert [record.mode for record in final.actions_taken] == ["skipped"]
    assert final.verification[-1].outcome == "recovered" and final.verification[-1].method == "prometheus"
    assert final.decision is not None and final.decision.by == "alice" and final.acknowledged_at is not None
    # Verification waited the durable 5 minutes after the action.
    verify_event = next(e for e in final.timeline if e.kind == "verification")
    action_event = next(e for e in final.timeline if e.kind == "action")
    assert (verify_event.at - action_event.at).total_seconds() >= 300
    assert rig.notifier.events == ["approval_requested", "resolved", "closed"]
    await capture(handle, "approve_resolved")


async def test_reject_escalates_and_a_later_resolution_closes(rig: Rig) -> None:
    handle, waiting = await open_incident(rig)
    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=False, by="bob", reason="not the deploy"))
    escalated = await wait_for_phase(handle, Phase.escalated)
    assert escalated.escalation_reason == f"plan {waiting.plan.id} rejected by bob: not the deploy"
    assert escalated.actions_taken == []
    await wait_for(handle, lambda s: any(e.kind == "notified" and e.message == "escalated" for e in s.timeline))

    await rig.gateway.deliver(resolved(rig.notification()))
    final = await finish(rig, handle, 1)
    assert final.outcome == "resolved after escalation"
    assert rig.notifier.events == ["approval_requested", "escalated", "resolved", "closed"]
    await capture(handle, "reject_escalated_resolved")


async def test_no_decision_within_the_approval_timeout_escalates(rig: Rig) -> None:
    handle, _ = await open_incident(rig)
    await rig.env.sleep(899)
    assert (await state_of(handle)).phase == Phase.awaiting_approval
    await rig.env.sleep(2)
    escalated = await wait_for_phase(handle, Phase.escalated)
    assert escalated.escalation_reason == "no decision within 15m"
    # Escalated incidents wait (durably) for the alert to resolve, then close even if it never does.
    final = await finish(rig, handle, 86401)
    assert final.outcome == "escalated; not resolved within 24h"
    assert final.resolved_at is None
    await capture(handle, "approval_timeout")


async def test_resolution_before_approval_closes_without_acting(rig: Rig) -> None:
    handle, _ = await open_incident(rig)
    delivery = await rig.gateway.deliver(resolved(rig.notification()))
    assert delivery.action == "signalled"  # a resolved notification is a plain signal to the open incident
    final = await finish(rig, handle, 1)
    assert final.outcome == "resolved"
    assert final.actions_taken == [] and final.decision is None
    assert "remediating" not in phases(final)
    await capture(handle, "resolved_before_approval")


@pytest_asyncio.fixture
async def dev_rig(dev_server: WorkflowEnvironment, task_queue: str):
    # Low enough that the continue-as-new test crosses it with its 40 signals; high enough that an ordinary
    # incident (about 110 events up to its close, with a Slack update at every phase) does not.
    async for value in make_rig_factory(dev_server, task_queue)(max_history_events=150, verify_after_s=1):
        yield value


async def test_alerts_firing_again_as_the_incident_closes_open_its_next_run(dev_rig: Rig) -> None:
    # On the dev server: the closing run continues as new while signals arrive (see the continue-as-new test).
    rig = dev_rig
    rig.notifier.hold["resolved"] = asyncio.Event()
    handle, _ = await open_incident(rig)
    first_run = (await handle.describe()).run_id
    await rig.gateway.deliver(resolved(rig.notification()))
    await wait_for_phase(handle, Phase.resolved)  # the run is closing: its "resolved" notification is in flight

    # A late duplicate of the old firing (same startsAt) is no re-fire; a new firing (later startsAt) is.
    await rig.gateway.deliver(rig.notification(alert()))
    await rig.gateway.deliver(rig.notification(alert(starts_at=datetime(2026, 1, 1, 13, 0, tzinfo=UTC))))
    closing = await wait_for(handle, lambda s: any(e.kind == "alerts_fired_again" for e in s.timeline))
    assert [e.kind for e in closing.timeline].count("alerts_fired_again") == 1
    rig.notifier.hold["resolved"].set()

    reopened = await wait_for(handle, lambda s: s.phase == Phase.awaiting_approval and s.runs == 1)
    assert reopened.timeline[0].message.startswith("incident re-opened")
    assert [a.starts_at.hour for a in reopened.firing_alerts] == [13]
    assert (await handle.describe()).run_id != first_run
    previous = rig.env.client.get_workflow_handle(handle.id, run_id=first_run)
    assert (await previous.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    closed = await previous.query("state", result_type=IncidentState)
    assert closed.outcome == "resolved" and closed.phase == Phase.closed


async def test_failed_verification_escalates(rig: Rig) -> None:
    handle, _ = await open_incident(rig)
    rig.prometheus.series = [PromSeries(labels={"namespace": "food", "service": "search"}, value=0.4)]
    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice"))
    await rig.env.sleep(301)
    escalated = await wait_for_phase(handle, Phase.escalated)
    assert escalated.verification[-1].outcome == "still_failing"
    assert escalated.escalation_reason == "the alert condition still holds after remediation"
    await capture(handle, "verification_failed")


async def test_unavailable_prometheus_is_a_gap_and_verification_is_inconclusive(rig: Rig) -> None:
    rig.prometheus.error = ApplicationError(
        "Prometheus rejected the query: parse error", type="BadQuery", non_retryable=True
    )
    handle, waiting = await open_incident(rig)
    # The alert probe and the metric search met the same refusal: one gap. The unset sources are gaps too.
    assert sorted((g.source, g.reason) for g in waiting.evidence.gaps) == [
        ("alertmanager", "Alertmanager is not configured (set ALERTMANAGER_URL)"),
        ("loki", "Loki is not configured (set LOKI_URL)"),
        ("prometheus", "Prometheus rejected the query: parse error"),
    ]
    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice"))
    await rig.env.sleep(301)
    escalated = await wait_for_phase(handle, Phase.escalated)
    assert escalated.verification[-1].outcome == "inconclusive"
    assert "parse error" in (escalated.escalation_reason or "")
    assert len(escalated.evidence.gaps) == 3  # verification does not add evidence


async def test_duplicate_notifications_make_one_incident(rig: Rig) -> None:
    first = await rig.gateway.deliver(rig.notification())
    again = [await rig.gateway.deliver(rig.notification()) for _ in range(3)]
    assert {d.workflow_id for d in again} == {first.workflow_id}
    assert first.workflow_id == incident_workflow_id(rig.group_key)
    state = await wait_for(rig.handle(first.workflow_id), lambda s: s.notifications == 4)
    assert len(state.alerts) == 1
    assert [e.kind for e in state.timeline].count("alerts_firing") == 1

    # A new alert joining the group is recorded and raises nothing else.
    joined = await rig.gateway.deliver(rig.notification(alert(), alert("0000000000000002", service="cart")))
    assert joined.workflow_id == first.workflow_id
    state = await wait_for(rig.handle(first.workflow_id), lambda s: len(s.alerts) == 2)
    assert [e.kind for e in state.timeline].count("alerts_firing") == 2
    # Leave no activity in flight when this test's worker stops: the time-skipping server would not skip time
    # for the next test until that activity timed out.
    await wait_for_phase(rig.handle(first.workflow_id), Phase.awaiting_approval)


async def test_a_more_severe_alert_joining_raises_the_incident_severity(rig: Rig) -> None:
    # "error" is high severity: by the shipped policy a rollback of a high incident needs a person.
    handle, waiting = await open_incident(rig, alert(severity="error"))
    assert waiting.severity == "high"
    await rig.gateway.deliver(rig.notification(alert(severity="error"), alert("00000000000000aa", service="cart")))
    raised = await wait_for(handle, lambda s: s.severity == "critical")
    assert any(e.kind == "severity_raised" and e.message == "severity high -> critical" for e in raised.timeline)
    assert raised.phase == Phase.awaiting_approval  # the decision in flight is not disturbed


@pytest.mark.parametrize("rig", [{"approvers": ["alice"]}], indirect=True)
async def test_decide_validator_rejects_stale_plans_unknown_approvers_and_late_decisions(rig: Rig) -> None:
    handle, waiting = await open_incident(rig)

    async def refused(decision: Decision) -> ApplicationError:
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await handle.execute_update(IncidentWorkflow.decide, decision)
        assert isinstance(info.value.cause, ApplicationError)
        return info.value.cause

    stale = await refused(Decision(approve=True, by="alice", plan_id="plan-000000000000"))
    assert stale.type == "StalePlan" and waiting.plan.id in stale.message
    stranger = await refused(Decision(approve=True, by="mallory"))
    assert stranger.type == "UnknownApprover"
    # Rejected updates leave no trace in the incident: still waiting, no decision.
    state = await state_of(handle)
    assert state.phase == Phase.awaiting_approval and state.decision is None

    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=False, by="alice"))
    late = await refused(Decision(approve=True, by="alice"))
    assert late.type == "NoPendingPlan"
    await capture(handle, "validator_rejections")


async def test_continue_as_new_keeps_the_state(dev_rig: Rig) -> None:
    # On the real dev server: signals racing a continue-as-new are exactly where the time-skipping test
    # server diverges from a real one (it can lose the new run), and this path must hold on the real thing.
    rig = dev_rig
    handle, waiting = await open_incident(rig)
    first_run = (await handle.describe()).run_id
    # Each new alert is a signal and a workflow task: enough of them push the history past the limit.
    for index in range(40):
        await rig.gateway.deliver(rig.notification(alert(f"{index:016x}", service=f"svc{index}")))
    state = await wait_for(handle, lambda s: s.runs > 1 and len(s.alerts) == 41, timeout_s=30)
    assert (await handle.describe()).run_id != first_run
    assert state.phase == Phase.awaiting_approval
    assert state.plan is not None and state.plan.id == waiting.plan.id
    assert state.approval_deadline == waiting.approval_deadline
    assert any(e.kind == "continued_as_new" for e in state.timeline)
    await capture(rig.env.client.get_workflow_handle(handle.id, run_id=first_run), "continued_as_new")
    # The carried-over incident still takes its decision and finishes.
    rig.prometheus.series = []
    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice", plan_id=waiting.plan.id))
    final = await handle.result()
    assert final.outcome == "resolved" and final.workflow_id == waiting.workflow_id
    assert final.timeline[0].kind == "opened"


async def test_alert_without_runbook_escalates_with_unknown_diagnosis(rig: Rig) -> None:
    rig.kubernetes.rolled_out = False  # nothing points anywhere: the agent must abstain
    delivery = await rig.gateway.deliver(rig.notification(alert(alertname="SomethingOdd")))
    handle = rig.handle(delivery.workflow_id)
    state = await wait_for_phase(handle, Phase.escalated)
    assert state.diagnosis.category == "unknown" and state.diagnosis.confidence < 0.4
    assert state.plan is not None and [a.type for a in state.plan.actions] == ["escalate"]
    assert state.escalation_reason and "No runbook" in state.escalation_reason


# ---- the optional LLM step --------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def openai_stand_in() -> AsyncIterator[OpenAIStandIn]:
    async with OpenAIStandIn(api_key="sk-test") as stand_in:
        yield stand_in


@pytest_asyncio.fixture
async def llm_rig(own_time_skipping_env: WorkflowEnvironment, task_queue: str, openai_stand_in: OpenAIStandIn):
    llm = LLMActivities("sk-test", openai_stand_in.base_url, "test-model", max_retries=0)
    async for value in make_rig_factory(own_time_skipping_env, task_queue, llm)(llm=True):
        yield value


async def test_an_accepted_llm_answer_replaces_the_scored_diagnosis_and_its_cost_is_recorded(
    llm_rig: Rig, openai_stand_in: OpenAIStandIn
) -> None:
    openai_stand_in.script(
        answer(
            {
                "category": "application_error",
                "confidence": 0.62,
                "root_cause_namespace": "food",
                "root_cause_workload": "search",
                "explanation": "The rollout changed nothing the failing path uses.",
                "evidence": ["errors began after the rollout but in a route it did not touch"],
                "actions": [{"type": "escalate", "namespace": "", "target": ""}],
            }
        )
    )
    delivery = await llm_rig.gateway.deliver(llm_rig.notification())
    state = await wait_for_phase(llm_rig.handle(delivery.workflow_id), Phase.escalated)
    await capture(llm_rig.handle(delivery.workflow_id), "memory_and_llm_accepted")

    assert (state.diagnosis.category, state.diagnosis.confidence) == ("application_error", 0.62)
    assert state.diagnosis.runbook == "high-error-rate"
    assert state.plan is not None and [a.type for a in state.plan.actions] == ["escalate"]
    [step] = [event for event in state.timeline if event.kind == "llm"]
    assert step.data["used"] is True and step.data["model"] == "test-model"
    assert step.data["prompt_tokens"] > 0 and step.data["completion_tokens"] > 0
    # The model was shown the scored hypotheses and the rollback the scoring planned.
    [request] = openai_stand_in.requests
    assert "bad_deploy" in request.message("user") and "rollback" in request.message("user")


async def test_an_llm_failure_leaves_the_scored_diagnosis_and_records_why(
    llm_rig: Rig, openai_stand_in: OpenAIStandIn
) -> None:
    openai_stand_in.script(server_error())
    delivery = await llm_rig.gateway.deliver(llm_rig.notification())
    state = await wait_for_phase(llm_rig.handle(delivery.workflow_id), Phase.awaiting_approval)
    await capture(llm_rig.handle(delivery.workflow_id), "memory_and_llm_fallback")

    assert state.diagnosis.category == "bad_deploy"
    assert state.plan is not None and state.plan.actions[0].type == "rollback"
    [step] = [event for event in state.timeline if event.kind == "llm"]
    assert step.data["used"] is False and "HTTP 500" in step.data["fallback_reason"]


async def test_without_an_llm_configured_the_step_is_not_taken(rig: Rig) -> None:
    handle, _ = await open_incident(rig)
    state = await state_of(handle)
    assert not [event for event in state.timeline if event.kind == "llm"]


# ---- noise: watched, not paged ----------------------------------------------------------------------------


def _burst_that_is_over(rig: Rig) -> None:
    """The alert's error ratio rose, but over the last scrape interval it is back at its baseline; nothing else."""
    rig.kubernetes.rolled_out = False
    rig.prometheus.metric_evidence = MetricEvidence(
        findings=[
            SeriesChange(
                metric="error_ratio",
                workload="search",
                labels={"namespace": "food", "service": "search"},
                query="q",
                baseline=0.001,
                recent=0.12,
                change=0.119,
                score=12.0,
                direction="up",
                onset=datetime(2026, 1, 1, 11, 58, tzinfo=UTC),
                now=0.0,
                summary="share of requests failing with 5xx of search rose from 0.001 to 0.12; now 0",
            )
        ]
    )


# A one-second re-check in real time: these tests do not depend on the time-skipping server skipping ahead.
@pytest.mark.parametrize("rig", [{"verify_after_s": 1}], indirect=True)
async def test_noise_pages_nobody_and_closes_when_the_condition_is_gone_at_the_recheck(rig: Rig) -> None:
    _burst_that_is_over(rig)
    rig.prometheus.series = []  # at the re-check the alert expression returns nothing
    delivery = await rig.gateway.deliver(rig.notification())
    handle = rig.handle(delivery.workflow_id)
    final = await wait_for_phase(handle, Phase.closed)
    assert final.diagnosis.category == "noise"
    assert final.plan is not None and [a.type for a in final.plan.actions] == ["none"]
    assert "diagnosing -> verifying" in [e.message.split(":")[0] for e in final.timeline if e.kind == "phase"]
    assert final.outcome == "resolved" and final.escalation_reason is None
    assert "escalated" not in rig.notifier.events and "approval_requested" not in rig.notifier.events
    assert final.verification[-1].outcome == "recovered"


@pytest.mark.parametrize("rig", [{"verify_after_s": 1}], indirect=True)
async def test_noise_that_keeps_firing_at_the_recheck_escalates(rig: Rig) -> None:
    _burst_that_is_over(rig)  # and the alert expression still returns the incident's series at the re-check
    delivery = await rig.gateway.deliver(rig.notification())
    handle = rig.handle(delivery.workflow_id)
    # Escalated, and the people on call were told (the message update for the phase comes first).
    escalated = await wait_for(
        handle, lambda s: any(e.kind == "notified" and e.message == "escalated" for e in s.timeline)
    )
    assert escalated.escalation_reason == "the alert condition still holds: it did not recover by itself"
    assert "escalated" in rig.notifier.events
    await capture(handle, "noise_watched_then_escalated")


# ---- the second opinion before an automatic change ---------------------------------------------------------


def _llm_answer(category: str, actions: list[dict[str, str]]) -> dict:
    return {
        "category": category,
        "confidence": 0.8,
        "root_cause_namespace": "food",
        "root_cause_workload": "search",
        "explanation": "second look",
        "evidence": ["revision 7 rolled out five minutes before the errors"],
        "actions": actions,
    }


async def _medium_incident(rig: Rig) -> WorkflowHandle:
    # A warning (medium) incident whose rollback the shipped policy would make automatic at this confidence.
    delivery = await rig.gateway.deliver(rig.notification(alert(severity="warning")))
    return rig.handle(delivery.workflow_id)


async def test_an_automatic_change_goes_ahead_when_the_second_opinion_agrees(
    llm_rig: Rig, openai_stand_in: OpenAIStandIn
) -> None:
    rollback = {"type": "rollback", "namespace": "food", "target": "search"}
    openai_stand_in.script(answer(_llm_answer("bad_deploy", [rollback])), answer(_llm_answer("bad_deploy", [rollback])))
    state = await wait_for_phase(await _medium_incident(llm_rig), Phase.verifying)
    [opinion] = [e for e in state.timeline if e.kind == "second_opinion"]
    assert opinion.message.startswith("agrees: ")
    assert [r.mode for r in state.actions_taken] == ["skipped"]  # acted on (a dry run with no cluster to run it)
    assert len(openai_stand_in.requests) == 2  # the diagnosis, then the second opinion


async def test_without_the_second_opinions_agreement_a_person_must_approve(
    llm_rig: Rig, openai_stand_in: OpenAIStandIn
) -> None:
    rollback = {"type": "rollback", "namespace": "food", "target": "search"}
    escalate = {"type": "escalate", "namespace": "", "target": ""}
    openai_stand_in.script(
        answer(_llm_answer("bad_deploy", [rollback])), answer(_llm_answer("application_error", [escalate]))
    )
    state = await wait_for_phase(await _medium_incident(llm_rig), Phase.awaiting_approval)
    [opinion] = [e for e in state.timeline if e.kind == "second_opinion"]
    assert opinion.message.startswith("does not agree: ")
    assert state.plan is not None and state.plan.actions[0].requires_approval
    assert state.actions_taken == []


async def test_a_closed_incidents_report_opens_with_the_llms_summary(
    llm_rig: Rig, openai_stand_in: OpenAIStandIn
) -> None:
    paragraph = "Search failed after revision 7; alice approved the rollback and the errors stopped."
    openai_stand_in.script(
        answer(_llm_answer("bad_deploy", [{"type": "rollback", "namespace": "food", "target": "search"}])),
        text(paragraph),
    )
    delivery = await llm_rig.gateway.deliver(llm_rig.notification())
    handle = llm_rig.handle(delivery.workflow_id)
    await wait_for_phase(handle, Phase.awaiting_approval)
    llm_rig.prometheus.series = []
    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice"))
    final = await finish(llm_rig, handle, 301)

    assert final.outcome == "resolved" and final.report is not None
    assert paragraph in final.report
    await capture(handle, "llm_report_summary")
    summary_request = openai_stand_in.requests[-1]
    assert "# Incident report" in summary_request.message("user") and "response_format" not in summary_request.body


async def test_without_a_summary_the_report_is_the_deterministic_one(
    llm_rig: Rig, openai_stand_in: OpenAIStandIn
) -> None:
    openai_stand_in.script(
        answer(_llm_answer("bad_deploy", [{"type": "rollback", "namespace": "food", "target": "search"}])),
        server_error(),
    )
    delivery = await llm_rig.gateway.deliver(llm_rig.notification())
    handle = llm_rig.handle(delivery.workflow_id)
    await wait_for_phase(handle, Phase.awaiting_approval)
    llm_rig.prometheus.series = []
    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice"))
    final = await finish(llm_rig, handle, 301)

    assert final.report is not None and final.report.startswith("# Incident report")
    assert any(e.kind == "llm" and e.message.startswith("no report summary: HTTP 500") for e in final.timeline)
