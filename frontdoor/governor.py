"""What the front door and the operator CLI ask of the GovernorWorkflow: its state, and the kill switch."""

from __future__ import annotations

from temporalio.client import Client, WorkflowUpdateRPCTimeoutOrCancelledError

from frontdoor.gateway import TemporalUnavailable, _temporal_errors
from models.remediation import GOVERNOR_WORKFLOW_ID, GovernorState, KillSwitchRequest
from workflows.governor import governor_state, set_killswitch_with_start


class GovernorGateway:
    """Temporal's failures surface as ``TemporalUnavailable`` (503, CLI exit 2), as for incidents."""

    def __init__(self, client: Client, task_queue: str, *, workflow_id: str = GOVERNOR_WORKFLOW_ID) -> None:
        self._client = client
        self._task_queue = task_queue
        self.workflow_id = workflow_id

    async def state(self) -> GovernorState:
        """The ``state`` query; the empty state when no governor has run yet."""
        async with _temporal_errors():
            return await governor_state(self._client, workflow_id=self.workflow_id)

    async def set_killswitch(self, request: KillSwitchRequest) -> GovernorState:
        """Flip the kill switch, starting the governor first when it is not running."""
        try:
            async with _temporal_errors():
                return await set_killswitch_with_start(
                    self._client, self._task_queue, request, workflow_id=self.workflow_id
                )
        except WorkflowUpdateRPCTimeoutOrCancelledError as err:
            # Temporal took the request but no worker ran the governor in time: the flip may not have happened.
            raise TemporalUnavailable(f"no worker answered the governor on {self._task_queue!r}") from err
