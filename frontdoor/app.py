"""The aiohttp application: routes of the contract's HTTP front door."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from config.durations import parse_duration
from config.settings import Settings
from frontdoor.auth import bearer_ok, operator_allowed
from frontdoor.gateway import (
    DecisionRefused,
    FeedbackRefused,
    IncidentGateway,
    IncidentNotFound,
    TemporalUnavailable,
)
from frontdoor.governor import GovernorGateway
from frontdoor.metrics import (
    DECISION_ROUTE,
    FEEDBACK_ROUTE,
    METRICS_ROUTE,
    OUTCOME,
    WEBHOOK_ROUTE,
    CountedUpdates,
    FrontDoorMetrics,
    decision_outcome,
    refusal_outcome,
)
from frontdoor.slack import install as install_slack
from models.alertmanager import AlertmanagerWebhook
from models.incident import Decision, Feedback
from models.remediation import KillSwitchRequest
from reports.markdown import render_report
from triage.alerts import notification_from_webhook
from triage.identity import WORKFLOW_ID_PREFIX
from workflows.incident import BAD_FEEDBACK, UNKNOWN_APPROVER

log = structlog.get_logger("frontdoor")

M = TypeVar("M", bound=BaseModel)
MAX_BODY_BYTES = 1024 * 1024
STATS_WINDOW = "7d"
STATS_MAX_WINDOW_S = 366 * 86400
GATEWAY: web.AppKey[IncidentGateway] = web.AppKey("gateway", IncidentGateway)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
GOVERNOR: web.AppKey[GovernorGateway] = web.AppKey("governor", GovernorGateway)
METRICS: web.AppKey[FrontDoorMetrics] = web.AppKey("metrics", FrontDoorMetrics)


def create_app(
    gateway: IncidentGateway, settings: Settings, governor: GovernorGateway | None = None
) -> web.Application:
    # aiohttp enforces the body limit itself too; the handlers answer it in the contract's words first.
    metrics = FrontDoorMetrics()  # a registry per app: tests build many
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[metrics.middleware(), _unavailable_is_503])
    app[METRICS] = metrics
    app[GATEWAY] = gateway
    app[SETTINGS] = settings
    app[GOVERNOR] = governor or GovernorGateway(gateway.client, settings.temporal_task_queue)
    app.router.add_post(WEBHOOK_ROUTE, alertmanager_webhook)
    app.router.add_get("/incidents", list_incidents)
    app.router.add_get("/incidents/{workflow_id}", get_incident)
    app.router.add_get("/incidents/{workflow_id}/report", get_report)
    app.router.add_post(DECISION_ROUTE, post_decision)
    app.router.add_post(FEEDBACK_ROUTE, post_feedback)
    app.router.add_get("/stats", get_stats)
    app.router.add_get("/governor", get_governor)
    app.router.add_post("/governor/killswitch", post_killswitch)
    # POST /slack/interactions (frontdoor/slack.py); the clicks' decisions and verdicts are counted on the way.
    install_slack(app, cast(IncidentGateway, CountedUpdates(gateway, metrics, "slack")), settings)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get(METRICS_ROUTE, metrics.handle)
    return app


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def _unavailable_is_503(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except TemporalUnavailable as exc:
        log.warning("temporal_unavailable", path=request.path, error=str(exc))
        return _error(503, "Temporal is unreachable; retry later")


async def _read_json(request: web.Request) -> tuple[Any, web.Response | None]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return None, _error(413, f"body of {request.content_length} bytes is over the {MAX_BODY_BYTES} byte limit")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None, _error(413, f"body is over the {MAX_BODY_BYTES} byte limit")
    try:
        return json.loads(raw), None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, _error(400, f"malformed JSON: {exc}")
    except RecursionError:
        # json's parser recurses once per nesting level: a body of "[[[[..." would otherwise be a 500.
        return None, _error(400, "malformed JSON: nested too deeply")
    except ValueError:
        # Valid JSON, but an integer literal longer than Python converts (a 500 otherwise); no sender means one.
        return None, _error(400, f"malformed JSON: an integer has over {sys.get_int_max_str_digits()} digits")


async def _read_model(request: web.Request, model: type[M], what: str) -> tuple[M | None, web.Response | None]:
    """The body as ``model``, or the 400/413 answer that names what is wrong with it."""
    body, problem = await _read_json(request)
    if problem is not None:
        return None, problem
    try:
        return model.model_validate(body), None
    except ValidationError as exc:
        return None, _error(400, f"invalid {what}: {_describe(exc)}")


def _field_name(part: int | str, longest: int = 64) -> str:
    """One step of a field's path as an error shows it. A step may be the sender's own key (a label name): it is
    escaped when not printable (the error stays one line) and shortened (a 1 MiB key is not echoed back)."""
    text = str(part)
    if not text.isprintable():
        text = json.dumps(text)[1:-1]
    return text if len(text) <= longest else text[: longest - 3] + "..."


def _describe(error: ValidationError, limit: int = 3) -> str:
    parts = []
    for item in error.errors()[:limit]:
        where = ".".join(_field_name(part) for part in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    more = len(error.errors()) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


async def alertmanager_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if settings.webhook_token is not None and not bearer_ok(request, settings.webhook_token):
        return _error(401, "missing or wrong bearer token")
    webhook, problem = await _read_model(request, AlertmanagerWebhook, "Alertmanager payload")
    if webhook is None:
        return problem or _error(400, "empty body")
    notification = notification_from_webhook(webhook, datetime.now(UTC))
    delivery = await request.app[GATEWAY].deliver(notification)
    request[OUTCOME] = delivery.action
    log.info(
        "alert_notification",
        workflow_id=delivery.workflow_id,
        action=delivery.action,
        status=notification.status,
        alerts=len(notification.alerts),
        group_key=notification.group_key,
    )
    return web.json_response({"incidents": [delivery.as_json()]}, status=202)


def _workflow_id(request: web.Request) -> str | None:
    workflow_id = request.match_info["workflow_id"]
    return workflow_id if workflow_id.startswith(WORKFLOW_ID_PREFIX) else None


async def list_incidents(request: web.Request) -> web.Response:
    open_only = request.query.get("open", "").lower() in ("1", "true", "yes")
    try:
        limit = max(1, min(int(request.query.get("limit", "100")), 1000))
    except ValueError:
        return _error(400, "limit: expected an integer")
    incidents = await request.app[GATEWAY].list_incidents(open_only=open_only, limit=limit)
    return web.json_response({"incidents": incidents})


async def get_incident(request: web.Request) -> web.Response:
    workflow_id = _workflow_id(request)
    if workflow_id is None:
        return _error(404, f"not an incident id (expected {WORKFLOW_ID_PREFIX}...)")
    try:
        state = await request.app[GATEWAY].state(workflow_id)
    except IncidentNotFound:
        return _error(404, f"no incident {workflow_id}")
    return web.json_response(state.model_dump(mode="json"))


async def get_report(request: web.Request) -> web.Response:
    """The post-incident report, Markdown, rendered from the ``state`` query (running or closed incidents)."""
    workflow_id = _workflow_id(request)
    if workflow_id is None:
        return _error(404, f"not an incident id (expected {WORKFLOW_ID_PREFIX}...)")
    try:
        state = await request.app[GATEWAY].state(workflow_id)
    except IncidentNotFound:
        return _error(404, f"no incident {workflow_id}")
    return web.Response(text=render_report(state), content_type="text/markdown", charset="utf-8")


async def _operator_body(request: web.Request, model: type[M], what: str) -> tuple[str, M] | web.Response:
    """An operator's request about one incident: the guard (401), the incident id (404), the body (400)."""
    allowed, why = operator_allowed(request, request.app[SETTINGS].api_token)
    if not allowed:
        return _error(401, why)
    workflow_id = _workflow_id(request)
    if workflow_id is None:
        return _error(404, f"not an incident id (expected {WORKFLOW_ID_PREFIX}...)")
    body, problem = await _read_model(request, model, what)
    if body is None:
        return problem or _error(400, "empty body")
    return workflow_id, body


