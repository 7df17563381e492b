"""Slack: one Block Kit message per incident, updated in place, with the incident's timeline in its thread.

``SlackNotifier.send`` is what the ``notify`` activity (``activities/notify.py``) calls when ``SLACK_BOT_TOKEN`` and
``SLACK_CHANNEL`` are set. It talks to the Slack Web API with slack-sdk's ``AsyncWebClient`` (``SLACK_API_URL``):

* the incident's first notification (no ``slack_ts`` yet) posts the message (``chat.postMessage``) and the receipt
  carries the channel id and ``ts`` Slack answered with;
* every later one rebuilds the blocks for the new phase and edits that message (``chat.update``); a message that
  is gone (``message_not_found``) or that the bot may not edit is replaced by a new one, whose ``ts`` the receipt
  carries from then on;
* the notification's ``thread_lines`` go into the message's thread (``thread_ts``), batched into as few replies as
  the bounds below allow.

Slack trouble never fails the incident: nothing here raises for it. Rate limits (429 with ``Retry-After``) are
waited out a bounded number of times when the wait is short, 5xx answers and connection failures are retried a
couple of times, and whatever still goes wrong ends up in ``NotificationReceipt.problems`` as ``"slack: <error>"``
(Slack's own error code, such as ``channel_not_found`` or ``invalid_auth``). The token is never logged.

Every message stays far inside Slack's limits (40,000 characters of text, 50 blocks, 3,000 characters a section,
150 a header, 2,000 a field or button value): each piece of text is cut to its own bound, lists are cut to a few
entries, and a message has at most fifteen blocks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import ClientConnectionError
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.jitter import Jitter
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from models.incident import Category, Hypothesis, Notification, NotificationReceipt, Phase, Severity

if TYPE_CHECKING:
    from config.settings import Settings

log = structlog.get_logger("incident.slack")

# Bounds of one message (Slack's own limits are far above: 40,000 characters, 50 blocks).
HEADER_CHARS = 150  # Slack's limit for a header block
FIELD_CHARS = 1_000  # Slack: 2,000
SECTION_CHARS = 2_800  # Slack: 3,000
EVIDENCE_LINES = 3
EVIDENCE_LINE_CHARS = 300
PLAN_ACTIONS = 10
FALLBACK_TEXT_CHARS = 3_000
BUTTON_VALUE_CHARS = 2_000  # Slack's limit; a longer value (an absurd workflow id) gets no buttons
OPTION_VALUE_CHARS = 150  # Slack's limit for a select option's value
# The "Diagnosis correct?" controls: buttons for either verdict, and a select naming the real cause (a wrong verdict).
FEEDBACK_CORRECT, FEEDBACK_WRONG, FEEDBACK_CAUSE = "feedback_correct", "feedback_wrong", "feedback_cause"
# Thread replies: each timeline line is cut to LINE chars, lines are joined into replies of at most MESSAGE chars,
# and one notification posts at most MESSAGES replies (the rest is counted in the last one).
THREAD_LINE_CHARS = 500
THREAD_MESSAGE_CHARS = 3_500
THREAD_MESSAGES = 5

# Errors after which no further call of this notification can succeed (the token, the channel, the rate limit,
# the network): the thread replies are not attempted.
_STOP_ERRORS = frozenset(
    {
        "not_authed",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "org_login_required",
        "ekm_access_denied",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "ratelimited",
        "rate_limited",
        "timeout",
        "connection_error",
    }
)
# chat.update errors that mean the message cannot be edited any more: a new one takes its place.
_REPOST_ERRORS = frozenset({"message_not_found", "cant_update_message"})

_SEVERITY_EMOJI = {
    Severity.critical: ":red_circle:",
    Severity.high: ":large_orange_circle:",
    Severity.medium: ":large_yellow_circle:",
    Severity.low: ":white_circle:",
}
_PHASE_LABEL = {
    Phase.received: "received",
    Phase.triaging: "triaging",
    Phase.investigating: "investigating",
    Phase.diagnosing: "diagnosing",
    Phase.awaiting_approval: "awaiting approval",
    Phase.remediating: "remediating",
    Phase.verifying: "verifying",
    Phase.resolved: "resolved",
    Phase.escalated: "escalated",
    Phase.closed: "closed",
}


# ---- the message ---------------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: ``& < >`` (so alert text can neither ping ``<!channel>`` nor forge a link)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, an ellipsis marking a cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mrkdwn(text: str, limit: int) -> str:
    """``text`` escaped for mrkdwn and cut to ``limit`` characters without splitting an entity."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    amp = cut.rfind("&")
    if amp >= 0 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _code(text: str, limit: int = 200) -> str:
    """An inline code span (backticks inside would end it early)."""
    return "`" + mrkdwn(text.replace("`", "'"), limit) + "`"


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": clip(text, limit) or " ", "emoji": True}


