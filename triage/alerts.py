"""Alertmanager notifications in, the incident's own alert records out."""

from __future__ import annotations

from datetime import datetime

from models.alertmanager import AlertmanagerWebhook
from models.incident import Alert, AlertNotification, IncidentState
from triage.identity import group_key_from_fingerprints, labels_fingerprint


def notification_from_webhook(webhook: AlertmanagerWebhook, received_at: datetime) -> AlertNotification:
    alerts = [
        Alert(
            fingerprint=alert.fingerprint or labels_fingerprint(alert.labels),
            status=alert.status or webhook.status,
            labels=alert.labels,
            annotations=alert.annotations,
            starts_at=alert.starts_at,
            ends_at=alert.ends_at,
            generator_url=alert.generator_url,
        )
        for alert in webhook.alerts
    ]
    group_key = webhook.group_key or group_key_from_fingerprints(alert.fingerprint for alert in alerts)
    return AlertNotification(
        source="alertmanager",
        group_key=group_key,
        status=webhook.status,
        receiver=webhook.receiver,
        group_labels=webhook.group_labels,
        common_labels=webhook.common_labels,
        common_annotations=webhook.common_annotations,
        external_url=webhook.external_url,
        truncated_alerts=webhook.truncated_alerts,
        alerts=alerts,
        received_at=received_at,
    )


def merge_notification(state: IncidentState, notification: AlertNotification) -> tuple[list[str], list[str]]:
    """Fold a notification into the incident; return (fingerprints newly firing, fingerprints newly resolved).

    Alertmanager re-sends a group's alerts on every repeat interval, and an HA pair delivers each notification
    more than once: an alert whose status did not change is updated silently.
    """
    newly_firing: list[str] = []
    newly_resolved: list[str] = []
    for alert in notification.alerts:
        previous = state.alerts.get(alert.fingerprint)
        if previous is not None and _is_older(alert, previous):
            continue  # a delayed delivery must not undo what a newer one said
        state.alerts[alert.fingerprint] = alert
        if alert.status == "firing" and (previous is None or previous.status != "firing"):
            newly_firing.append(alert.fingerprint)
        elif alert.status == "resolved" and (previous is None or previous.status != "resolved"):
            newly_resolved.append(alert.fingerprint)
    state.notifications += 1
    if not state.group_key:
        state.group_key = notification.group_key
        state.source = notification.source
    return newly_firing, newly_resolved


def fires_again(state: IncidentState, notification: AlertNotification) -> list[str]:
    """Fingerprints this notification would turn (back) to firing, without changing the incident."""
    again = []
    for alert in notification.alerts:
        previous = state.alerts.get(alert.fingerprint)
        if alert.status != "firing" or (previous is not None and _is_older(alert, previous)):
            continue
        if previous is None or previous.status != "firing":
            again.append(alert.fingerprint)
    return again


def _is_older(candidate: Alert, current: Alert) -> bool:
    """Whether a delivery says less than what the incident already knows about this alert.

    A re-firing alert gets a new ``startsAt``; a firing delivery of the same instance (same ``startsAt``) that
    arrives after its resolution is a late duplicate from an HA peer.
    """
    if candidate.starts_at < current.starts_at:
        return True
    return candidate.starts_at == current.starts_at and candidate.status == "firing" and current.status == "resolved"
