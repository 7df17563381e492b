"""GovernorWorkflow on the time-skipping server: rate limits, idempotency, the kill switch, concurrency, outcomes,
continue-as-new, and the activities incidents reach it through.

The governor's id is a singleton in production; each test here runs its own governor (``governor-<task queue>``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from models.incident import Action, ActionType
from models.remediation import (
    ActionReport,
    GovernorState,
    KillSwitchRequest,
    Limits,
    Reservation,
    ReservationResult,
)
from workflows.governor import (
    INVALID_RESERVATION,
    SUMMARY,
    GovernorActivities,
    GovernorInput,
    GovernorWorkflow,
    ensure_governor,
    governor_state,
)


def reservation(
    action_id: str,
    *,
    namespace: str = "food",
    target: str = "search",
    per_workload: int = 2,
    global_: int = 10,
    type_: ActionType = ActionType.rollback,
) -> Reservation:
    return Reservation(
        action_id=action_id,
        workflow_id=f"incident-{action_id}",
        action=Action(type=type_, namespace=namespace, target=target),
        limits=Limits(per_workload_per_hour=per_workload, global_per_hour=global_),
    )


@dataclass
class Gov:
    env: WorkflowEnvironment
    task_queue: str
    workflow_id: str
    activities: GovernorActivities

    @property
    def handle(self) -> WorkflowHandle[GovernorWorkflow, None]:
        return self.env.client.get_workflow_handle_for(GovernorWorkflow.run, self.workflow_id)

    async def start(self, **input: object) -> WorkflowHandle[GovernorWorkflow, None]:
        return await ensure_governor(
            self.env.client, self.task_queue, workflow_id=self.workflow_id, input=GovernorInput(**input)
        )

    async def reserve(self, action_id: str, **kwargs: object) -> ReservationResult:
        return await self.handle.execute_update(GovernorWorkflow.reserve, reservation(action_id, **kwargs))  # type: ignore[arg-type]

    async def report(self, action_id: str, outcome: str) -> None:
        await self.activities.report_action(ActionReport(action_id=action_id, outcome=outcome))

    async def killswitch(self, on: bool, by: str = "alice", reason: str = "") -> GovernorState:
        return await self.handle.execute_update(
            GovernorWorkflow.set_killswitch, KillSwitchRequest(on=on, by=by, reason=reason)
        )

    async def state(self) -> GovernorState:
        return await self.handle.query(GovernorWorkflow.state)


@pytest_asyncio.fixture
async def gov(time_skipping_env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Gov]:
    workflow_id = f"governor-{task_queue}"
    activities = GovernorActivities(time_skipping_env.client, task_queue, workflow_id=workflow_id)
    async with Worker(time_skipping_env.client, task_queue=task_queue, workflows=[GovernorWorkflow]):
        yield Gov(time_skipping_env, task_queue, workflow_id, activities)
        # The governor runs forever: end this test's one so the shared server keeps nothing running.
        handle = time_skipping_env.client.get_workflow_handle(workflow_id)
        with contextlib.suppress(RPCError):  # never started, or already ended
            await handle.terminate("test over")


# ---- rate limits --------------------------------------------------------------------------------------------


async def test_per_workload_limit_grants_then_refuses_naming_the_workload(gov: Gov) -> None:
    await gov.start()
    assert (await gov.reserve("a1")).granted
    assert (await gov.reserve("a2")).granted
    refused = await gov.reserve("a3")
    assert not refused.granted
    assert "food/search" in refused.reason and "limit 2 per workload" in refused.reason
    # Another workload has slots of its own.
    assert (await gov.reserve("b1", target="cart")).granted

    state = await gov.state()
    assert [(e.action_id, e.namespace, e.target, e.outcome) for e in state.ledger] == [
        ("a1", "food", "search", "reserved"),
        ("a2", "food", "search", "reserved"),
        ("b1", "food", "cart", "reserved"),
    ]
    assert (state.granted, state.refused) == (3, 1)
    assert state.ledger[0].workflow_id == "incident-a1" and state.ledger[0].type == ActionType.rollback


async def test_global_limit_counts_every_workload(gov: Gov) -> None:
    await gov.start()
    for i in range(3):
        assert (await gov.reserve(f"g{i}", target=f"svc-{i}", global_=3)).granted
    refused = await gov.reserve("g3", target="svc-3", global_=3)
    assert not refused.granted and "global limit 3" in refused.reason


async def test_slots_come_back_after_an_hour_of_workflow_time(gov: Gov) -> None:
    await gov.start()
    assert (await gov.reserve("w1", per_workload=1)).granted
    assert not (await gov.reserve("w2", per_workload=1)).granted
    await gov.env.sleep(3601)
    assert (await gov.reserve("w2", per_workload=1)).granted


async def test_a_retried_reservation_gets_the_same_grant_even_at_the_limit(gov: Gov) -> None:
    await gov.start()
    assert (await gov.reserve("r1", per_workload=1)).granted
    again = await gov.reserve("r1", per_workload=1)
    assert again.granted and "already granted" in again.reason
    state = await gov.state()
    assert [entry.action_id for entry in state.ledger] == ["r1"]
    assert (state.granted, state.refused) == (1, 0)


async def test_non_mutating_actions_are_granted_without_a_slot(gov: Gov) -> None:
    await gov.start()
    await gov.killswitch(True)
    result = await gov.reserve("e1", type_=ActionType.escalate, target="", per_workload=0)
    assert result.granted and "not a mutating action" in result.reason
    assert (await gov.state()).ledger == []


async def test_malformed_reservations_are_rejected_by_the_validator(gov: Gov) -> None:
    await gov.start()
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await gov.reserve("")
    assert isinstance(info.value.cause, ApplicationError) and info.value.cause.type == INVALID_RESERVATION
    with pytest.raises(WorkflowUpdateFailedError):
        await gov.reserve("t1", target="")
    # Through the activity the rejection is final: retrying the same argument cannot change it.
    with pytest.raises(ApplicationError) as activity_error:
        await ActivityEnvironment().run(gov.activities.reserve_action, reservation(""))
    assert activity_error.value.non_retryable and activity_error.value.type == INVALID_RESERVATION
    state = await gov.state()
    assert (state.granted, state.refused, state.ledger) == (0, 0, [])  # a rejected update leaves no trace


# ---- kill switch ----------------------------------------------------------------------------------------------


async def test_kill_switch_refuses_everything_and_shows_in_the_ui(gov: Gov) -> None:
    handle = await gov.start()
    assert (await gov.reserve("k1")).granted
    state = await gov.killswitch(True, "alice", "bad rollout wave")
    assert state.killswitch and state.killswitch_by == "alice" and state.killswitch_reason == "bad rollout wave"
    assert state.killswitch_at is not None
    assert await handle.query(GovernorWorkflow.is_killed)

    refused = await gov.reserve("k2")
    assert not refused.granted and "kill switch is on" in refused.reason and "alice" in refused.reason
    # Even a retry of a reservation granted before the switch was pulled.
    assert not (await gov.reserve("k1")).granted

    description = await handle.describe()
    assert (await description.memo())["killswitch"] is True
    assert (await description.memo())["killswitch_by"] == "alice"
    assert await description.static_summary() == SUMMARY
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert metadata.current_details.startswith("**KILL SWITCH ON**")
    assert "bad rollout wave" in metadata.current_details and "food/search" in metadata.current_details

    state = await gov.killswitch(False, "bob")
    assert not state.killswitch and state.killswitch_by == "bob"
    assert not await handle.query(GovernorWorkflow.is_killed)
    assert (await gov.reserve("k2")).granted
    assert (await (await handle.describe()).memo())["killswitch"] is False
    assert (await gov.state()).refused == 2


# ---- concurrency ----------------------------------------------------------------------------------------------


async def test_thirty_concurrent_incidents_never_exceed_the_workload_limit(gov: Gov) -> None:
    await gov.start()
    results = await asyncio.gather(*(gov.reserve(f"c{i}", per_workload=2) for i in range(30)))
    assert sum(result.granted for result in results) == 2
    state = await gov.state()
    assert (state.granted, state.refused, len(state.ledger)) == (2, 28, 2)


async def test_thirty_concurrent_reservations_through_the_activity_start_one_governor(gov: Gov) -> None:
    # The governor is not running: update-with-start starts it once, and every reservation goes to that run.
    results = await asyncio.gather(
        *(ActivityEnvironment().run(gov.activities.reserve_action, reservation(f"s{i}")) for i in range(30))
    )
    assert sum(result.granted for result in results) == 2
    state = await ActivityEnvironment().run(gov.activities.killswitch_state)
    assert (state.granted, state.refused) == (2, 28)  # one run saw all thirty


# ---- outcomes -------------------------------------------------------------------------------------------------


async def test_released_and_failed_free_the_slot_dry_runs_do_not_count_and_changes_stick(gov: Gov) -> None:
    await gov.start()
    one = {"per_workload": 1}
    assert (await gov.reserve("o1", **one)).granted
    assert not (await gov.reserve("o2", **one)).granted
    await gov.report("o1", "released")  # not approved: the slot is free again
    assert (await gov.reserve("o2", **one)).granted
    await gov.report("o2", "failed")  # the call failed: nothing changed
    assert (await gov.reserve("o3", **one)).granted
    await gov.report("o3", "dry_run")  # a server-side dry run is not a mutation
    assert (await gov.reserve("o4", **one)).granted
    await gov.report("o4", "applied")
    assert not (await gov.reserve("o5", **one)).granted
    await gov.report("o4", "failed")  # too late: a change happened and keeps its slot
    assert not (await gov.reserve("o5", **one)).granted
    await gov.report("o4", "undone")  # an undo is a change too
    assert not (await gov.reserve("o5", **one)).granted

    # A released action reserved again is judged like a new one: now the workload is full.
    refused = await gov.reserve("o1", **one)
    assert not refused.granted and "food/search" in refused.reason
    # A report for an action the governor does not know changes nothing.
    assert (
        await gov.handle.execute_update(GovernorWorkflow.report, ActionReport(action_id="nope", outcome="applied"))
        is None
    )

    state = await gov.state()
    assert {entry.action_id: entry.outcome for entry in state.ledger} == {
        "o1": "released",
        "o2": "failed",
        "o3": "dry_run",
        "o4": "undone",
    }


# ---- continue-as-new ------------------------------------------------------------------------------------------


async def test_continue_as_new_carries_the_state_and_prunes_the_old_ledger(gov: Gov) -> None:
    handle = await gov.start(max_history_events=30)
    first_run = (await handle.describe()).run_id
    assert (await gov.reserve("old", target="cart")).granted
    await gov.killswitch(True, "alice", "freeze")
    assert not (await gov.reserve("refused-1")).granted
    await gov.killswitch(False, "alice", "thaw")
    await gov.env.sleep(3700)  # "old" leaves the rate window

    runs = {first_run}
    for i in range(30):
        assert (await gov.reserve(f"n{i}", per_workload=100, global_=100)).granted
        runs.add((await handle.describe()).run_id)
        if len(runs) > 1 and i >= 10:
            break
    assert len(runs) >= 2, "the governor never continued as new"

    state = await gov.state()
    assert "old" not in {entry.action_id for entry in state.ledger}
    assert [entry.action_id for entry in state.ledger] == [f"n{j}" for j in range(i + 1)]
    assert (state.granted, state.refused) == (i + 2, 1)
    assert (state.killswitch, state.killswitch_by, state.killswitch_reason) == (False, "alice", "thaw")
    # The new run still applies the carried ledger: n0 is a retry, and the limit counts what the old run granted.
    assert "already granted" in (await gov.reserve("n0", per_workload=100, global_=100)).reason
    assert not (await gov.reserve("over", per_workload=i + 1, global_=100)).granted
    description = await handle.describe()
    assert description.run_id != first_run
    assert (await description.memo())["killswitch_reason"] == "thaw"

    # The first run's history replays against today's code.
    history = await gov.env.client.get_workflow_handle(gov.workflow_id, run_id=first_run).fetch_history()
    replayer = Replayer(workflows=[GovernorWorkflow], data_converter=pydantic_data_converter)
    assert (await replayer.replay_workflow(history, raise_on_replay_failure=True)).replay_failure is None


# ---- activities and helpers ----------------------------------------------------------------------------------


async def test_state_of_a_governor_that_never_ran_is_empty(gov: Gov) -> None:
    assert await governor_state(gov.env.client, workflow_id=gov.workflow_id) == GovernorState()
    assert await ActivityEnvironment().run(gov.activities.killswitch_state) == GovernorState()


async def test_ensure_governor_reuses_the_running_one(gov: Gov) -> None:
    first = await gov.start()
    await gov.reserve("u1")
    again = await ensure_governor(gov.env.client, gov.task_queue, workflow_id=gov.workflow_id)
    assert again.result_run_id == first.result_run_id
    assert [entry.action_id for entry in (await gov.state()).ledger] == ["u1"]
