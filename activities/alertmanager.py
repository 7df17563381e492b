"""Alertmanager API v2: the other alerts firing around the incident, as evidence.

Which alerts count as related:

* active alerts (not silenced, not inhibited, not resolved) whose ``namespace`` label equals the incident's
  namespace, and
* active alerts of any namespace, or none, whose ``node`` label equals the incident's node (when the request
  names one): a node that is NotReady or under pressure is related to every workload on it, and such alerts
  usually carry no namespace or the exporter's.

Each set is one ``GET /api/v2/alerts`` with a ``filter`` matcher (Alertmanager ANDs repeated filters, so the
union takes two requests, sent concurrently). The incident's own alerts are dropped: an alert is the incident's
when its label set equals one of ``request.alert_labels``, the labels Alertmanager itself sent in the webhook
(Alertmanager's fingerprint is a hash of exactly that label set, so this is the same test as comparing
fingerprints). The rest are ranked most severe first, then earliest ``startsAt`` first, and cut to ``max_alerts``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import (
    BAD_QUERY,
    SOURCE_FORBIDDEN,
    SOURCE_MISCONFIGURED,
    SOURCE_UNAVAILABLE,
    not_configured,
)
from models.evidence import EvidenceRequest, RelatedAlert, RelatedAlerts
from models.incident import Severity
from triage.labels import severity_of

log = structlog.get_logger(__name__)

_SEVERITY_RANK = {Severity.critical: 0, Severity.high: 1, Severity.medium: 2, Severity.low: 3}
_SUMMARY_MAX_CHARS = 500
_MESSAGE_MAX_CHARS = 300
_FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


def matcher(name: str, value: str) -> str:
    """An Alertmanager equality matcher, ``name="value"``, with the value quoted as Alertmanager parses it.

    Inside the quotes Alertmanager unescapes ``\\\\``, ``\\"`` and ``\\n``; every other character is literal
    (commas and braces included, since the API parses each ``filter`` parameter as one matcher).
    """
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{name}="{escaped}"'


class AlertmanagerActivities:
    """Holds one HTTP session for the worker's lifetime; constructed with the base URL (None: not configured)."""

    def __init__(
        self,
        base_url: str | None,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = 10.0,
        max_alerts: int = 20,
    ) -> None:
        self._base_url = base_url.rstrip("/") if base_url else None
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_alerts = max(0, max_alerts)

    @activity.defn
    async def gather_related_alerts(self, request: EvidenceRequest) -> RelatedAlerts:
        """Other active alerts in the incident's namespace or on its node, most severe and earliest first."""
        if self._base_url is None:
            raise not_configured("Alertmanager", "ALERTMANAGER_URL")
        filters: list[str] = []
        if request.namespace:
            filters.append(matcher("namespace", request.namespace))
        if request.node:
            filters.append(matcher("node", request.node))
        if not filters:
            # An empty namespace matcher would select every alert without a namespace label: not "related".
            log.info("alertmanager_related_alerts_skipped", reason="request names neither namespace nor node")
            return RelatedAlerts()

        error: Exception | None = None
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._active_alerts(query)) for query in filters]
        except ExceptionGroup as failed:
            error = _most_telling(failed)
        if error is not None:  # raised outside the except block: the error keeps its own cause, not the group
            raise error
        fetched = _unique([alert for task in tasks for alert in task.result()])

        own = [dict(labels) for labels in request.alert_labels]
        now = datetime.now(UTC)
        related = [
            alert
            for alert in (_related_alert(raw, now) for raw in fetched)
            if alert is not None and alert.labels not in own
        ]
        related.sort(key=_rank)
        kept = related[: self._max_alerts]
        log.info(
            "alertmanager_related_alerts",
            namespace=request.namespace,
            node=request.node or None,
            fetched=len(fetched),
            related=len(related),
            returned=len(kept),
            dropped=len(related) - len(kept),
        )
        return RelatedAlerts(alerts=kept)

    async def _active_alerts(self, filter_matcher: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` for active, unsilenced, uninhibited alerts matching one matcher."""
        url = f"{self._base_url}/api/v2/alerts"
        params = [
            ("active", "true"),
            ("silenced", "false"),
            ("inhibited", "false"),
            ("filter", filter_matcher),
        ]
        try:
            async with self._session.get(url, params=params, timeout=self._timeout) as response:
                status = response.status
                text = await response.text(errors="replace")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ApplicationError(
                f"Alertmanager at {self._base_url} unreachable: {type(exc).__name__}: {exc}",
                type=SOURCE_UNAVAILABLE,
            ) from exc
        if status == 200:
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            if not isinstance(body, list):
                raise ApplicationError(
                    f"{url} answered 200 without a list of alerts: ALERTMANAGER_URL does not point at an "
                    f"Alertmanager v2 API ({_message(text)})",
                    type=SOURCE_MISCONFIGURED,
                    non_retryable=True,
                )
            return [alert for alert in body if isinstance(alert, dict)]
        message = _message(text)
        if status == 400:
            raise ApplicationError(
                f"Alertmanager rejected the filter {filter_matcher!r}: {message}",
                type=BAD_QUERY,
                non_retryable=True,
            )
        if status in (401, 403):
            raise ApplicationError(
                f"Alertmanager at {self._base_url} answered {status}: the agent lacks a credential or a "
                f"permission ({message})",
                type=SOURCE_FORBIDDEN,
                non_retryable=True,
            )
        if status == 404:
            raise ApplicationError(
                f"{url} answered 404: ALERTMANAGER_URL does not point at an Alertmanager v2 API",
                type=SOURCE_MISCONFIGURED,
                non_retryable=True,
            )
        # 5xx (Alertmanager or a proxy in front of it), 429 and anything unexpected may pass on a retry.
        raise ApplicationError(f"Alertmanager answered {status}: {message}", type=SOURCE_UNAVAILABLE)


def _most_telling(failed: ExceptionGroup) -> Exception:
    """One error out of the concurrent requests: a non-retryable one (a fault retrying cannot fix) first."""
    errors = list(failed.exceptions)
    for error in errors:
        if isinstance(error, ApplicationError) and error.non_retryable:
            return error
    return errors[0]


def _message(text: str) -> str:
    """Alertmanager's error message: its API sends a JSON string (or an object with a message); proxies text."""
    try:
        body = json.loads(text)
    except ValueError:
        body = text
    if isinstance(body, dict):
        body = body.get("message") or body.get("error") or json.dumps(body)
    message = str(body).strip() or "empty body"
    return message[:_MESSAGE_MAX_CHARS]


def _unique(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per alert: the namespace and node queries can both return the same one."""
    seen: set[object] = set()
    unique = []
    for alert in alerts:
        labels = alert.get("labels")
        key: object = alert.get("fingerprint") or (
            tuple(sorted(labels.items())) if isinstance(labels, dict) else id(alert)
        )
        if key not in seen:
            seen.add(key)
            unique.append(alert)
    return unique


def _related_alert(raw: Mapping[str, Any], now: datetime) -> RelatedAlert | None:
    """A RelatedAlert from one v2 ``gettableAlert``; None for one that is malformed or already resolved."""
    labels = raw.get("labels")
    if not isinstance(labels, dict) or not labels:
        return None
    ends_at = _timestamp(raw.get("endsAt"))
    if ends_at is not None and ends_at <= now:  # Alertmanager filters these too; a resolved alert is no evidence
        return None
    status = raw.get("status")
    annotations = raw.get("annotations")
    annotations = annotations if isinstance(annotations, dict) else {}
    summary = str(annotations.get("summary") or annotations.get("description") or "")
    str_labels = {str(key): str(value) for key, value in labels.items()}
    return RelatedAlert(
        alertname=str_labels.get("alertname", ""),
        labels=str_labels,
        state=str(status.get("state", "")) if isinstance(status, dict) else "",
        starts_at=_timestamp(raw.get("startsAt")),
        summary=summary[:_SUMMARY_MAX_CHARS],
        fingerprint=str(raw.get("fingerprint") or ""),
    )


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.year <= 1:  # Go's zero time: unset
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _rank(alert: RelatedAlert) -> tuple[int, datetime, str, str]:
    return (
        _SEVERITY_RANK[severity_of(alert.labels)],
        alert.starts_at or _FAR_FUTURE,
        alert.alertname,
        alert.fingerprint,
    )
