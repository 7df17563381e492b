"""Slack interactivity: Approve/Reject clicks become the incident's ``decide`` update, "Diagnosis correct?"
answers its ``feedback`` update.

Two ways in, one code path:

- ``POST /slack/interactions``: Slack's signed HTTP request (``X-Slack-Signature``, v0 HMAC-SHA256 with
  ``SLACK_SIGNING_SECRET`` over the raw body, timestamps older than 5 minutes refused). Answered 200 at once;
- Socket Mode (``SLACK_APP_TOKEN``, for teams without public ingress): each ``interactive`` envelope is acked at
  once on the authenticated websocket.

Either way the click's payload goes to :meth:`SlackInteractions.accept`, which delivers the update in a background
task (an update waits for the workflow's worker, which may take longer than the 3 s Slack allows for the ack) and
tells the clicking user the outcome through the interaction's ``response_url`` as an ephemeral message.

The buttons: ``action_id`` ``approve`` or ``reject``, ``value`` the JSON ``{"workflow_id": ..., "plan_id": ...}``;
``feedback_correct`` or ``feedback_wrong`` with ``{"workflow_id": ...}``; the select ``feedback_cause``, whose
chosen option's value is ``{"workflow_id": ..., "cause": <category>}`` (a wrong verdict naming the real cause).
The clicking user (``Decision.by``, ``Feedback.by``) is the Slack user id, so ``APPROVERS`` lists Slack user ids
(``U012ABCDEF``); the workflow's validators enforce it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

import aiohttp
import structlog
from aiohttp import web
from pydantic import SecretStr
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from activities.slack import FEEDBACK_CAUSE, FEEDBACK_CORRECT, FEEDBACK_WRONG
from config.settings import Settings
from frontdoor.gateway import DecisionRefused, FeedbackRefused, IncidentGateway, IncidentNotFound, TemporalUnavailable
from models.incident import Category, Decision, DecisionResult, Feedback, FeedbackRecord
from triage.identity import WORKFLOW_ID_PREFIX
from workflows.incident import ALREADY_DECIDED, NO_PENDING_PLAN, STALE_PLAN, UNKNOWN_APPROVER

log = structlog.get_logger("frontdoor.slack")

PATH = "/slack/interactions"
MAX_SKEW_S = 5 * 60  # Slack's rule, and SignatureVerifier's: older (or later) timestamps are replays or bad clocks
MAX_TIMESTAMP_DIGITS = 12
REASON = "via Slack"
ACTIONS = {"approve": True, "reject": False}
RESPONSE_TIMEOUT = aiohttp.ClientTimeout(total=10)
_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
CATEGORIES = frozenset(c.value for c in Category)


@dataclass(frozen=True)
class ButtonClick:
    """An Approve or Reject click, as far as the agent cares."""

    approve: bool
    workflow_id: str
    plan_id: str | None
    user_id: str
    user_name: str
    response_url: str | None

    def decision(self) -> Decision:
        return Decision(approve=self.approve, by=self.user_id, reason=REASON, plan_id=self.plan_id)


@dataclass(frozen=True)
class FeedbackClick:
    """A "Diagnosis correct?" answer: Yes, No, or No naming the real cause."""

    verdict: Literal["correct", "wrong"]
    cause: Category | None
    workflow_id: str
    user_id: str
    user_name: str
    response_url: str | None

    def feedback(self) -> Feedback:
        return Feedback(verdict=self.verdict, by=self.user_id, cause=self.cause, note=REASON)


FEEDBACK_VERDICTS: dict[str, Literal["correct", "wrong"]] = {
    FEEDBACK_CORRECT: "correct",
    FEEDBACK_WRONG: "wrong",
    FEEDBACK_CAUSE: "wrong",
}


def _text(value: object) -> str | None:
    """``value`` when it is a string that is valid Unicode: JSON can spell lone surrogates, which no Temporal call,
    log line or Slack message can carry."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def parse_click(payload: object) -> ButtonClick | FeedbackClick | str:
    """The click in a ``block_actions`` payload, or why the payload is not one of the agent's controls.

    The payload is signed, but its shape is still checked field by field: a value of the wrong type must end as a
    reason to ignore the click, never as an exception in the request handler.
    """
    if not isinstance(payload, dict):
        return "payload is not a JSON object"
    if payload.get("type") != "block_actions":
        return f"payload type {payload.get('type')!r} is not block_actions"
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        return "no actions in the payload"
    action = actions[0]
    action_id = action.get("action_id")
    if not isinstance(action_id, str) or (action_id not in ACTIONS and action_id not in FEEDBACK_VERDICTS):
        return f"unknown action_id {action_id!r}"
    selected = action.get("selected_option") if action_id == FEEDBACK_CAUSE else None
    raw_value = selected.get("value") if isinstance(selected, dict) else action.get("value")
    try:
        # ValueError covers JSONDecodeError and an integer too long to convert; RecursionError a too deep nesting.
        value = json.loads(raw_value or "")
    except (TypeError, ValueError, RecursionError):
        return "the control's value is not JSON"
    if not isinstance(value, dict) or not _text(value.get("workflow_id")):
        return "the control's value names no workflow_id"
    user = payload.get("user")
    user_id = _text(user.get("id")) if isinstance(user, dict) else None
    if user_id is None or not user_id.strip():
        return "the payload names no user.id"
    assert isinstance(user, dict)
    response_url = _text(payload.get("response_url"))
    who = {
        "workflow_id": value["workflow_id"],
        "user_id": user_id.strip(),
        "user_name": _text(str(user.get("username") or user.get("name") or "")) or "",
        "response_url": response_url if response_url is not None and response_url.startswith("http") else None,
    }
    if action_id in FEEDBACK_VERDICTS:
        cause = value.get("cause")
        if cause is not None and (not isinstance(cause, str) or cause not in CATEGORIES):
            return f"the control's cause {cause!r} is not a taxonomy category"
        if action_id == FEEDBACK_CAUSE and cause is None:
            return "the selected cause names no taxonomy category"
        return FeedbackClick(verdict=FEEDBACK_VERDICTS[action_id], cause=Category(cause) if cause else None, **who)
    plan_id = value.get("plan_id")
    if plan_id is not None and _text(plan_id) is None:
        return "the button's plan_id is not a string"
    return ButtonClick(approve=ACTIONS[action_id], plan_id=plan_id or None, **who)


