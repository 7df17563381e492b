"""PagerDuty Events API v2: page a person when an incident escalates, resolve the page when it resolves.

One activity, ``page``, POSTs one event to the enqueue URL (``PAGERDUTY_EVENTS_URL``, by default
``https://events.pagerduty.com/v2/enqueue``). The incident's workflow id is the ``dedup_key``: every trigger of
the same incident lands on the same PagerDuty alert, and the resolve closes it.

What PagerDuty answers decides what the activity does (PagerDuty's documented retry table):

* 202 ``{"status": "success", "message": "Event processed", "dedup_key": ...}``: ``PageResult(sent=True)``.
* 400 ``{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}``: the same event
  would be refused again, so it is not retried: ``PageResult(sent=False)`` whose detail names the errors. The
  incident records it and goes on; a page that could not be sent never fails an incident.
* 429, 5xx, a timeout or a connection error: a retryable ``ApplicationError`` (type ``PagerDutyUnavailable``),
  so Temporal retries with the workflow's retry policy within its schedule-to-close budget. A ``Retry-After``
  header, when PagerDuty sends one, sets the next retry's delay.
* Any other status (404 for a wrong URL, 413 ...): not retried, ``PageResult(sent=False)`` with the status.

Without ``PAGERDUTY_ROUTING_KEY`` nothing is sent at all. The routing key is a credential: it is never logged,
and it is scrubbed from any text PagerDuty's answer might echo back.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.http_body import read_capped
from models.incident import PageRequest, PageResult, Severity

if TYPE_CHECKING:
    from config.settings import Settings

log = structlog.get_logger(__name__)

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
NOT_CONFIGURED = "PagerDuty not configured (set PAGERDUTY_ROUTING_KEY)"
PAGERDUTY_UNAVAILABLE = "PagerDutyUnavailable"
CLIENT = "incident-agent"
SUMMARY_CHARS = 1024  # PagerDuty's limit on payload.summary
DEDUP_KEY_CHARS = 255  # PagerDuty's limit on dedup_key
# PagerDuty refuses bodies over 512 KB; custom details are cut well before that.
MAX_DETAILS_BYTES = 256 * 1024
_RESPONSE_BYTES = 16 * 1024
_DETAIL_CHARS = 500
_MAX_RETRY_AFTER_S = 600.0

# Our severities in PagerDuty's words (PD-CEF: critical, error, warning, info).
SEVERITY = {
    Severity.critical: "critical",
    Severity.high: "error",
    Severity.medium: "warning",
    Severity.low: "info",
}


def event_body(request: PageRequest, routing_key: str) -> dict[str, Any]:
    """The Events API v2 body for ``request``: a trigger with its payload, or a bare resolve."""
    dedup_key = request.workflow_id[:DEDUP_KEY_CHARS]
    if request.action == "resolve":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    details = dict(request.details)
    component = details.pop("component", None)
    summary = " ".join(request.summary.split()) or f"Incident {request.workflow_id}"
    payload: dict[str, Any] = {
        "summary": _cut(summary, SUMMARY_CHARS),
        "source": request.source.strip() or CLIENT,
        "severity": SEVERITY[request.severity],
    }
    if isinstance(component, str) and component.strip():
        payload["component"] = component.strip()
    payload["custom_details"] = _bounded_details(details)
    links = [
        {key: str(link[key]) for key in ("href", "text") if link.get(key)} for link in request.links if link.get("href")
    ]
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": payload,
        "links": links,
        "client": CLIENT,
    }


class PagerDutyActivities:
    """Holds one HTTP session for the worker's lifetime; ``routing_key`` None: PagerDuty is not configured."""

    def __init__(
        self,
        routing_key: str | None,
        events_url: str,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self._routing_key = routing_key or None
        self._events_url = events_url or DEFAULT_EVENTS_URL
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings, session: aiohttp.ClientSession) -> PagerDutyActivities:
        key = settings.pagerduty_routing_key.get_secret_value() if settings.pagerduty_routing_key else None
        return cls(key, settings.pagerduty_events_url, session)

    @property
    def configured(self) -> bool:
        return self._routing_key is not None

    def __repr__(self) -> str:  # never show the routing key, even in a debugger or a traceback
        return f"PagerDutyActivities(events_url={self._events_url!r}, configured={self.configured})"

    @activity.defn
    async def page(self, request: PageRequest) -> PageResult:
        """Send one trigger or resolve event; see the module's docstring for what each answer becomes."""
        if self._routing_key is None:
            return PageResult(sent=False, detail=NOT_CONFIGURED)
        body = event_body(request, self._routing_key)
        try:
            async with self._session.post(self._events_url, json=body, timeout=self._timeout) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                raw, _ = await read_capped(response, _RESPONSE_BYTES)
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning(
                "pagerduty_unreachable", action=request.action, dedup_key=body["dedup_key"], error=type(exc).__name__
            )
            raise ApplicationError(
                self._scrub(f"PagerDuty at {self._events_url} unreachable: {type(exc).__name__}: {exc}"),
                type=PAGERDUTY_UNAVAILABLE,
                non_retryable=False,
            ) from exc
        answer = _json_object(raw)
        log.info("pagerduty_event", action=request.action, dedup_key=body["dedup_key"], status=status)
        if 200 <= status < 300:
            message = str(answer.get("message") or "Event processed")
            dedup_key = answer.get("dedup_key") or body["dedup_key"]
            return PageResult(sent=True, detail=self._scrub(f"{status} {message} (dedup_key {dedup_key})"))
        if status == 429 or status >= 500:
            what = "rate limited" if status == 429 else "server error"
            raise ApplicationError(
                self._scrub(f"PagerDuty {what} ({status}): {_describe(answer, raw)}"),
                type=PAGERDUTY_UNAVAILABLE,
                non_retryable=False,
                next_retry_delay=_retry_after(retry_after),
            )
        # 400 (and any other client error): the same event would be refused again; record it, never retry.
        detail = self._scrub(f"PagerDuty refused the event ({status}): {_describe(answer, raw)}")
        log.warning("pagerduty_refused", action=request.action, dedup_key=body["dedup_key"], detail=detail)
        return PageResult(sent=False, detail=detail)

    def _scrub(self, text: str) -> str:
        if self._routing_key:
            text = text.replace(self._routing_key, "<routing key>")
        return text


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bounded_details(details: dict[str, Any]) -> dict[str, Any]:
    encoded = json.dumps(details, default=str)
    if len(encoded.encode()) <= MAX_DETAILS_BYTES:
        return json.loads(encoded)  # plain JSON: whatever the values were, they serialise the same way
    return {"note": f"custom details of {len(encoded.encode())} bytes left out (over {MAX_DETAILS_BYTES})"}


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _describe(answer: dict[str, Any], raw: bytes) -> str:
    """PagerDuty's own words: message and errors, else the start of the body."""
    if not answer:
        text = " ".join(raw.decode("utf-8", errors="replace").split())
        return _cut(text, _DETAIL_CHARS) or "no body"
    parts = [str(answer.get("message") or answer.get("status") or "")]
    errors = answer.get("errors")
    if isinstance(errors, list) and errors:
        parts.append("errors: " + "; ".join(str(error) for error in errors))
    return _cut(": ".join(part for part in parts if part) or "no message", _DETAIL_CHARS)


def _retry_after(header: str | None) -> timedelta | None:
    """A ``Retry-After`` in seconds (bounded), or None to leave the delay to the retry policy."""
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        return None  # an HTTP date: rare for an API; the retry policy's backoff is good enough
    if not 0 < seconds < float("inf"):
        return None
    return timedelta(seconds=min(seconds, _MAX_RETRY_AFTER_S))