def _md(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def top_hypothesis(hypotheses: Iterable[Hypothesis]) -> Hypothesis | None:
    """The most confident hypothesis (the first of equals)."""
    best: Hypothesis | None = None
    for hypothesis in hypotheses:
        if best is None or hypothesis.confidence > best.confidence:
            best = hypothesis
    return best


def decision_verdict(notification: Notification) -> str:
    """ "Approved", "Rejected" or (when the notification does not say which) "Decided"."""
    if notification.approved is not None:
        return "Approved" if notification.approved else "Rejected"
    event = notification.event.lower()
    if "reject" in event:
        return "Rejected"
    if "approved" in event:
        return "Approved"
    said = notification.text.lower()
    if "rejected by" in said:
        return "Rejected"
    if "approved by" in said or notification.phase in (Phase.remediating, Phase.verifying):
        return "Approved"
    return "Decided"


def button_value(notification: Notification) -> str | None:
    """The Approve/Reject buttons' value: which incident and which plan, as JSON (None: too long for Slack)."""
    if notification.plan is None:
        return None
    value = json.dumps({"workflow_id": notification.workflow_id, "plan_id": notification.plan.id})
    return value if len(value) <= BUTTON_VALUE_CHARS else None


def wants_decision(notification: Notification) -> bool:
    plan = notification.plan
    return (
        notification.phase == Phase.awaiting_approval
        and plan is not None
        and plan.mutating
        and not notification.decided_by
    )


def fallback_text(notification: Notification) -> str:
    """The message's ``text``: what notifications, screen readers and clients without blocks show."""
    phase = _PHASE_LABEL[notification.phase]
    head = f"[{notification.severity.value.upper()}] {notification.title} ({phase})"
    return mrkdwn(f"{head}: {notification.text}" if notification.text else head, FALLBACK_TEXT_CHARS)


def build_blocks(notification: Notification) -> list[dict[str, Any]]:
    """The incident's message for its current phase (at most fifteen blocks, every text within its bound)."""
    n = notification
    emoji = _SEVERITY_EMOJI[n.severity]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(f"{n.severity.value.upper()}: {n.title}", HEADER_CHARS)},
        {
            "type": "section",
            "fields": [
                _md(f"*Phase*\n{mrkdwn(_PHASE_LABEL[n.phase], FIELD_CHARS)}"),
                _md(f"*Severity*\n{emoji} {n.severity.value}"),
                _md(f"*Workflow*\n{_code(n.workflow_id, FIELD_CHARS - 20)}"),
            ],
        },
    ]
    if n.text:
        blocks.append({"type": "section", "text": _md(mrkdwn(n.text, SECTION_CHARS))})
    blocks.extend(_diagnosis_blocks(n))
    blocks.extend(_plan_blocks(n))
    if n.outcome and (n.phase in (Phase.resolved, Phase.closed) or not n.plan):
        blocks.append({"type": "section", "text": _md(f"*Outcome*\n{mrkdwn(n.outcome, SECTION_CHARS - 20)}")})
    blocks.extend(_feedback_blocks(n))
    blocks.append({"type": "context", "elements": [_md(f"Last update: {_code(n.event, 100)}")]})
    return blocks


