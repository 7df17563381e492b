"""Every log line an activity writes carries the incident it works for."""

from __future__ import annotations

from typing import Any

import structlog
from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)


class _BindIncident(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        # contextvars are per asyncio task, and each activity runs in its own task: no leak between incidents.
        structlog.contextvars.bind_contextvars(
            incident_id=info.workflow_id, activity=info.activity_type, attempt=info.attempt
        )
        try:
            return await self.next.execute_activity(input)
        finally:
            structlog.contextvars.clear_contextvars()


class IncidentLogContext(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BindIncident(next)
