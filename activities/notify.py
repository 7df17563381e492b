"""The console notifier: structured log lines for the humans on call when Slack is not configured."""

from __future__ import annotations

import structlog
from temporalio import activity

from models.incident import Notification

log = structlog.get_logger("incident.notify")


class ConsoleNotifier:
    @activity.defn
    async def notify(self, notification: Notification) -> None:
        log.warning(
            notification.event,
            workflow_id=notification.workflow_id,
            phase=notification.phase,
            severity=notification.severity,
            title=notification.title,
            text=notification.text,
            plan_id=notification.plan.id if notification.plan else None,
            actions=[a.model_dump(mode="json") for a in notification.plan.actions] if notification.plan else [],
        )