def _mention(who: str) -> str:
    """A Slack user id renders as a mention; any other decider (an HTTP or CLI ``by``) as itself."""
    return f"<@{who}>" if _SLACK_USER_ID.match(who) else who


class SlackInteractions:
    """Turns clicks into ``decide`` updates in the background and reports each outcome to the clicking user."""

    def __init__(self, gateway: IncidentGateway, signing_secret: SecretStr | None) -> None:
        self._gateway = gateway
        secret = signing_secret.get_secret_value() if signing_secret is not None else ""
        # Blank counts as unset: SignatureVerifier refuses an empty secret.
        self._verifier = SignatureVerifier(secret) if secret.strip() else None
        self._tasks: set[asyncio.Task[str]] = set()
        self._session: aiohttp.ClientSession | None = None

    @property
    def configured(self) -> bool:
        return self._verifier is not None

    @property
    def pending(self) -> frozenset[asyncio.Task[str]]:
        """Decisions still being delivered or reported."""
        return frozenset(self._tasks)

    # ---- the shared path --------------------------------------------------------------------------------------

    def accept(self, payload: object, *, via: str) -> asyncio.Task[str] | None:
        """Start handling a click in the background (None: not one of ours, logged and dropped)."""
        click = parse_click(payload)
        if isinstance(click, str):
            log.warning("slack_interaction_ignored", via=via, reason=click)
            return None
        log.info(
            "slack_click",
            via=via,
            workflow_id=click.workflow_id,
            what=repr(click.feedback() if isinstance(click, FeedbackClick) else click.decision()),
            user_id=click.user_id,
            user_name=click.user_name,
        )
        task = asyncio.create_task(self.handle(click), name=f"slack-click-{click.workflow_id}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[str]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("slack_click_failed", error=repr(task.exception()), task=task.get_name())

    async def handle(self, click: ButtonClick | FeedbackClick) -> str:
        """Deliver the click's decision or verdict and post the outcome to its ``response_url``; the text posted."""
        text = await (self._judge(click) if isinstance(click, FeedbackClick) else self._decide(click))
        if click.response_url is not None:
            await self._respond(click.response_url, text)
        else:
            log.warning("slack_click_without_response_url", workflow_id=click.workflow_id, outcome=text)
        return text

    async def _decide(self, click: ButtonClick) -> str:
        if not click.workflow_id.startswith(WORKFLOW_ID_PREFIX):
            return f"No such incident: {click.workflow_id}. Nothing was changed."
        try:
            result = await self._gateway.decide(click.workflow_id, click.decision())
        except IncidentNotFound:
            return f"No such incident (or it has already closed): {click.workflow_id}. Nothing was changed."
        except DecisionRefused as refused:
            log.info("slack_decision_refused", workflow_id=click.workflow_id, kind=refused.kind, user=click.user_id)
            return await self._refusal(click, refused)
        except TemporalUnavailable:
            log.warning("slack_decision_temporal_unavailable", workflow_id=click.workflow_id)
            return "The incident agent cannot reach Temporal right now; nothing was recorded. Try again shortly."
        except Exception as exc:
            log.exception("slack_decision_error", workflow_id=click.workflow_id)
            return f"Your decision could not be recorded ({type(exc).__name__}); nothing was changed."
        log.info("slack_decision", workflow_id=click.workflow_id, approve=click.approve, by=click.user_id)
        return _accepted(click, result)

    async def _judge(self, click: FeedbackClick) -> str:
        incident = click.workflow_id
        if not incident.startswith(WORKFLOW_ID_PREFIX):
            return f"No such incident: {incident}. Nothing was recorded."
        try:
            record = await self._gateway.feedback(incident, click.feedback())
        except IncidentNotFound:
            return f"The feedback window of {incident} is over (or there is no such incident); nothing was recorded."
        except FeedbackRefused as refused:
            log.info("slack_feedback_refused", workflow_id=incident, kind=refused.kind, user=click.user_id)
            if refused.kind == UNKNOWN_APPROVER:
                return f"You are not an allowed approver for {incident} (APPROVERS); nothing was recorded."
            return f"Your answer was not recorded: {refused}."
        except TemporalUnavailable:
            log.warning("slack_feedback_temporal_unavailable", workflow_id=incident)
            return "The incident agent cannot reach Temporal right now; nothing was recorded. Try again shortly."
        except Exception as exc:
            log.exception("slack_feedback_error", workflow_id=incident)
            return f"Your answer could not be recorded ({type(exc).__name__})."
        log.info("slack_feedback", workflow_id=incident, verdict=record.verdict, cause=record.cause, by=record.by)
        return _recorded(record, incident)

    async def _refusal(self, click: ButtonClick, refused: DecisionRefused) -> str:
        incident = click.workflow_id
        if refused.kind == UNKNOWN_APPROVER:
            return f"You are not an allowed approver for {incident} (APPROVERS); nothing was changed."
        if refused.kind == STALE_PLAN:
            return f"This plan is stale ({refused}); nothing was changed. Decide on the latest plan of {incident}."
        if refused.kind in (ALREADY_DECIDED, NO_PENDING_PLAN):
            # Once the decision is acted on the plan is no longer pending: say who decided it, not just "no plan".
            try:
                record = (await self._gateway.state(incident)).decision
            except Exception as exc:  # only the wording depends on it
                log.info("slack_decision_state_unavailable", workflow_id=incident, error=repr(exc))
                record = None
            if record is not None and (click.plan_id is None or record.plan_id == click.plan_id):
                verdict = "approved" if record.approve else "rejected"
                by = _mention(record.by)
                return f"Plan {record.plan_id} of {incident} was already decided: {verdict} by {by}."
            if refused.kind == ALREADY_DECIDED:
                return f"This plan was already decided: {refused}."
            return f"No plan of {incident} is awaiting approval: {refused}."
        return f"Your decision was refused: {refused}."

    async def _respond(self, url: str, text: str) -> None:
        body = {"replace_original": False, "response_type": "ephemeral", "text": text}
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=RESPONSE_TIMEOUT)
        try:
            async with self._session.post(url, json=body) as response:
                if response.status >= 300:
                    detail = (await response.text())[:200]
                    log.warning("slack_response_url_refused", status=response.status, detail=detail)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("slack_response_url_unreachable", error=repr(exc))

    async def close(self, grace_s: float = 5.0) -> None:
        """Let decisions in flight finish (at most ``grace_s``), then cancel the rest and close the HTTP session."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self._session is not None:
            await self._session.close()

    # ---- HTTP: POST /slack/interactions -----------------------------------------------------------------------

    def signature_problem(self, raw: bytes, headers: Mapping[str, str], now: float | None = None) -> str | None:
        """None when Slack signed ``raw``; otherwise why the request is refused (the verifier decides)."""
        assert self._verifier is not None
        timestamp = headers.get("X-Slack-Request-Timestamp")
        signature = headers.get("X-Slack-Signature")
        if not timestamp or not signature:
            return "missing X-Slack-Request-Timestamp or X-Slack-Signature header"
        # Plain ASCII digits only: int() would also take "+1", " 1", "1_0" or Arabic digits, and a long one overflows
        # the float subtraction below.
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > MAX_TIMESTAMP_DIGITS:
            return "X-Slack-Request-Timestamp is not a Unix time"
        skew = abs((time.time() if now is None else now) - int(timestamp))
        if skew > MAX_SKEW_S:
            return "X-Slack-Request-Timestamp is more than 5 minutes away (a replayed request, or a skewed clock)"
        try:
            # hmac.compare_digest raises TypeError on a non-ASCII str (a header may carry any byte).
            valid = signature.isascii() and self._verifier.is_valid(raw, timestamp, signature)
        except ValueError:  # a body that is not UTF-8 (UnicodeDecodeError) cannot be Slack's
            valid = False
        return None if valid else "X-Slack-Signature does not match (check SLACK_SIGNING_SECRET)"

    # ---- Socket Mode ------------------------------------------------------------------------------------------

    async def on_socket_mode_request(self, client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        """Ack every envelope at once (Slack redelivers unacked ones), then handle interactive ones."""
        try:
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        except Exception as exc:
            log.warning("slack_socket_mode_ack_failed", envelope_id=request.envelope_id, error=repr(exc))
        if request.type != "interactive":
            log.info("slack_socket_mode_envelope_ignored", type=request.type, envelope_id=request.envelope_id)
            return
        self.accept(request.payload, via="socket_mode")


SLACK_INTERACTIONS: web.AppKey[SlackInteractions] = web.AppKey("slack_interactions", SlackInteractions)


async def slack_interactions(request: web.Request) -> web.Response:
    """``POST /slack/interactions``: 503 unconfigured, 401 unsigned or stale, otherwise 200 with an empty body."""
    interactions = request.app[SLACK_INTERACTIONS]
    if not interactions.configured:
        return web.json_response(
            {"error": "Slack interactivity is not configured: set SLACK_SIGNING_SECRET"}, status=503
        )
    try:
        raw = await request.read()  # the raw bytes: the signature covers them exactly
    except web.HTTPRequestEntityTooLarge:
        return web.json_response({"error": "body is over the size limit"}, status=413)
    problem = interactions.signature_problem(raw, request.headers)
    if problem is not None:
        log.warning("slack_signature_refused", reason=problem, remote=request.remote)
        return web.json_response({"error": problem}, status=401)
    # Past the signature, anything not ours is acked (Slack shows an error on a non-200) and logged.
    try:
        payload: Any = json.loads(parse_qs(raw.decode()).get("payload", [""])[0])
    except (ValueError, RecursionError):  # not UTF-8, not JSON, an over-long integer, a too deep nesting
        log.warning("slack_interaction_ignored", via="http", reason="no JSON payload field in the form body")
        return web.Response(status=200)
    interactions.accept(payload, via="http")
    return web.Response(status=200)


def install(app: web.Application, gateway: IncidentGateway, settings: Settings) -> SlackInteractions:
    """Register ``POST /slack/interactions`` and the shared click handler (``app[SLACK_INTERACTIONS]``)."""
    interactions = SlackInteractions(gateway, settings.slack_signing_secret)
    app[SLACK_INTERACTIONS] = interactions

    async def _close(_: web.Application) -> None:
        await interactions.close()

    app.on_cleanup.append(_close)
    app.router.add_post(PATH, slack_interactions)
    return interactions


def _recorded(record: FeedbackRecord, incident: str) -> str:
    cause = f"; the cause was {record.cause.value}" if record.cause is not None else ""
    return f"Thank you: the diagnosis of {incident} ({record.diagnosed.value}) is recorded {record.verdict}{cause}."


def _accepted(click: ButtonClick, result: DecisionResult) -> str:
    verdict = "Approved" if click.approve else "Rejected"
    return f"{verdict} plan {result.plan_id} of {click.workflow_id}; the incident is now {result.phase.value}."


class SocketMode:
    """The Socket Mode client, wired to the shared handler; connects in the background until stopped."""

    def __init__(
        self,
        app_token: str,
        interactions: SlackInteractions,
        *,
        api_url: str = "https://slack.com/api/",
        ping_interval: float = 5.0,
    ) -> None:
        # Built inside the running loop: the client opens its aiohttp session and message processor here.
        self.client = SocketModeClient(
            app_token=app_token, web_client=AsyncWebClient(base_url=api_url), ping_interval=ping_interval
        )
        self.client.socket_mode_request_listeners.append(interactions.on_socket_mode_request)
        self._connecting: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Connect in the background: the SDK retries while Slack is unreachable, so the front door never waits."""
        connect: Callable[[], Coroutine[Any, Any, None]] = self.client.connect
        self._connecting = asyncio.create_task(connect(), name="slack-socket-mode-connect")
        self._connecting.add_done_callback(_log_connect_failure)
        log.info("slack_socket_mode_starting")

    async def stop(self) -> None:
        await self.client.close()
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting


def _log_connect_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("slack_socket_mode_connect_failed", error=repr(task.exception()))
