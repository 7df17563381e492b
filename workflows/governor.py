"""GovernorWorkflow: the one durable ledger of mutating actions across incidents, and the kill switch.

One workflow per namespace (id ``incident-agent-governor``) that runs forever. Every incident asks it, through
the ``reserve`` update, for the right to perform each mutating action; operators flip its kill switch through the
``set_killswitch`` update (HTTP ``POST /governor/killswitch``, CLI ``starter.py killswitch on|off``).

Atomicity: the update handlers are plain functions, never coroutines, so each one runs from check to record
without yielding to the event loop. Updates are applied one at a time, and no two reservations can both see the
last free slot.

Rate limits (``Limits``, sent with each reservation from the policy file) are counted over the last hour of
workflow time, per ``(namespace, target)`` and globally. A ledger entry counts while its outcome is:

- ``reserved``: granted and not yet reported. It holds its slot until reported, or until it is an hour old;
- ``applied`` and ``undone``: a real change happened (an undo is a change too). Once a change is recorded, a
  later report of ``released``, ``failed`` or ``dry_run`` does not take it back; only ``undone`` may follow.

It does not count while its outcome is:

- ``dry_run``: nothing changed (a server-side dry run is not a mutation);
- ``released`` and ``failed``: the action was not carried out (not approved, refused by policy, or its call
  failed), so its slot is free again. Reserving the same ``action_id`` again is judged like a new reservation.

Non-mutating actions (``escalate``, ``none``) are granted without a ledger entry, even while the kill switch is on:
the switch stops changes to the cluster, never a page to a person.

Workflow code here is deterministic: time comes from ``workflow.now()``. The client helpers and the
``GovernorActivities`` at the end of this module run outside workflows. Workflows cannot call another workflow's
update; the IncidentWorkflow therefore reaches the governor through those activities.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity, workflow
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

with workflow.unsafe.imports_passed_through():
    from models.remediation import (
        GOVERNOR_WORKFLOW_ID,
        ActionReport,
        GovernorState,
        KillSwitchRequest,
        LedgerEntry,
        Reservation,
        ReservationResult,
    )

# The rate window; entries older than it are pruned when the governor continues as new.
WINDOW = timedelta(hours=1)
# Outcomes that hold a slot in the rate window (see the module docstring).
COUNTED = frozenset({"reserved", "applied", "undone"})
# Outcomes after which a real change has happened; only "undone" may follow them.
CHANGED = frozenset({"applied", "undone"})
# Outcomes that free the slot: a new reservation of the same action id is judged afresh.
FREED = frozenset({"released", "failed"})

# The error type of a reservation the update validator rejects (never retried: it is malformed).
INVALID_RESERVATION = "InvalidReservation"
SUMMARY = "Remediation governor: kill switch and ledger of mutating actions"
DETAILS_LEDGER_ROWS = 10
RPC_TIMEOUT = timedelta(seconds=5)
UPDATE_TIMEOUT = timedelta(seconds=30)


class GovernorInput(BaseModel):
    """The governor's start (and continue-as-new) argument: the carried state, or None for a fresh one."""

    state: GovernorState | None = None
    # Continue as new past this many history events (or sooner, when Temporal suggests it).
    max_history_events: int = Field(default=5000, ge=10)


