"""The front door's Prometheus metrics, served at ``GET /metrics`` (prometheus-client).

Each app has a registry of its own (not the library's global one), so tests can build many apps and read each
one's figures. Counted:

- every request: duration by route (the route's pattern, never the path, so incident ids make no series),
  method and status;
- ``POST /alerts/alertmanager`` by outcome: the delivery's action (started, signalled, ignored) or the error
  status (400, 401, 413, 503; 500 for a bug);
- ``POST /slack/interactions`` by what the front door answered Slack (acked, bad_signature, not_configured ...);
- operator decisions and verdicts by channel (http, slack) and outcome (approved/rejected, correct/wrong, or the
  reason nothing changed: the workflow's refusal, not_found, unauthorized, invalid, unavailable).

Label values come from closed sets: statuses, routes, actions and the workflow's error types.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from frontdoor.gateway import DecisionRefused, IncidentGateway, IncidentNotFound, TemporalUnavailable
from frontdoor.slack import PATH as SLACK_PATH
from models.incident import Decision, DecisionResult, Feedback, FeedbackRecord

WEBHOOK_ROUTE = "/alerts/alertmanager"
DECISION_ROUTE = "/incidents/{workflow_id}/decision"
FEEDBACK_ROUTE = "/incidents/{workflow_id}/feedback"
METRICS_ROUTE = "/metrics"

# What a handler knows that the status does not say (the delivery's action, the decision's verdict): it puts it
# here and the middleware counts it.
OUTCOME: web.RequestKey[str] = web.RequestKey("metrics_outcome", str)

WEBHOOK_OUTCOMES = ("started", "signalled", "ignored", "400", "401", "413", "503")
SLACK_OUTCOMES = {200: "acked", 401: "bad_signature", 413: "too_large", 503: "not_configured"}
# Seconds: a webhook answers within Alertmanager's 10 s, an update may wait up to 30 s for a worker.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
# The method comes from the client (the HTTP parser knows dozens, WebDAV's included): the usual ones, or "other".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def status_outcome(status: int) -> str:
    """The outcome of an operator request that the handler did not name: why nothing changed."""
    if status in (400, 413):
        return "invalid"
    if status >= 500:
        return "unavailable" if status == 503 else "error"
    return {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict"}.get(status, str(status))


def refusal_outcome(kind: str) -> str:
    """The workflow's error type as a label value: ``StalePlan`` -> ``stale_plan``."""
    return _CAMEL.sub("_", kind).lower()


def decision_outcome(decision: Decision) -> str:
    return "approved" if decision.approve else "rejected"


def error_outcome(exc: BaseException) -> str:
    if isinstance(exc, DecisionRefused):  # FeedbackRefused too
        return refusal_outcome(exc.kind)
    if isinstance(exc, IncidentNotFound):
        return "not_found"
    if isinstance(exc, TemporalUnavailable):
        return "unavailable"
    return "error"


class FrontDoorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The process's own figures (memory, CPU, open files, GC), as any Python exporter has them.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Histogram(
            "incident_agent_http_request_duration_seconds",
            "Front door HTTP requests: duration by route pattern, method and status",
            ["route", "method", "status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.webhooks = Counter(
            "incident_agent_webhooks",
            "Alertmanager webhook deliveries by outcome: started, signalled, ignored, or the error status",
            ["outcome"],
            registry=self.registry,
        )
        self.slack_interactions = Counter(
            "incident_agent_slack_interactions",
            "Slack interactivity requests by the front door's answer",
            ["outcome"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "incident_agent_operator_decisions",
            "Decisions on pending plans by channel (http, slack) and outcome",
            ["via", "outcome"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "incident_agent_operator_feedback",
            "Verdicts on diagnoses by channel (http, slack) and outcome",
            ["via", "outcome"],
            registry=self.registry,
        )
        # Present at 0 from the start: a rate() over a series that appears with its first failure misses it.
        for outcome in WEBHOOK_OUTCOMES:
            self.webhooks.labels(outcome)
        for outcome in SLACK_OUTCOMES.values():
            self.slack_interactions.labels(outcome)

    def observe(self, request: web.Request, status: int, seconds: float) -> None:
        route = _route(request)
        method = request.method if request.method in _METHODS else "other"
        self.requests.labels(route, method, str(status)).observe(seconds)
        named = request.get(OUTCOME)
        if route == WEBHOOK_ROUTE:
            self.webhooks.labels(named or str(status)).inc()
        elif route == SLACK_PATH:
            self.slack_interactions.labels(SLACK_OUTCOMES.get(status, str(status))).inc()
        elif route == DECISION_ROUTE:
            self.decisions.labels("http", named or status_outcome(status)).inc()
        elif route == FEEDBACK_ROUTE:
            self.feedback.labels("http", named or status_outcome(status)).inc()

    def middleware(self) -> Middleware:
        """Outermost, so it sees the statuses the inner middlewares answer (the 503 for an unreachable Temporal)."""

        @web.middleware
        async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500  # an exception escaping the handler is aiohttp's 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:  # the router's 404/405, aiohttp's own 413
                status = exc.status
                raise
            except asyncio.CancelledError:
                status = 499  # the client went away first (nginx's word for it)
                raise
            finally:
                self.observe(request, status, time.perf_counter() - started)

        return measure

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the text format, or OpenMetrics when the scraper asks for it."""
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


class CountedUpdates:
    """The gateway as Slack's click handler uses it, counting each decide/feedback outcome (``via`` slack); every
    other call goes straight through. A wrapper, not a subclass: the gateway it wraps may be any IncidentGateway."""

    def __init__(self, gateway: IncidentGateway, metrics: FrontDoorMetrics, via: str) -> None:
        self._gateway = gateway
        self._metrics = metrics
        self._via = via

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gateway, name)

    async def decide(self, workflow_id: str, decision: Decision) -> DecisionResult:
        try:
            result = await self._gateway.decide(workflow_id, decision)
        except Exception as exc:
            self._metrics.decisions.labels(self._via, error_outcome(exc)).inc()
            raise
        self._metrics.decisions.labels(self._via, decision_outcome(decision)).inc()
        return result

    async def feedback(self, workflow_id: str, feedback: Feedback) -> FeedbackRecord:
        try:
            record = await self._gateway.feedback(workflow_id, feedback)
        except Exception as exc:
            self._metrics.feedback.labels(self._via, error_outcome(exc)).inc()
            raise
        self._metrics.feedback.labels(self._via, record.verdict).inc()
        return record