def _diagnosis_blocks(n: Notification) -> list[dict[str, Any]]:
    diagnosis = n.diagnosis
    if diagnosis is None:
        return []
    lines = [f"*Diagnosis* {_code(diagnosis.category.value)} · confidence {diagnosis.confidence:.0%}"]
    where = "/".join(part for part in (diagnosis.root_cause.namespace, diagnosis.root_cause.workload) if part)
    if where:
        lines.append(f"*Root cause* {_code(where)}")
    if diagnosis.runbook:
        lines.append(f"*Runbook* {_code(diagnosis.runbook)}")
    if diagnosis.summary:
        lines.append(mrkdwn(diagnosis.summary, 1_500))
    blocks: list[dict[str, Any]] = [
        {"type": "divider"},
        {"type": "section", "text": _md(clip("\n".join(lines), SECTION_CHARS))},
    ]
    top = top_hypothesis(diagnosis.hypotheses)
    if top is not None and top.evidence:
        cited = [f"• {mrkdwn(' '.join(line.split()), EVIDENCE_LINE_CHARS)}" for line in top.evidence[:EVIDENCE_LINES]]
        more = len(top.evidence) - EVIDENCE_LINES
        if more > 0:
            cited.append(f"_… and {more} more_")
        blocks.append({"type": "section", "text": _md(clip("*Evidence*\n" + "\n".join(cited), SECTION_CHARS))})
    return blocks


def _plan_blocks(n: Notification) -> list[dict[str, Any]]:
    plan = n.plan
    if plan is None:
        return []
    lines = [f"*Plan* {_code(plan.id)}"]
    for action in plan.actions[:PLAN_ACTIONS]:
        where = "/".join(part for part in (action.namespace, action.target) if part)
        approval = "requires approval" if action.requires_approval else "automatic"
        lines.append(f"• *{action.type.value}*{' ' + _code(where) if where else ''} · risk {action.risk} · {approval}")
    if len(plan.actions) > PLAN_ACTIONS:
        lines.append(f"_… and {len(plan.actions) - PLAN_ACTIONS} more actions_")
    if plan.rationale:
        lines.append(f"_{mrkdwn(' '.join(plan.rationale.split()), 600)}_")
    blocks: list[dict[str, Any]] = [
        {"type": "divider"},
        {"type": "section", "text": _md(clip("\n".join(lines), SECTION_CHARS))},
    ]
    value = button_value(n)
    if n.decided_by:
        verdict = decision_verdict(n)
        mark = {"Approved": ":white_check_mark:", "Rejected": ":x:"}.get(verdict, ":ballot_box_with_check:")
        blocks.append({"type": "context", "elements": [_md(f"{mark} {verdict} by *{mrkdwn(n.decided_by, 200)}*")]})
    elif wants_decision(n) and value is not None:
        blocks.append(
            {
                "type": "actions",
                "block_id": "decision",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "approve",
                        "text": _plain("Approve", 75),
                        "style": "primary",
                        "value": value,
                        "confirm": {
                            "title": _plain("Approve the plan?", 100),
                            "text": _plain(f"Run plan {plan.id} ({_count(len(plan.actions), 'action')}).", 300),
                            "confirm": _plain("Approve", 30),
                            "deny": _plain("Cancel", 30),
                        },
                    },
                    {
                        "type": "button",
                        "action_id": "reject",
                        "text": _plain("Reject", 75),
                        "style": "danger",
                        "value": value,
                    },
                ],
            }
        )
    return blocks


