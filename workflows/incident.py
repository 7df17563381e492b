"""IncidentWorkflow: one durable incident per Alertmanager group.

The run loop is a state machine over ``state.phase``. Every wait has its deadline stored in the state, so a
continue-as-new (or a crash and replay) resumes exactly where the incident was:

    received -> triaging -> investigating -> diagnosing -> awaiting_approval | remediating -> verifying
             -> resolved | escalated -> closed

Workflow code here is deterministic: time comes from ``workflow.now()``, ids from ``workflow.uuid4()``, and the
world is touched only through activities.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.errors import BAD_QUERY, SOURCE_FORBIDDEN, SOURCE_MISCONFIGURED, SOURCE_NOT_CONFIGURED
    from activities.notify import ConsoleNotifier
    from activities.pagerduty import PagerDutyActivities
    from activities.prometheus import PrometheusActivities
    from activities.triage import TriageActivities
    from analysis.budget import bound_evidence
    from analysis.evidence import (
        describe_kubernetes,
        describe_logs,
        describe_metrics,
        describe_related,
        fold_evidence,
    )
    from config.durations import format_duration
    from models.incident import (
        Action,
        ActionMode,
        ActionRecord,
        ActionType,
        AlertNotification,
        Decision,
        DecisionRecord,
        DecisionResult,
        DiagnoseRequest,
        DiagnoseResult,
        EvidenceGap,
        EvidenceItem,
        Feedback,
        FeedbackRecord,
        IncidentInput,
        IncidentSettings,
        IncidentState,
        Notification,
        PageRequest,
        Phase,
        Plan,
        PromQueryRequest,
        PromQueryResult,
        TimelineEvent,
        TriageRequest,
        TriageResult,
        VerificationOutcome,
        VerificationRecord,
    )
    from models.remediation import ExecuteRequest, ReportOutcome, Reservation, UndoRequest
    from models.stats import SUMMARY_MEMO_KEY
    from reports.markdown import render_report
    from reports.stats import incident_summary
    from triage.alerts import fires_again, merge_notification
    from triage.labels import highest_severity
    from triage.planning import evidence_request
    from triage.summary import details_markdown, one_line_summary
    from workflows.evidence import gather_evidence
    from workflows.failures import failure_reason, failure_type
    from workflows.llm_step import LLM_PATCH, LLM_SUMMARY_PATCH, ask_llm, merged, summarize
    from workflows.llm_step import describe as describe_llm
    from workflows.memory_step import MEMORY_PATCH, recall
    from workflows.memory_step import describe as describe_memory
    from workflows.metrics import incident_closed, phase_entered
    from workflows.remediation_step import REMEDIATION_PATCH, governed, limits_of, made_worse
    from workflows.remediation_step import execute as execute_action
    from workflows.remediation_step import judge as judge_plan
    from workflows.remediation_step import report as report_action
    from workflows.remediation_step import reserve as reserve_action
    from workflows.remediation_step import undo as undo_action
    from workflows.search_attributes import DIAGNOSIS_FEEDBACK, search_attribute_updates

# Error types a decide update can be rejected with; the front door maps them to HTTP statuses.
NO_PENDING_PLAN = "NoPendingPlan"
STALE_PLAN = "StalePlan"
UNKNOWN_APPROVER = "UnknownApprover"
ALREADY_DECIDED = "AlreadyDecided"
# Error types a feedback update can be rejected with (besides UNKNOWN_APPROVER).
NO_DIAGNOSIS = "NoDiagnosis"
FEEDBACK_RECORDED = "FeedbackRecorded"
BAD_FEEDBACK = "BadFeedback"

# Incidents started before the investigating phase asked every evidence source replay without it.
EVIDENCE_SOURCES_PATCH = "evidence-sources-v1"
# A plan of only "none" (noise) watches the alert instead of paging a person.
WATCH_NOISE_PATCH = "watch-noise-v1"
# Slack updated at every phase (with receipts), PagerDuty on escalation, the report at close.
HUMANS_PATCH = "humans-v1"
# A closed incident keeps its summary in its memo and stays open for a verdict on its diagnosis (FEEDBACK_WINDOW).
FEEDBACK_PATCH = "feedback-v1"

TIMELINE_LIMIT = 500
TIMELINE_KEEP_HEAD = 50

# Timeouts and retries of every activity the incident runs. Pure work (runbooks) is quick and retried a few
# times; Prometheus gets its own budget and never retries a query it rejected; notifications keep trying for a
# while but a failure is recorded, never fatal.
_PURE_TIMEOUT = timedelta(seconds=30)
_PURE_RETRY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=1))
_PROMETHEUS_TIMEOUT = timedelta(seconds=20)
_PROMETHEUS_BUDGET = timedelta(minutes=2)
_PROMETHEUS_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=20),
    non_retryable_error_types=[BAD_QUERY, SOURCE_NOT_CONFIGURED, SOURCE_MISCONFIGURED, SOURCE_FORBIDDEN],
)
_NOTIFY_TIMEOUT = timedelta(seconds=15)
_NOTIFY_BUDGET = timedelta(minutes=5)
_NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30))


@workflow.defn(name="IncidentWorkflow")
class IncidentWorkflow:
    @workflow.init
    def __init__(self, input: IncidentInput) -> None:
        self._settings: IncidentSettings = input.settings
        if input.state is not None:
            self._state = input.state
            self._state.runs += 1
        else:
            self._state = IncidentState(workflow_id=workflow.info().workflow_id, opened_at=workflow.now())
            # Here rather than in run(): the start signal's handler runs before run() does.
            if input.notifications:
                self._record("opened", "incident re-opened: alerts fired again as the previous run closed")
            else:
                self._record("opened", "incident opened")
        # Notifications that fire again once this run has resolved: they open the group's next run.
        self._fired_after_resolution: list[AlertNotification] = []
        for notification in input.notifications:
            self.on_alerts(notification)

    # ---- the run loop -------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: IncidentInput) -> IncidentState:
        self._publish()
        handlers = {
            Phase.received: self._await_first_alerts,
            Phase.triaging: self._triage,
            Phase.investigating: self._investigate,
            Phase.diagnosing: self._diagnose,
            Phase.awaiting_approval: self._await_decision,
            Phase.remediating: self._remediate,
            Phase.verifying: self._verify,
            Phase.escalated: self._await_resolution_after_escalation,
            Phase.resolved: self._close_resolved,
        }
        while self._state.phase != Phase.closed:
            if self._continue_as_new_due():
                await self._continue_as_new()
            if self._state.phase != self._state.notified_phase and workflow.patched(HUMANS_PATCH):
                await self._notify("phase", f"{self._state.phase.value}")
            await handlers[self._state.phase]()
        feedback = workflow.patched(FEEDBACK_PATCH)
        if feedback:
            self._open_feedback_window()
        if workflow.patched(HUMANS_PATCH):
            self._state.report = render_report(self._state)
            if self._settings.llm and workflow.patched(LLM_SUMMARY_PATCH):
                summary = await summarize(self._state.workflow_id, self._state.report)
                if summary.used and summary.summary:
                    self._state.report = render_report(self._state, summary.summary)
                else:
                    self._record("llm", f"no report summary: {summary.fallback_reason}")
            await self._notify("closed", f"Incident closed: {self._state.outcome}.", report=True)
        if feedback:
            await self._await_feedback()
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._fired_after_resolution:
            self._record("reopening", "alerts fired again as the incident closed; continuing as a new run")
            workflow.continue_as_new(IncidentInput(settings=self._settings, notifications=self._fired_after_resolution))
        return self._state

    def _open_feedback_window(self) -> None:
        """At close: the summary goes into the memo, and a diagnosis nobody judged yet waits for a verdict."""
        state = self._state
        window = self._settings.feedback_window_s
        if window > 0 and state.plan is not None and state.feedback is None:
            state.feedback_until = workflow.now() + timedelta(seconds=window)
        self._remember()

    async def _await_feedback(self) -> None:
        """Stay open (phase closed) until someone judges the diagnosis, the window ends, or the alerts fire again
        (then the group's next run starts at once, as after any close)."""
        state = self._state
        if state.feedback_until is None:
            return
        remaining = (state.feedback_until - workflow.now()).total_seconds()
        await self._wait(lambda: state.feedback is not None or bool(self._fired_after_resolution), remaining)
        state.feedback_until = None
        if state.feedback is not None:
            await self._notify("feedback", _describe_feedback(state.feedback))
        else:
            # The message's Correct/Wrong controls go away: a click now would meet a finished incident.
            self._record("feedback_closed", "no verdict on the diagnosis within the feedback window")
            await self._notify("feedback_closed", "The feedback window closed.")

    def _remember(self) -> None:
        """The closed incident's summary, in its memo: visibility lists it with the run, for memory and stats."""
        workflow.upsert_memo({SUMMARY_MEMO_KEY: incident_summary(self._state).model_dump(mode="json")})

    async def _await_first_alerts(self) -> None:
        # Signal-with-start delivers the first notification before the first workflow task, so this does
        # not block in practice; the bound keeps a workflow started by hand from lingering forever.
        if await self._wait(lambda: bool(self._state.alerts), self._settings.resolve_wait_s):
            self._enter(Phase.triaging, "alerts received")
        else:
            self._close("no alerts arrived")

    async def _triage(self) -> None:
        try:
            result = await workflow.execute_activity_method(
                TriageActivities.triage_alerts,
                TriageRequest(alerts=list(self._state.alerts.values())),
                start_to_close_timeout=_PURE_TIMEOUT,
                retry_policy=_PURE_RETRY,
            )
        except ActivityError as err:
            self._escalate(f"triage failed: {failure_reason(err)}")
            return
        state = self._state
        state.severity, state.alertname, state.namespace = result.severity, result.alertname, result.namespace
        state.service, state.title, state.alert_expr = result.service, result.title, result.alert_expr
        state.diagnosis.runbook = result.runbook_id
        self._record(
            "triaged",
            f"severity {result.severity.value}; runbook {result.runbook_id or 'none'}",
            result.model_dump(mode="json"),
        )
        self._enter(Phase.investigating, "gathering evidence")

    async def _investigate(self) -> None:
        if workflow.patched(EVIDENCE_SOURCES_PATCH):
            await asyncio.gather(self._probe_alert_expression(), self._gather_sources())
            state = self._state
            state.evidence = bound_evidence(state.evidence)
            if state.evidence.dropped:
                self._record("evidence_bounded", "evidence cut to its budget", dict(state.evidence.dropped))
        else:
            # Incidents that were investigating before every source existed replay as they ran.
            await self._probe_alert_expression()
        self._enter(Phase.diagnosing, "ranking hypotheses")

    async def _probe_alert_expression(self) -> None:
        """The alert's own expression, now: is the condition still there, and on which series?"""
        expr = self._state.alert_expr
        if expr is None:
            self._gap("prometheus", "the alert carries no expression (generatorURL without g0.expr)")
            return
        result, problem = await self._query_alert_expression(expr)
        if result is None:
            self._gap("prometheus", problem)
            return
        values = ", ".join(f"{series.value:g}" for series in result.series[:5])
        self._state.evidence.items.append(
            EvidenceItem(
                source="prometheus",
                kind="alert_expression",
                summary=(
                    f"the alert expression returns {len(result.series)} series for this incident now"
                    + (f" (values {values})" if values else "")
                ),
                data=result.model_dump(mode="json"),
            )
        )
        self._record("evidence", self._state.evidence.items[-1].summary)

    async def _gather_sources(self) -> None:
        state = self._state
        gathered = await gather_evidence(evidence_request(state, workflow.now()))
        for gap in gathered.gaps:
            self._gap(gap.source, gap.reason)
        state.evidence = fold_evidence(
            state.evidence, gathered.metrics, gathered.logs, gathered.kubernetes, gathered.related
        )
        if gathered.metrics is not None:
            self._record("evidence", f"prometheus: {describe_metrics(gathered.metrics)}", {"source": "prometheus"})
        if gathered.logs is not None:
            self._record("evidence", f"loki: {describe_logs(gathered.logs)}", {"source": "loki"})
        if gathered.kubernetes is not None:
            self._record(
                "evidence", f"kubernetes: {describe_kubernetes(gathered.kubernetes)}", {"source": "kubernetes"}
            )
        if gathered.related is not None:
            self._record("evidence", f"alertmanager: {describe_related(gathered.related)}", {"source": "alertmanager"})

    async def _diagnose(self) -> None:
        state = self._state
        if workflow.patched(MEMORY_PATCH):
            memory = await recall(state)
            state.seen_before = memory.incidents
            self._record("memory", describe_memory(memory), {"seen_before": [p.line for p in memory.incidents]})
        try:
            result = await workflow.execute_activity_method(
                TriageActivities.diagnose_incident,
                DiagnoseRequest(
                    alerts=list(state.alerts.values()),
                    triage=_triage_of(state),
                    evidence=state.evidence,
                    seen_before=state.seen_before,
                ),
                start_to_close_timeout=_PURE_TIMEOUT,
                retry_policy=_PURE_RETRY,
            )
        except ActivityError as err:
            self._escalate(f"diagnosis failed: {failure_reason(err)}")
            return
        if self._settings.llm and workflow.patched(LLM_PATCH):
            answer = await ask_llm(state, result)
            text, data = describe_llm(answer)
            self._record("llm", text, data)
            result = merged(result, answer)
        state.diagnosis = result.diagnosis
        state.plan = Plan(id=f"plan-{workflow.uuid4().hex[:12]}", actions=result.actions, rationale=result.rationale)
        self._record(
            "diagnosed",
            f"{result.diagnosis.category.value} at {result.diagnosis.confidence:.2f}: {result.diagnosis.summary}",
            result.diagnosis.model_dump(mode="json"),
        )
        self._record("plan_proposed", result.rationale, state.plan.model_dump(mode="json"))
        state.fallback_plans = list(result.fallback_plans)
        state.verify_query = result.verify_query
        await self._route_plan()

    async def _route_plan(self) -> None:
        """Judge the proposed plan by the policy, then wait for a person, act, watch, or escalate."""
        state = self._state
        assert state.plan is not None
        refusals: list[str] = []
        if state.plan.mutating and workflow.patched(REMEDIATION_PATCH):
            governed_plan = await self._govern_plan()
            if governed_plan is None:
                return
            refusals = governed_plan
            if state.plan.mutating and not any(a.requires_approval for a in state.plan.actions):
                await self._second_opinion()
        if state.all_resolved:
            self._enter(Phase.resolved, "every alert resolved during diagnosis")
        elif _only_watching(state.plan) and workflow.patched(WATCH_NOISE_PATCH):
            # Nothing to fix (the condition looks already over): nobody is paged; the alert's own expression is
            # checked again after the verify delay, and only a condition that is still there escalates.
            state.verify_at = workflow.now() + timedelta(seconds=self._settings.verify_after_s)
            self._enter(Phase.verifying, f"nothing to do; re-checking at {state.verify_at:%H:%M:%S}Z")
        elif not state.plan.mutating and refusals:
            self._escalate("the policy refused the plan: " + "; ".join(refusals))
        elif not state.plan.mutating:
            self._escalate(state.diagnosis.summary or "no automatic action addresses this cause")
        elif any(action.requires_approval for action in state.plan.actions):
            state.approval_deadline = workflow.now() + timedelta(seconds=self._settings.approval_timeout_s)
            self._enter(Phase.awaiting_approval, f"plan {state.plan.id} needs a human decision")
            await self._notify("approval_requested", "A remediation plan awaits your decision.")
        else:
            self._enter(Phase.remediating, f"plan {state.plan.id} needs no approval")

    async def _await_decision(self) -> None:
        state = self._state
        assert state.approval_deadline is not None and state.plan is not None
        remaining = (state.approval_deadline - workflow.now()).total_seconds()
        decided = await self._wait(
            lambda: state.decision is not None or state.all_resolved or self._continue_as_new_due(), remaining
        )
        if state.decision is not None:
            state.acknowledged_at = state.decision.at
            if state.decision.approve:
                self._enter(Phase.remediating, f"plan {state.plan.id} approved by {state.decision.by}")
            else:
                reason = f": {state.decision.reason}" if state.decision.reason else ""
                self._escalate(f"plan {state.plan.id} rejected by {state.decision.by}{reason}")
        elif state.all_resolved:
            self._enter(Phase.resolved, "every alert resolved before a decision")
        elif not decided:
            self._escalate(f"no decision within {format_duration(self._settings.approval_timeout_s)}")

    async def _govern_plan(self) -> list[str] | None:
        """The policy's verdict on the plan: bounded actions, who must approve, refusals (None: escalated)."""
        state = self._state
        assert state.plan is not None
        try:
            verdict = await judge_plan(state, state.plan.actions)
        except ActivityError as err:
            self._escalate(f"the safety policy could not judge the plan: {failure_reason(err)}")
            return None
        state.dry_run, state.action_limits = verdict.dry_run, verdict.limits.model_dump()
        state.second_opinion = verdict.second_opinion
        state.policy = [decision.model_dump(mode="json") for decision in verdict.decisions]
        actions, refusals = governed(state.plan, verdict.decisions)
        state.plan = state.plan.model_copy(update={"actions": actions})
        reasons = [f"{d.action.type.value}: {'; '.join(d.reasons)}" for d in verdict.decisions if d.reasons]
        mode = "dry run only (DRY_RUN)" if verdict.dry_run else "changes are applied"
        self._record("policy", f"{mode}; " + (" | ".join(reasons) or "no rule spoke"), {"decisions": state.policy})
        return refusals

    async def _remediate(self) -> None:
        state = self._state
        assert state.plan is not None
        if workflow.patched(REMEDIATION_PATCH):
            await self._act_on_plan()
            return
        for action in state.plan.actions:
            if not action.type.mutating:
                continue
            # The Kubernetes executor (server-side dry-run, idempotent apply) is not wired yet: record plainly
            # that nothing was changed rather than pretend an action ran.
            record = ActionRecord(
                action=action,
                plan_id=state.plan.id,
                at=workflow.now(),
                mode="skipped",
                result="not executed: no Kubernetes executor is configured in this version; nothing was changed",
            )
            state.actions_taken.append(record)
            self._record(
                "action",
                f"{action.type.value} {action.namespace}/{action.target}: {record.result}",
                record.model_dump(mode="json"),
            )
        state.verify_at = workflow.now() + timedelta(seconds=self._settings.verify_after_s)
        self._enter(Phase.verifying, f"verifying at {state.verify_at:%H:%M:%S}Z")

    async def _second_opinion(self) -> None:
        """Before an automatic change, a second model call must agree with it (when the policy asks and an LLM is
        configured); without agreement the plan waits for a person instead."""
        state = self._state
        assert state.plan is not None
        if not (self._settings.llm and state.second_opinion):
            return
        proposal = DiagnoseResult(
            diagnosis=state.diagnosis, actions=state.plan.actions, allowed_actions=state.plan.actions
        )
        answer = await ask_llm(state, proposal)
        planned = {(a.type, a.namespace, a.target) for a in state.plan.actions if a.type.mutating}
        chosen = {(a.type, a.namespace, a.target) for a in answer.actions}
        agrees = (
            answer.used
            and answer.diagnosis is not None
            and answer.diagnosis.category == state.diagnosis.category
            and planned <= chosen
        )
        text, data = describe_llm(answer)
        self._record("second_opinion", ("agrees: " if agrees else "does not agree: ") + text, data)
        if not agrees:
            actions = [a.model_copy(update={"requires_approval": a.type.mutating}) for a in state.plan.actions]
            state.plan = state.plan.model_copy(update={"actions": actions})

    async def _act_on_plan(self) -> None:
        """Each mutating action: the governor's reservation, the executor's dry run and (unless DRY_RUN) apply."""
        state = self._state
        assert state.plan is not None
        if not state.policy and state.plan.mutating and await self._govern_plan() is None:
            return  # a plan proposed before the policy existed is judged before anything acts on it
        for index, action in enumerate(state.plan.actions):
            if action.type.mutating and not await self._act(action, f"{state.workflow_id}/{state.plan.id}/{index}"):
                return
        state.verify_at = workflow.now() + timedelta(seconds=self._settings.verify_after_s)
        self._enter(Phase.verifying, f"verifying at {state.verify_at:%H:%M:%S}Z")

    async def _act(self, action: Action, action_id: str) -> bool:
        """One action, exactly once; False when the incident escalated instead."""
        state = self._state
        assert state.plan is not None
        where = f"{action.type.value} {action.namespace}/{action.target}".replace(" /", " ")
        reservation = Reservation(
            action_id=action_id, workflow_id=state.workflow_id, action=action, limits=limits_of(state)
        )
        try:
            granted = await reserve_action(reservation)
        except ActivityError as err:
            self._action_record(action, action_id, "refused", f"the governor did not answer: {failure_reason(err)}")
            self._escalate(f"{where} not done: the governor did not answer ({failure_reason(err)})")
            return False
        if not granted.granted:
            self._action_record(action, action_id, "refused", granted.reason)
            self._escalate(f"{where} not done: {granted.reason}")
            return False
        try:
            result = await execute_action(
                ExecuteRequest(workflow_id=state.workflow_id, action_id=action_id, action=action, dry_run=state.dry_run)
            )
        except ActivityError as err:
            reason = failure_reason(err)
            await self._report(action_id, "released")
            if failure_type(err) == SOURCE_NOT_CONFIGURED and state.dry_run:
                # Nothing to dry-run against: say so, and let verification judge the incident as it stands.
                self._action_record(action, action_id, "skipped", f"no dry run: {reason}")
                return True
            self._action_record(action, action_id, "failed", reason)
            self._escalate(f"{where} failed: {reason}")
            return False
        self._action_record(action, action_id, result.mode, result.detail, result.before)
        await self._report(action_id, "dry_run" if result.mode == "dry_run" else "applied")
        return True

    async def _report(self, action_id: str, outcome: ReportOutcome) -> None:
        try:
            await report_action(action_id, outcome)
        except ActivityError as err:  # the ledger entry expires on its own; the incident goes on
            self._record("governor", f"could not report {outcome} for {action_id}: {failure_reason(err)}")

    def _action_record(
        self, action: Action, action_id: str, mode: ActionMode, detail: str, before: dict[str, Any] | None = None
    ) -> ActionRecord:
        state = self._state
        assert state.plan is not None
        record = ActionRecord(
            action=action,
            plan_id=state.plan.id,
            at=workflow.now(),
            mode=mode,
            result=detail,
            action_id=action_id,
            before=before or {},
        )
        state.actions_taken.append(record)
        where = f"{action.type.value} {action.namespace}/{action.target}".replace(" /", " ")
        self._record("action", f"{where}: {mode}: {detail}", record.model_dump(mode="json"))
        return record

    async def _cause_still_there(self, alert_now: PromQueryResult) -> bool:
        """The runbook's own check for the diagnosed cause (the alert may clear before the cause does)."""
        state = self._state
        if not state.verify_query or not workflow.patched(REMEDIATION_PATCH):
            return False
        check, problem = await self._query_alert_expression(state.verify_query, own_series_only=False)
        if check is None or not check.series:
            if check is None:
                self._record("verification", f"the runbook's check could not run ({problem}); the alert decides")
            return False
        self._verified(
            "runbook",
            "still_failing",
            f"the runbook's check still returns {len(check.series)} series",
            state.verify_query,
        )
        await self._after_no_recovery(alert_now, still="the runbook's check for the cause still fails")
        return True

    async def _after_no_recovery(self, now: PromQueryResult, still: str = "the alert condition still holds") -> None:
        """The condition still holds after the plan: undo what made it worse, or try the next cause's plan."""
        state = self._state
        assert state.plan is not None
        applied = [
            r for r in state.actions_taken if r.plan_id == state.plan.id and r.mode in ("applied", "already_applied")
        ]
        if applied and made_worse(_probed_values(state), [series.value for series in now.series]):
            undone = [await self._undo(record) for record in reversed(applied)]
            self._escalate(
                "the change made things worse, so the agent undid its own change"
                + ("" if all(undone) else " (not all of it could be undone: see the timeline)")
            )
        elif state.fallback_plans:
            actions = state.fallback_plans.pop(0)
            state.plans_tried += 1
            state.decision, state.approval_deadline, state.verify_at = None, None, None
            self._record("next_plan", f"the plan changed nothing; trying the next cause's plan ({state.plans_tried})")
            state.plan = Plan(
                id=f"plan-{workflow.uuid4().hex[:12]}",
                actions=actions,
                rationale=f"the condition outlived the previous plan: the next cause's plan (try {state.plans_tried})",
            )
            self._record("plan_proposed", state.plan.rationale, state.plan.model_dump(mode="json"))
            state.policy = []
            await self._route_plan()
        else:
            self._escalate(
                f"{still} after remediation" if state.plan.mutating else f"{still}: it did not recover by itself"
            )

    async def _undo(self, record: ActionRecord) -> bool:
        state = self._state
        request = UndoRequest(
            workflow_id=state.workflow_id,
            action_id=record.action_id,
            action=record.action,
            before=record.before,
            dry_run=state.dry_run,
        )
        try:
            result = await undo_action(request)
        except ActivityError as err:
            self._action_record(record.action, record.action_id, "failed", f"undo failed: {failure_reason(err)}")
            return False
        self._action_record(record.action, record.action_id, "undone", result.detail)
        await self._report(record.action_id, "undone")
        return True

    async def _verify(self) -> None:
        state = self._state
        assert state.verify_at is not None
        remaining = (state.verify_at - workflow.now()).total_seconds()
        await self._wait(lambda: state.all_resolved or self._continue_as_new_due(), remaining)
        if state.all_resolved:
            self._verified("alertmanager", "recovered", "Alertmanager reported every alert resolved")
            self._enter(Phase.resolved, "recovered")
            return
        if self._continue_as_new_due():
            return
        expr = state.alert_expr
        if expr is None:
            self._verified("none", "inconclusive", "the alert carries no expression to re-evaluate")
            self._escalate("could not verify recovery: the alert has no expression")
            return
        result, problem = await self._query_alert_expression(expr)
        if result is None:
            self._verified(
                "prometheus", "inconclusive", f"the alert expression could not be evaluated: {problem}", expr
            )
            self._escalate(f"could not verify recovery: {problem}")
        elif result.series:
            self._verified(
                "prometheus",
                "still_failing",
                f"{len(result.series)} series of this incident still match",
                expr,
            )
            if workflow.patched(REMEDIATION_PATCH):
                await self._after_no_recovery(result)
            else:
                self._escalate(
                    "the alert condition still holds after remediation"
                    if state.plan is not None and state.plan.mutating
                    else "the alert condition still holds: it did not recover by itself"
                )
        elif await self._cause_still_there(result):
            return
        else:
            self._verified("prometheus", "recovered", "the alert expression returns no series of this incident", expr)
            self._enter(Phase.resolved, "recovered")

    async def _await_resolution_after_escalation(self) -> None:
        state = self._state
        if state.resolve_deadline is None:
            state.resolve_deadline = workflow.now() + timedelta(seconds=self._settings.resolve_wait_s)
            await self._notify("escalated", state.escalation_reason or "escalated")
            if workflow.patched(HUMANS_PATCH):
                await self._page("trigger")
        remaining = (state.resolve_deadline - workflow.now()).total_seconds()
        resolved = await self._wait(lambda: state.all_resolved or self._continue_as_new_due(), remaining)
        if state.all_resolved:
            self._enter(Phase.resolved, "every alert resolved after escalation")
        elif not resolved:
            self._close(f"escalated; not resolved within {format_duration(self._settings.resolve_wait_s)}")

    async def _close_resolved(self) -> None:
        state = self._state
        state.resolved_at = state.resolved_at or workflow.now()
        if state.escalation_reason:
            state.outcome = state.outcome or "resolved after escalation"
        else:
            state.outcome = state.outcome or "resolved"
        await self._notify("resolved", f"Incident resolved: {state.outcome}.")
        if state.paged and workflow.patched(HUMANS_PATCH):
            await self._page("resolve")
        self._close(state.outcome)

    # ---- signal, update, query ----------------------------------------------------------------------------

    @workflow.signal(name="alerts")
    def on_alerts(self, notification: AlertNotification) -> None:
        state = self._state
        if state.phase in (Phase.resolved, Phase.closed):
            # This run is done with its alerts; a re-fire belongs to the group's next run, never to the void.
            again = fires_again(state, notification)
            if again:
                self._fired_after_resolution.append(notification)
                self._record("alerts_fired_again", f"{len(again)} alert(s) fired again", {"fingerprints": again})
            return
        firing, resolved = merge_notification(state, notification)
        if firing:
            self._record("alerts_firing", f"{len(firing)} alert(s) firing", {"fingerprints": firing})
        if resolved:
            self._record("alerts_resolved", f"{len(resolved)} alert(s) resolved", {"fingerprints": resolved})
        if state.phase != Phase.received and firing:
            severity = highest_severity(alert.labels for alert in state.firing_alerts)
            if _rank(severity) > _rank(state.severity):
                self._record("severity_raised", f"severity {state.severity.value} -> {severity.value}")
                state.severity = severity
                self._publish()
                return
        # Details are not a command: keeping the UI's alert counts current costs no history.
        workflow.set_current_details(details_markdown(state))

    @workflow.update(name="decide")
    async def decide(self, decision: Decision) -> DecisionResult:
        state = self._state
        assert state.plan is not None
        state.decision = DecisionRecord(
            approve=decision.approve,
            by=decision.by,
            reason=decision.reason,
            plan_id=state.plan.id,
            at=workflow.now(),
        )
        verdict = "approved" if decision.approve else "rejected"
        self._record(
            "decision",
            f"plan {state.plan.id} {verdict} by {decision.by}",
            state.decision.model_dump(mode="json"),
        )
        await workflow.wait_condition(lambda: state.phase != Phase.awaiting_approval)
        return DecisionResult(accepted=True, phase=state.phase, plan_id=state.plan.id, by=decision.by)

    @decide.validator
    def validate_decision(self, decision: Decision) -> None:
        state = self._state
        if state.phase != Phase.awaiting_approval or state.plan is None:
            raise ApplicationError(f"no plan is awaiting approval (phase {state.phase.value})", type=NO_PENDING_PLAN)
        if state.decision is not None:
            raise ApplicationError(
                f"plan {state.plan.id} was already decided by {state.decision.by}", type=ALREADY_DECIDED
            )
        if decision.plan_id is not None and decision.plan_id != state.plan.id:
            raise ApplicationError(
                f"plan {decision.plan_id} is stale; the pending plan is {state.plan.id}", type=STALE_PLAN
            )
        if self._settings.approvers and decision.by not in self._settings.approvers:
            raise ApplicationError(f"{decision.by!r} is not an allowed approver", type=UNKNOWN_APPROVER)

    @workflow.update(name="feedback")
    def feedback(self, feedback: Feedback) -> FeedbackRecord:
        """A person's verdict on the diagnosis: a search attribute (DiagnosisFeedback), the memo and the timeline."""
        state = self._state
        record = FeedbackRecord(**feedback.model_dump(), at=workflow.now(), diagnosed=state.diagnosis.category)
        state.feedback = record
        self._record("feedback", _describe_feedback(record), record.model_dump(mode="json"))
        workflow.upsert_search_attributes([DIAGNOSIS_FEEDBACK.value_set(record.verdict)])
        if state.phase == Phase.closed:
            self._remember()  # an open incident writes its memo when it closes
        return record

    @feedback.validator
    def validate_feedback(self, feedback: Feedback) -> None:
        state = self._state
        if state.plan is None:
            raise ApplicationError(f"there is no diagnosis to judge (phase {state.phase.value})", type=NO_DIAGNOSIS)
        if state.feedback is not None:
            raise ApplicationError(
                f"the diagnosis was already judged {state.feedback.verdict} by {state.feedback.by}",
                type=FEEDBACK_RECORDED,
            )
        if self._settings.approvers and feedback.by not in self._settings.approvers:
            raise ApplicationError(f"{feedback.by!r} is not an allowed approver", type=UNKNOWN_APPROVER)
        diagnosed = state.diagnosis.category
        if feedback.verdict == "wrong" and feedback.cause == diagnosed:
            raise ApplicationError(
                f"cause: {diagnosed.value} is what the agent diagnosed; a wrong verdict names another cause",
                type=BAD_FEEDBACK,
            )
        if feedback.verdict == "correct" and feedback.cause not in (None, diagnosed):
            raise ApplicationError(
                f"cause: a correct verdict confirms {diagnosed.value}; to name {feedback.cause} say wrong",
                type=BAD_FEEDBACK,
            )

    @workflow.query(name="state")
    def state(self) -> IncidentState:
        return self._state

    # ---- helpers ------------------------------------------------------------------------------------------

    async def _wait(self, condition: Callable[[], bool], seconds: float) -> bool:
        """Wait for ``condition`` at most ``seconds`` (durable timer); True when the condition became true."""
        if seconds <= 0:
            return condition()
        try:
            await workflow.wait_condition(condition, timeout=timedelta(seconds=seconds))
        except TimeoutError:
            return False
        return True

    async def _query_alert_expression(
        self, expr: str, *, own_series_only: bool = True
    ) -> tuple[PromQueryResult | None, str]:
        """An expression evaluated now (by default only the incident's own series), or None and why not."""
        labels = [dict(alert.labels) for alert in self._state.alerts.values()] if own_series_only else []
        try:
            result = await workflow.execute_activity_method(
                PrometheusActivities.query_alert_expression,
                PromQueryRequest(expr=expr, alert_labels=labels),
                start_to_close_timeout=_PROMETHEUS_TIMEOUT,
                schedule_to_close_timeout=_PROMETHEUS_BUDGET,
                retry_policy=_PROMETHEUS_RETRY,
            )
        except ActivityError as err:
            return None, failure_reason(err)
        return result, ""

    async def _notify(self, event: str, text: str, *, report: bool = False) -> None:
        state = self._state
        humans = workflow.patched(HUMANS_PATCH)
        notification = Notification(
            workflow_id=state.workflow_id,
            event=event,
            phase=state.phase,
            severity=state.severity,
            title=one_line_summary(state),
            text=text,
            plan=state.plan,
        )
        if humans:
            # The Slack message is updated in place; what happened since the last update goes to its thread.
            lines = [f"{e.kind}: {e.message}" for e in state.timeline[state.timeline_notified :]]
            if report and state.report:
                lines.append(state.report)
            notification = notification.model_copy(
                update={
                    "diagnosis": state.diagnosis if state.phase not in (Phase.received, Phase.triaging) else None,
                    "decided_by": state.decision.by if state.decision else None,
                    "approved": state.decision.approve if state.decision else None,
                    "outcome": state.outcome,
                    "feedback": state.feedback,
                    "feedback_open": state.feedback_until is not None and state.feedback is None,
                    "slack_channel": state.slack_channel,
                    "slack_ts": state.slack_ts,
                    "thread_lines": lines,
                }
            )
        try:
            receipt = await workflow.execute_activity_method(
                ConsoleNotifier.notify,
                notification,
                start_to_close_timeout=_NOTIFY_TIMEOUT,
                schedule_to_close_timeout=_NOTIFY_BUDGET,
                retry_policy=_NOTIFY_RETRY,
            )
        except ActivityError as err:
            self._record("notify_failed", f"{event}: {failure_reason(err)}")
            return
        if humans:
            state.timeline_notified = len(state.timeline)
            state.notified_phase = state.phase
            if receipt is not None:
                state.slack_channel = receipt.slack_channel or state.slack_channel
                state.slack_ts = receipt.slack_ts or state.slack_ts
                for problem in receipt.problems:
                    self._record("notify_problem", f"{event}: {problem}")
        if event not in ("phase", "closed", "feedback", "feedback_closed"):  # nothing after the closing words
            self._record("notified", event)

    async def _page(self, action: Literal["trigger", "resolve"]) -> None:
        """PagerDuty: one page when the incident escalates (dedup_key = workflow id), resolved when it resolves."""
        state = self._state
        request = PageRequest(
            workflow_id=state.workflow_id,
            action=action,
            summary=f"{one_line_summary(state)}: {state.escalation_reason or state.outcome or ''}".strip(": "),
            severity=state.severity,
            source=f"{state.namespace}/{state.service}".strip("/") or state.alertname,
            details={"diagnosis": state.diagnosis.category.value, "confidence": state.diagnosis.confidence},
        )
        try:
            result = await workflow.execute_activity_method(
                PagerDutyActivities.page,
                request,
                start_to_close_timeout=_NOTIFY_TIMEOUT,
                schedule_to_close_timeout=timedelta(minutes=10),
                retry_policy=_NOTIFY_RETRY,
            )
        except ActivityError as err:
            self._record("page_failed", f"{action}: {failure_reason(err)}")
            return
        state.paged = action == "trigger" and result.sent
        self._record("paged" if result.sent else "page_skipped", f"{action}: {result.detail}")

    def _enter(self, phase: Phase, message: str) -> None:
        previous = self._state.phase
        self._state.phase = phase
        self._record(
            "phase",
            f"{previous.value} -> {phase.value}: {message}",
            {"from": previous.value, "to": phase.value},
        )
        phase_entered(phase)
        self._publish()

    def _escalate(self, reason: str) -> None:
        self._state.escalation_reason = reason
        self._enter(Phase.escalated, reason)

    def _close(self, outcome: str) -> None:
        self._state.outcome = outcome
        self._state.closed_at = workflow.now()
        incident_closed(self._state)
        self._enter(Phase.closed, outcome)

    def _gap(self, source: str, reason: str) -> None:
        gap = EvidenceGap(source=source, reason=reason)
        if gap in self._state.evidence.gaps:
            return  # e.g. an unset Prometheus, met by the alert probe and the metric search alike
        self._state.evidence.gaps.append(gap)
        self._record("evidence_gap", f"{source}: {reason}")

    def _verified(self, method: str, outcome: VerificationOutcome, detail: str, expr: str | None = None) -> None:
        record = VerificationRecord(at=workflow.now(), method=method, outcome=outcome, detail=detail, expr=expr)
        self._state.verification.append(record)
        self._record("verification", f"{outcome}: {detail}", record.model_dump(mode="json"))

    def _record(self, kind: str, message: str, data: dict | None = None) -> None:
        timeline = self._state.timeline
        timeline.append(TimelineEvent(at=workflow.now(), kind=kind, message=message, data=data or {}))
        if len(timeline) > TIMELINE_LIMIT:
            # Keep how it started and what happened lately; count what was dropped in between.
            del timeline[TIMELINE_KEEP_HEAD]
            self._state.timeline_dropped += 1

    def _publish(self) -> None:
        """Make the state visible in the Temporal UI: search attributes and the current-details Markdown."""
        workflow.upsert_search_attributes(search_attribute_updates(self._state))
        workflow.set_current_details(details_markdown(self._state))

    def _continue_as_new_due(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or (
            info.get_current_history_length() >= self._settings.max_history_events
        )

    async def _continue_as_new(self) -> None:
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._record("continued_as_new", f"history at {workflow.info().get_current_history_length()} events")
        workflow.continue_as_new(
            IncidentInput(settings=self._settings, state=self._state, notifications=self._fired_after_resolution)
        )


def _triage_of(state: IncidentState) -> TriageResult:
    return TriageResult(
        severity=state.severity,
        alertname=state.alertname,
        namespace=state.namespace,
        service=state.service,
        title=state.title,
        alert_expr=state.alert_expr,
        runbook_id=state.diagnosis.runbook,
    )


def _describe_feedback(record: FeedbackRecord) -> str:
    cause = f" (it was {record.cause.value})" if record.cause is not None else ""
    note = f": {record.note}" if record.note else ""
    return f"diagnosis {record.diagnosed.value} judged {record.verdict}{cause} by {record.by}{note}"


def _rank(severity: object) -> int:
    return ["low", "medium", "high", "critical"].index(str(severity))


def _only_watching(plan: Plan) -> bool:
    return bool(plan.actions) and all(action.type is ActionType.none for action in plan.actions)


def _probed_values(state: IncidentState) -> list[float]:
    """The alert expression's values when the incident looked, before any action (the investigation's probe)."""
    for item in state.evidence.items:
        if item.kind == "alert_expression":
            series = item.data.get("series")
            if isinstance(series, list):
                return [float(s["value"]) for s in series if isinstance(s, dict) and "value" in s]
    return []