@workflow.defn(name="GovernorWorkflow")
class GovernorWorkflow:
    @workflow.init
    def __init__(self, input: GovernorInput) -> None:
        # Here rather than in run(): an update-with-start's update is handled before run() begins.
        self._state = input.state if input.state is not None else GovernorState()
        self._max_history_events = input.max_history_events

    @workflow.run
    async def run(self, input: GovernorInput) -> None:
        self._publish()
        await workflow.wait_condition(self._continue_as_new_due)
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            GovernorInput(state=self._carried_state(), max_history_events=self._max_history_events),
            memo=memo_of(self._state),
        )

    # ---- updates ------------------------------------------------------------------------------------------

    @workflow.update(name="reserve")
    def reserve(self, reservation: Reservation) -> ReservationResult:
        """Grant or refuse one mutating action. No await from check to record: see the module docstring."""
        state, action = self._state, reservation.action
        if not action.type.mutating:
            return ReservationResult(granted=True, reason=f"{action.type.value} is not a mutating action")
        if state.killswitch:
            return self._refuse(f"kill switch is on (set by {state.killswitch_by}: {state.killswitch_reason or '-'})")
        existing = self._entry(reservation.action_id)
        if existing is not None and existing.outcome not in FREED:
            return ReservationResult(granted=True, reason=f"already granted ({existing.outcome})")
        now = workflow.now()
        live = [
            entry
            for entry in state.ledger
            if entry.outcome in COUNTED and entry.at > now - WINDOW and entry.action_id != reservation.action_id
        ]
        workload = f"{action.namespace}/{action.target}"
        on_workload = sum(1 for entry in live if (entry.namespace, entry.target) == (action.namespace, action.target))
        limits = reservation.limits
        if on_workload >= limits.per_workload_per_hour:
            return self._refuse(
                f"{workload} already has {on_workload} mutating action(s) in the last hour "
                f"(limit {limits.per_workload_per_hour} per workload)"
            )
        if len(live) >= limits.global_per_hour:
            return self._refuse(
                f"{len(live)} mutating action(s) in the last hour (global limit {limits.global_per_hour})"
            )
        if existing is not None:
            state.ledger.remove(existing)  # re-reserved after a release: it moves to the end, oldest first
        state.ledger.append(
            LedgerEntry(
                action_id=reservation.action_id,
                workflow_id=reservation.workflow_id,
                type=action.type,
                namespace=action.namespace,
                target=action.target,
                at=now,
            )
        )
        state.granted += 1
        self._publish()
        return ReservationResult(granted=True, reason=f"granted: {on_workload + 1} on {workload} in the last hour")

    @reserve.validator
    def validate_reservation(self, reservation: Reservation) -> None:
        if not reservation.action_id.strip():
            raise ApplicationError("action_id must not be empty", type=INVALID_RESERVATION)
        if not reservation.workflow_id.strip():
            raise ApplicationError("workflow_id must not be empty", type=INVALID_RESERVATION)
        if reservation.action.type.mutating and not reservation.action.target:
            raise ApplicationError(
                f"a {reservation.action.type.value} action must name its target", type=INVALID_RESERVATION
            )

    @workflow.update(name="report")
    def report(self, report: ActionReport) -> LedgerEntry | None:
        """Record how a reserved action ended; None when the action id is not (or no longer) in the ledger."""
        entry = self._entry(report.action_id)
        if entry is None:
            return None
        if entry.outcome not in CHANGED or report.outcome == "undone":
            entry.outcome = report.outcome
            self._publish()
        return entry

    @workflow.update(name="set_killswitch")
    def set_killswitch(self, request: KillSwitchRequest) -> GovernorState:
        state = self._state
        state.killswitch = request.on
        state.killswitch_by = request.by
        state.killswitch_reason = request.reason
        state.killswitch_at = workflow.now()
        # The memo (a history event) makes each flip visible in the UI's list and in the workflow's history.
        workflow.upsert_memo(memo_of(state))
        self._publish()
        return state

    # ---- queries ------------------------------------------------------------------------------------------

    @workflow.query(name="state")
    def state(self) -> GovernorState:
        return self._state

    @workflow.query(name="is_killed")
    def is_killed(self) -> bool:
        return self._state.killswitch

    # ---- helpers ------------------------------------------------------------------------------------------

    def _entry(self, action_id: str) -> LedgerEntry | None:
        return next((entry for entry in self._state.ledger if entry.action_id == action_id), None)

    def _refuse(self, reason: str) -> ReservationResult:
        self._state.refused += 1
        self._publish()
        return ReservationResult(granted=False, reason=reason)

    def _publish(self) -> None:
        # Details are not a command: keeping the UI's view current costs no history.
        workflow.set_current_details(details_markdown(self._state, workflow.now()))

    def _continue_as_new_due(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= self._max_history_events

    def _carried_state(self) -> GovernorState:
        """The state for the next run: entries outside the rate window are no longer needed."""
        since = workflow.now() - WINDOW
        return self._state.model_copy(update={"ledger": [entry for entry in self._state.ledger if entry.at > since]})


def memo_of(state: GovernorState) -> dict[str, Any]:
    return {
        "killswitch": state.killswitch,
        "killswitch_by": state.killswitch_by,
        "killswitch_reason": state.killswitch_reason,
        "killswitch_at": state.killswitch_at.isoformat() if state.killswitch_at else None,
    }


def details_markdown(state: GovernorState, now: datetime) -> str:
    if state.killswitch:
        head = f"**KILL SWITCH ON**: no mutating action is granted (set by {state.killswitch_by}"
        head += f" at {state.killswitch_at:%Y-%m-%d %H:%M:%S}Z" if state.killswitch_at else ""
        head += f": {state.killswitch_reason})" if state.killswitch_reason else ")"
    else:
        head = "**Kill switch off**: mutating actions are granted within the rate limits"
        if state.killswitch_by:
            head += f" (last set by {state.killswitch_by})"
    live = [entry for entry in state.ledger if entry.outcome in COUNTED and entry.at > now - WINDOW]
    lines = [
        head,
        "",
        f"- mutating actions holding a slot in the last hour: {len(live)}",
        f"- since the governor started: {state.granted} granted, {state.refused} refused",
    ]
    if state.ledger:
        lines += ["", "| at | action | target | outcome | incident |", "|---|---|---|---|---|"]
        for entry in state.ledger[-DETAILS_LEDGER_ROWS:]:
            lines.append(
                f"| {entry.at:%H:%M:%S} | {entry.type.value} | {entry.namespace}/{entry.target} | {entry.outcome}"
                f" | {entry.workflow_id} |"
            )
    return "\n".join(lines)


# ---- clients: the front door, the CLI and the activities ---------------------------------------------------------


def _start_operation(
    task_queue: str, workflow_id: str, input: GovernorInput | None = None
) -> WithStartWorkflowOperation[GovernorWorkflow, None]:
    """Start the governor unless it runs; a terminated or failed governor may start again."""
    return WithStartWorkflowOperation(
        GovernorWorkflow.run,
        input or GovernorInput(),
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary=SUMMARY,
        memo=memo_of(GovernorState()),
    )


async def ensure_governor(
    client: Client,
    task_queue: str,
    *,
    workflow_id: str = GOVERNOR_WORKFLOW_ID,
    input: GovernorInput | None = None,
) -> WorkflowHandle[GovernorWorkflow, None]:
    """The running governor's handle, starting it first when it is not running."""
    return await client.start_workflow(
        GovernorWorkflow.run,
        input or GovernorInput(),
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary=SUMMARY,
        memo=memo_of(GovernorState()),
        rpc_timeout=RPC_TIMEOUT,
    )


async def reserve_with_start(
    client: Client, task_queue: str, reservation: Reservation, *, workflow_id: str = GOVERNOR_WORKFLOW_ID
) -> ReservationResult:
    """The ``reserve`` update, starting the governor in the same call when it is not running."""
    return await client.execute_update_with_start_workflow(
        GovernorWorkflow.reserve,
        reservation,
        start_workflow_operation=_start_operation(task_queue, workflow_id),
        rpc_timeout=UPDATE_TIMEOUT,
    )


async def report_with_start(
    client: Client, task_queue: str, report: ActionReport, *, workflow_id: str = GOVERNOR_WORKFLOW_ID
) -> LedgerEntry | None:
    return await client.execute_update_with_start_workflow(
        GovernorWorkflow.report,
        report,
        start_workflow_operation=_start_operation(task_queue, workflow_id),
        rpc_timeout=UPDATE_TIMEOUT,
    )


async def set_killswitch_with_start(
    client: Client, task_queue: str, request: KillSwitchRequest, *, workflow_id: str = GOVERNOR_WORKFLOW_ID
) -> GovernorState:
    return await client.execute_update_with_start_workflow(
        GovernorWorkflow.set_killswitch,
        request,
        start_workflow_operation=_start_operation(task_queue, workflow_id),
        rpc_timeout=UPDATE_TIMEOUT,
    )


async def governor_state(
    client: Client, *, workflow_id: str = GOVERNOR_WORKFLOW_ID, rpc_timeout: timedelta = RPC_TIMEOUT
) -> GovernorState:
    """The ``state`` query; a governor that never ran has the empty state (kill switch off, empty ledger)."""
    handle = client.get_workflow_handle_for(GovernorWorkflow.run, workflow_id)
    try:
        return await handle.query(GovernorWorkflow.state, rpc_timeout=rpc_timeout)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return GovernorState()
        raise


class GovernorActivities:
    """How workflows reach the governor: activities may use the client, workflows may not call updates."""

    def __init__(self, client: Client, task_queue: str, *, workflow_id: str = GOVERNOR_WORKFLOW_ID) -> None:
        self._client = client
        self._task_queue = task_queue
        self._workflow_id = workflow_id

    @activity.defn
    async def reserve_action(self, reservation: Reservation) -> ReservationResult:
        try:
            return await reserve_with_start(self._client, self._task_queue, reservation, workflow_id=self._workflow_id)
        except WorkflowUpdateFailedError as err:
            raise _non_retryable(err) from err

    @activity.defn
    async def report_action(self, report: ActionReport) -> None:
        try:
            await report_with_start(self._client, self._task_queue, report, workflow_id=self._workflow_id)
        except WorkflowUpdateFailedError as err:
            raise _non_retryable(err) from err

    @activity.defn
    async def killswitch_state(self) -> GovernorState:
        return await governor_state(self._client, workflow_id=self._workflow_id)


def _non_retryable(err: WorkflowUpdateFailedError) -> ApplicationError:
    """A rejected update (the validator's answer) is final: retrying the same argument cannot change it."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return ApplicationError(cause.message, type=cause.type, non_retryable=True)
    return ApplicationError(str(cause or err), type=INVALID_RESERVATION, non_retryable=True)