def _feedback_blocks(n: Notification) -> list[dict[str, Any]]:
    """The verdict on the diagnosis once given; until then (while the closed incident takes it) the controls."""
    if n.feedback is not None:
        verdict = n.feedback
        mark = ":white_check_mark:" if verdict.verdict == "correct" else ":x:"
        cause = f"; it was {_code(verdict.cause.value)}" if verdict.cause is not None else ""
        text = f"{mark} Diagnosis judged *{verdict.verdict}* by *{mrkdwn(verdict.by, 200)}*{cause}"
        return [{"type": "context", "elements": [_md(text)]}]
    value = json.dumps({"workflow_id": n.workflow_id})
    if not n.feedback_open or len(value) > BUTTON_VALUE_CHARS:
        return []
    elements: list[dict[str, Any]] = [
        {"type": "button", "action_id": FEEDBACK_CORRECT, "text": _plain("Yes", 75), "value": value},
        {"type": "button", "action_id": FEEDBACK_WRONG, "text": _plain("No", 75), "value": value},
    ]
    diagnosed = n.diagnosis.category if n.diagnosis is not None else Category.unknown
    options = [
        {"text": _plain(category.value.replace("_", " "), 75), "value": option}
        for category in Category
        if category not in (diagnosed, Category.unknown)
        and len(option := json.dumps({"workflow_id": n.workflow_id, "cause": category.value})) <= OPTION_VALUE_CHARS
    ]
    if options:
        elements.append(
            {
                "type": "static_select",
                "action_id": FEEDBACK_CAUSE,
                "placeholder": _plain("No, it was…", 150),
                "options": options,
            }
        )
    return [
        {"type": "section", "text": _md("*Diagnosis correct?* Your answer teaches the agent's memory and stats.")},
        {"type": "actions", "block_id": "feedback", "elements": elements},
    ]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def thread_messages(lines: Iterable[str]) -> list[str]:
    """Timeline lines as thread replies: few, each within its bound, the overflow counted in the last one."""
    replies: list[str] = []
    current: list[str] = []
    size = 0
    skipped = 0
    for raw in lines:
        line = mrkdwn(" ".join(raw.split()), THREAD_LINE_CHARS)
        if not line:
            continue
        if current and size + len(line) + 1 > THREAD_MESSAGE_CHARS:
            if len(replies) + 1 == THREAD_MESSAGES:
                skipped += 1
                continue
            replies.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        if skipped:
            current.append(f"_… and {skipped} more timeline entries_")
        replies.append("\n".join(current))
    return replies


# ---- retries -------------------------------------------------------------------------------------------------


class _NoJitter(Jitter):
    def recalculate(self, duration: float) -> float:
        return duration


class RateLimitRetry(AsyncRetryHandler):
    """429: wait ``Retry-After`` and try again, a bounded number of times and only when the wait is short
    (a longer one is given up on at once: the incident's next notification updates the message anyway)."""

    def __init__(self, max_retry_count: int = 2, max_wait_s: float = 5.0) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait_s = max_wait_s

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = _retry_after(response)
        return wait is not None and wait <= self.max_wait_s

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        state.next_attempt_requested = True
        wait = _retry_after(response) if response is not None else None
        await asyncio.sleep(wait if wait is not None else 1.0)
        state.increment_current_attempt()


def _retry_after(response: HttpResponse) -> float | None:
    """Slack's ``Retry-After`` in seconds (1 when the header is missing; None when it is unreadable)."""
    for name, values in response.headers.items():
        if name.lower() == "retry-after":
            raw = values[0] if isinstance(values, list) and values else values
            try:
                return max(0.0, float(str(raw).strip()))
            except ValueError:
                return None
    return 1.0