async def post_decision(request: web.Request) -> web.Response:
    read = await _operator_body(request, Decision, "decision")
    if isinstance(read, web.Response):
        return read
    workflow_id, decision = read
    try:
        result = await request.app[GATEWAY].decide(workflow_id, decision)
    except IncidentNotFound:
        return _error(404, f"no running incident {workflow_id}")
    except DecisionRefused as exc:
        request[OUTCOME] = refusal_outcome(exc.kind)
        status = 403 if exc.kind == UNKNOWN_APPROVER else 409
        return _error(status, str(exc), kind=exc.kind)
    request[OUTCOME] = decision_outcome(decision)
    log.info("decision", workflow_id=workflow_id, approve=decision.approve, by=decision.by, phase=result.phase)
    return web.json_response(result.model_dump(mode="json"))


async def post_feedback(request: web.Request) -> web.Response:
    """A verdict on the incident's diagnosis: 404 once its feedback window is over, 409 when already judged."""
    read = await _operator_body(request, Feedback, "feedback")
    if isinstance(read, web.Response):
        return read
    workflow_id, feedback = read
    try:
        record = await request.app[GATEWAY].feedback(workflow_id, feedback)
    except IncidentNotFound:
        return _error(404, f"no incident {workflow_id} open for feedback (its feedback window is over)")
    except FeedbackRefused as exc:
        request[OUTCOME] = refusal_outcome(exc.kind)
        status = {UNKNOWN_APPROVER: 403, BAD_FEEDBACK: 400}.get(exc.kind, 409)
        return _error(status, str(exc), kind=exc.kind)
    request[OUTCOME] = record.verdict
    log.info("feedback", workflow_id=workflow_id, verdict=record.verdict, cause=record.cause, by=record.by)
    return web.json_response(record.model_dump(mode="json"))


async def get_stats(request: web.Request) -> web.Response:
    """Diagnosis accuracy, resolution shares, MTTA and MTTR over the incidents opened in ``?window=`` (7d), of
    ``?namespace=`` and ``?service=`` when given."""
    raw = request.query.get("window", STATS_WINDOW)
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        return _error(400, f"window: {exc}")
    if seconds > STATS_MAX_WINDOW_S:
        return _error(400, f"window: at most 366d, not {raw!r}")
    stats = await request.app[GATEWAY].stats(
        timedelta(seconds=seconds),
        datetime.now(UTC),
        namespace=request.query.get("namespace") or None,
        service=request.query.get("service") or None,
    )
    return web.json_response(stats.model_dump(mode="json"))


async def get_governor(request: web.Request) -> web.Response:
    state = await request.app[GOVERNOR].state()
    return web.json_response(state.model_dump(mode="json"))


async def post_killswitch(request: web.Request) -> web.Response:
    allowed, why = operator_allowed(request, request.app[SETTINGS].api_token)
    if not allowed:
        return _error(401, why)
    switch, problem = await _read_model(request, KillSwitchRequest, "kill switch request")
    if switch is None:
        return problem or _error(400, "empty body")
    state = await request.app[GOVERNOR].set_killswitch(switch)
    log.warning("killswitch", on=switch.on, by=switch.by, reason=switch.reason)
    return web.json_response(state.model_dump(mode="json"))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if await request.app[GATEWAY].ready():
        return web.json_response({"status": "ready"})
    return _error(503, "Temporal is unreachable")
