"""The ``notify`` activity: a structured log line for the humans on call always, and the incident's Slack message
when Slack is configured (``SLACK_BOT_TOKEN`` and ``SLACK_CHANNEL``; see ``activities/slack.py``)."""

from __future__ import annotations

import structlog
from temporalio import activity

from activities.slack import SlackNotifier
from models.incident import Notification, NotificationReceipt

log = structlog.get_logger("incident.notify")


class Notifier:
    """``notify``: the console line, then Slack when ``slack`` is given. Slack trouble never fails the activity:
    it comes back in ``NotificationReceipt.problems``."""

    def __init__(self, slack: SlackNotifier | None = None) -> None:
        self.slack = slack

    @activity.defn(name="notify")
    async def notify(self, notification: Notification) -> NotificationReceipt:
        log.warning(
            notification.event,
            workflow_id=notification.workflow_id,
            phase=notification.phase,
            severity=notification.severity,
            title=notification.title,
            text=notification.text,
            plan_id=notification.plan.id if notification.plan else None,
            actions=[a.model_dump(mode="json") for a in notification.plan.actions] if notification.plan else [],
            **_extras(notification),
        )
        if self.slack is None:
            return NotificationReceipt(slack_channel=notification.slack_channel, slack_ts=notification.slack_ts)
        return await self.slack.send(notification)


class ConsoleNotifier(Notifier):
    """The notifier without Slack: the log line only."""

    def __init__(self) -> None:
        super().__init__(None)


def _extras(notification: Notification) -> dict[str, object]:
    extras: dict[str, object] = {}
    if notification.decided_by:
        extras["decided_by"] = notification.decided_by
    if notification.outcome:
        extras["outcome"] = notification.outcome
    return extras
