"""The remediation calls of the IncidentWorkflow, in workflow context: the policy's verdict, the governor's
reservation, the executor's dry run or apply, and the undo of the agent's own change.

Each is an activity (the world is touched only there) with its own timeout and retry policy; errors that a retry
cannot fix (forbidden, no such target, a rejected action) are final at once.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.errors import SOURCE_FORBIDDEN, SOURCE_NOT_CONFIGURED
    from activities.policy import PolicyActivities
    from activities.remediation import ACTION_REJECTED, TARGET_NOT_FOUND, RemediationActivities
    from models.incident import Action, ActionType, IncidentState, Plan
    from models.remediation import (
        ActionReport,
        ExecuteRequest,
        ExecuteResult,
        Limits,
        PlanJudgement,
        PlanVerdict,
        PolicyDecision,
        ReportOutcome,
        Reservation,
        ReservationResult,
        UndoRequest,
    )
    from workflows.governor import GovernorActivities

REMEDIATION_PATCH = "remediation-v1"
# The alert's own measure this much above its level before the action means the action made things worse.
WORSE_BY = 1.2

_POLICY_TIMEOUT = timedelta(seconds=30)
_POLICY_RETRY = RetryPolicy(maximum_attempts=3)
_GOVERNOR_TIMEOUT = timedelta(seconds=30)
_GOVERNOR_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))
# Kubernetes calls: a conflict or an unavailable API server is retried for a few minutes; the rest is final.
_KUBE_TIMEOUT = timedelta(seconds=60)
# The executor heartbeats every 2 s: a worker killed mid-action is noticed this soon, and the action retried.
_KUBE_HEARTBEAT = timedelta(seconds=10)
_KUBE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=[SOURCE_FORBIDDEN, SOURCE_NOT_CONFIGURED, TARGET_NOT_FOUND, ACTION_REJECTED],
)


async def judge(state: IncidentState, actions: list[Action]) -> PlanVerdict:
    judgement = PlanJudgement(
        actions=actions, severity=state.severity, confidence=state.diagnosis.confidence, at=workflow.now()
    )
    return await workflow.execute_activity_method(
        PolicyActivities.judge_plan,
        judgement,
        start_to_close_timeout=_POLICY_TIMEOUT,
        retry_policy=_POLICY_RETRY,
    )


def governed(plan: Plan, decisions: list[PolicyDecision]) -> tuple[list[Action], list[str]]:
    """The plan's actions as the policy allows them; a refused mutation becomes an escalation saying why."""
    actions: list[Action] = []
    refusals: list[str] = []
    for action, decision in zip(plan.actions, decisions, strict=True):
        if decision.allowed:
            actions.append(
                decision.action.model_copy(
                    update={"requires_approval": decision.requires_approval and decision.action.type.mutating}
                )
            )
            continue
        why = "; ".join(decision.reasons) or "not allowed"
        refusals.append(f"{action.type.value} {action.namespace}/{action.target}: {why}")
        actions.append(
            Action(type=ActionType.escalate, risk="low", requires_approval=False, reason=f"policy refused: {why}")
        )
    unique: list[Action] = []
    for action in actions:
        if action not in unique:
            unique.append(action)
    return unique, refusals


async def reserve(reservation: Reservation) -> ReservationResult:
    return await workflow.execute_activity_method(
        GovernorActivities.reserve_action,
        reservation,
        start_to_close_timeout=_GOVERNOR_TIMEOUT,
        retry_policy=_GOVERNOR_RETRY,
        schedule_to_close_timeout=timedelta(minutes=5),
    )


async def report(action_id: str, outcome: ReportOutcome) -> None:
    await workflow.execute_activity_method(
        GovernorActivities.report_action,
        ActionReport(action_id=action_id, outcome=outcome),
        start_to_close_timeout=_GOVERNOR_TIMEOUT,
        retry_policy=_GOVERNOR_RETRY,
        schedule_to_close_timeout=timedelta(minutes=5),
    )


async def execute(request: ExecuteRequest) -> ExecuteResult:
    return await workflow.execute_activity_method(
        RemediationActivities.execute_action,
        request,
        start_to_close_timeout=_KUBE_TIMEOUT,
        heartbeat_timeout=_KUBE_HEARTBEAT,
        retry_policy=_KUBE_RETRY,
    )


async def undo(request: UndoRequest) -> ExecuteResult:
    return await workflow.execute_activity_method(
        RemediationActivities.undo_action,
        request,
        start_to_close_timeout=_KUBE_TIMEOUT,
        heartbeat_timeout=_KUBE_HEARTBEAT,
        retry_policy=_KUBE_RETRY,
    )


def limits_of(state: IncidentState) -> Limits:
    return Limits.model_validate(state.action_limits) if state.action_limits else Limits()


def made_worse(before: list[float], now: list[float]) -> bool:
    """The alert's own measure, the worst series now against the worst before the action."""
    if not before or not now:
        return False
    worst_before, worst_now = max(before), max(now)
    return worst_now > worst_before * WORSE_BY if worst_before > 0 else worst_now > 0