class ServerErrorRetry(AsyncRetryHandler):
    """Any 5xx answer, and a connection that failed for a reason other than a timeout (a request that timed out
    may have been carried out: posting it again could duplicate the message)."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if error is not None:
            return isinstance(error, ClientConnectionError) and not isinstance(error, TimeoutError)
        return response is not None and response.status_code >= 500


# ---- the notifier --------------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    channel: str | None
    ts: str | None
    problems: list[str] = field(default_factory=list)
    stopped: bool = False

    def fail(self, method: str, error: str, notification: Notification) -> None:
        self.problems.append(f"slack: {error}")
        self.stopped = self.stopped or error in _STOP_ERRORS
        log.warning(
            "slack_call_failed",
            method=method,
            error=error,
            workflow_id=notification.workflow_id,
            notification_event=notification.event,
        )


class SlackNotifier:
    """The incident's Slack message: posted once, updated in place, its thread fed with the timeline."""

    def __init__(
        self,
        token: str,
        channel: str,
        api_url: str = "https://slack.com/api/",
        *,
        timeout_s: int = 5,
        budget_s: float = 10.0,
        server_retries: int = 2,
        retry_interval_s: float = 0.5,
        rate_limit_retries: int = 2,
        max_rate_limit_wait_s: float = 5.0,
    ) -> None:
        self.channel = channel
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        # The whole notification must finish well within the notify activity's start-to-close timeout (15 s).
        self.budget_s = budget_s
        self._client = AsyncWebClient(
            token=token,
            base_url=self.api_url,
            timeout=timeout_s,
            retry_handlers=[
                RateLimitRetry(rate_limit_retries, max_rate_limit_wait_s),
                ServerErrorRetry(
                    max_retry_count=server_retries,
                    interval_calculator=BackoffRetryIntervalCalculator(retry_interval_s, _NoJitter()),
                ),
            ],
        )

    def __repr__(self) -> str:  # never the token
        return f"SlackNotifier(channel={self.channel!r}, api_url={self.api_url!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackNotifier | None:
        """The notifier when ``SLACK_BOT_TOKEN`` and ``SLACK_CHANNEL`` are both set, else None."""
        token = settings.slack_bot_token.get_secret_value().strip() if settings.slack_bot_token else ""
        channel = (settings.slack_channel or "").strip()
        if not token or not channel:
            return None
        return cls(token, channel, settings.slack_api_url)

    async def send(self, notification: Notification) -> NotificationReceipt:
        """Post or update the incident's message and add the thread lines; never raises for Slack's trouble."""
        outcome = _Outcome(notification.slack_channel, notification.slack_ts)
        try:
            async with asyncio.timeout(self.budget_s):
                await self._send(notification, outcome)
        except TimeoutError:
            outcome.fail("notify", "timeout", notification)
        return NotificationReceipt(slack_channel=outcome.channel, slack_ts=outcome.ts, problems=outcome.problems)

    async def _send(self, n: Notification, outcome: _Outcome) -> None:
        blocks, text = build_blocks(n), fallback_text(n)
        if n.slack_ts:
            channel = n.slack_channel or self.channel
            updated, error = await self._call(
                "chat.update", n, channel=channel, ts=n.slack_ts, text=text, blocks=blocks
            )
            if updated is not None:
                outcome.channel = _str(updated.get("channel")) or channel
            elif error in _REPOST_ERRORS:
                log.info("slack_message_replaced", workflow_id=n.workflow_id, reason=error, old_ts=n.slack_ts)
                outcome.problems.append(f"slack: {error} (posted a new message)")
                await self._post_new(n, outcome, text, blocks)
            else:
                outcome.fail("chat.update", error, n)
        else:
            await self._post_new(n, outcome, text, blocks)
        if outcome.ts is None or outcome.channel is None or outcome.stopped:
            return
        for reply in thread_messages(n.thread_lines):
            posted, error = await self._call(
                "chat.postMessage", n, channel=outcome.channel, thread_ts=outcome.ts, text=reply
            )
            if posted is None:
                outcome.fail("chat.postMessage (thread)", error, n)
                if outcome.stopped:
                    return

    async def _post_new(self, n: Notification, outcome: _Outcome, text: str, blocks: list[dict[str, Any]]) -> None:
        posted, error = await self._call("chat.postMessage", n, channel=self.channel, text=text, blocks=blocks)
        if posted is None:
            outcome.fail("chat.postMessage", error, n)
            return
        outcome.channel = _str(posted.get("channel")) or self.channel
        outcome.ts = _str(posted.get("ts"))
        if outcome.ts is None:
            outcome.fail("chat.postMessage", "no_ts_in_answer", n)

    async def _call(self, method: str, n: Notification, **arguments: Any) -> tuple[dict[str, Any] | None, str]:
        """Slack's answer (None on failure) and the failure's error code."""
        try:
            if method == "chat.update":
                response = await self._client.chat_update(**arguments)
            else:
                response = await self._client.chat_postMessage(**arguments)
        except SlackApiError as err:
            return None, _api_error(err)
        except (SlackClientError, ClientConnectionError, OSError, ValueError) as err:
            kind = "timeout" if isinstance(err, TimeoutError) else "connection_error"
            log.warning("slack_unreachable", method=method, error=type(err).__name__, workflow_id=n.workflow_id)
            return None, kind
        data = response.data
        return (data if isinstance(data, dict) else {}), ""


def _api_error(err: SlackApiError) -> str:
    response = err.response
    data = getattr(response, "data", None)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, str) and error:
        return error
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    if status == 429:
        return "ratelimited"
    if isinstance(status, int) and status != 200:
        return f"http_{status}"
    return "unexpected_response"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


__all__ = [
    "RateLimitRetry",
    "ServerErrorRetry",
    "SlackNotifier",
    "build_blocks",
    "button_value",
    "decision_verdict",
    "fallback_text",
    "thread_messages",
]
