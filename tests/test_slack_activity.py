"""The notify activity with Slack: real slack-sdk over HTTP against the Slack stand-in."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from slack_sdk.web.async_client import AsyncWebClient
from structlog.testing import capture_logs

from activities.notify import ConsoleNotifier, Notifier
from activities.slack import THREAD_MESSAGE_CHARS, THREAD_MESSAGES, SlackNotifier
from config.settings import Settings
from models.incident import (
    Action,
    ActionType,
    Category,
    Diagnosis,
    FeedbackRecord,
    Hypothesis,
    Notification,
    Phase,
    Plan,
    Severity,
    Workload,
)
from tests.fixtures.slack_stand_in import (
    DEFAULT_TOKEN,
    SlackStandIn,
    StoredMessage,
    hang,
    ratelimited,
    server_error,
    slack_error,
)

WORKFLOW_ID = "incident-alertmanager-3f2a9c"
CHANNEL_ID = "C0INCIDENTS"


def _diagnosis() -> Diagnosis:
    return Diagnosis(
        category=Category.bad_deploy,
        confidence=0.82,
        root_cause=Workload(namespace="shop", workload="checkout"),
        summary="checkout v2 started failing right after its rollout",
        hypotheses=[
            Hypothesis(category=Category.oom_kill, confidence=0.3, evidence=["oom: container killed"]),
            Hypothesis(
                category=Category.bad_deploy,
                confidence=0.82,
                evidence=[
                    "rollout of checkout 3 minutes before onset",
                    "error ratio 12% since revision 7",
                    "NullPointerException in CartService (412 lines)",
                    "a fourth line that is not shown",
                ],
                root_cause=Workload(namespace="shop", workload="checkout"),
            ),
        ],
    )


def _plan(*actions: Action) -> Plan:
    return Plan(
        id="plan-1",
        actions=list(actions)
        or [Action(type=ActionType.rollback, namespace="shop", target="checkout", risk="medium", reason="bad deploy")],
        rationale="roll back the deploy that started the errors",
    )


def _notification(**overrides: Any) -> Notification:
    values: dict[str, Any] = {
        "workflow_id": WORKFLOW_ID,
        "event": "approval_requested",
        "phase": Phase.awaiting_approval,
        "severity": Severity.critical,
        "title": "CheckoutErrorRate in shop/checkout",
        "text": "A remediation plan awaits your decision.",
        "plan": _plan(),
        "diagnosis": _diagnosis(),
    }
    values.update(overrides)
    return Notification(**values)


def _notifier(
    slack: SlackStandIn, *, token: str = DEFAULT_TOKEN, channel: str = "#incidents", **options: Any
) -> Notifier:
    options.setdefault("retry_interval_s", 0.01)
    return Notifier(SlackNotifier(token, channel, slack.url, **options))


def _blocks_of(message: StoredMessage, kind: str) -> list[dict[str, Any]]:
    return [block for block in message.blocks if block["type"] == kind]


async def test_the_first_notification_posts_one_message_with_the_incident() -> None:
    async with SlackStandIn() as slack:
        receipt = await _notifier(slack).notify(_notification())

        assert receipt.problems == []
        assert receipt.slack_channel == CHANNEL_ID  # the channel's id, though it was configured by name
        assert receipt.slack_ts == "1700000000.000100"
        [call] = slack.calls
        assert call.method == "chat.postMessage"
        assert call.headers["Authorization"] == f"Bearer {DEFAULT_TOKEN}"
        assert call.content_type == "application/json"
        [message] = slack.channel_messages(CHANNEL_ID)
        assert message.ts == receipt.slack_ts
        assert "CheckoutErrorRate in shop/checkout" in message.text  # the fallback text

        [header] = _blocks_of(message, "header")
        assert header["text"]["text"] == "CRITICAL: CheckoutErrorRate in shop/checkout"
        fields = "\n".join(
            field["text"] for block in _blocks_of(message, "section") for field in block.get("fields", [])
        )
        assert "*Phase*\nawaiting approval" in fields
        assert "critical" in fields
        assert WORKFLOW_ID in fields
        seen = message.all_text()
        assert "`bad_deploy` · confidence 82%" in seen
        assert "`shop/checkout`" in seen
        assert "rollout of checkout 3 minutes before onset" in seen
        assert "NullPointerException in CartService (412 lines)" in seen
        assert "a fourth line that is not shown" not in seen  # top 3 only
        assert "oom: container killed" not in seen  # only the top hypothesis's evidence
        assert "• *rollback* `shop/checkout` · risk medium · requires approval" in seen

        [actions] = _blocks_of(message, "actions")
        assert [element["action_id"] for element in actions["elements"]] == ["approve", "reject"]
        for value in message.button_values().values():
            assert json.loads(value) == {"workflow_id": WORKFLOW_ID, "plan_id": "plan-1"}


@pytest.mark.parametrize(
    ("phase", "plan"),
    [
        (Phase.diagnosing, _plan()),
        (Phase.awaiting_approval, _plan(Action(type=ActionType.escalate, reason="nothing safe to do"))),
        (Phase.awaiting_approval, None),
    ],
    ids=["not-awaiting-approval", "nothing-mutating", "no-plan"],
)
async def test_buttons_only_while_a_mutating_plan_awaits_approval(phase: Phase, plan: Plan | None) -> None:
    async with SlackStandIn() as slack:
        receipt = await _notifier(slack).notify(_notification(phase=phase, plan=plan, event="diagnosed"))

        assert receipt.problems == []
        [message] = slack.channel_messages(CHANNEL_ID)
        assert _blocks_of(message, "actions") == []
        assert message.button_values() == {}


async def test_a_later_notification_updates_the_same_message_and_threads_the_timeline() -> None:
    async with SlackStandIn() as slack:
        notifier = _notifier(slack)
        first = await notifier.notify(_notification())
        lines = [
            "12:01Z decision: plan plan-1 approved by alice",
            "12:01Z phase: awaiting_approval -> remediating",
            "12:02Z action: rollback shop/checkout (dry_run)",
        ]
        second = await notifier.notify(
            _notification(
                event="approved",
                phase=Phase.remediating,
                text="Plan plan-1 approved by alice.",
                decided_by="alice",
                slack_channel=first.slack_channel,
                slack_ts=first.slack_ts,
                thread_lines=lines,
            )
        )

        assert second.problems == []
        assert (second.slack_channel, second.slack_ts) == (first.slack_channel, first.slack_ts)
        assert [call.method for call in slack.calls] == ["chat.postMessage", "chat.update", "chat.postMessage"]
        [message] = slack.channel_messages(CHANNEL_ID)  # no second top-level message
        assert message.edits == 1
        assert "*Phase*\nremediating" in message.all_text()
        assert ":white_check_mark: Approved by *alice*" in message.all_text()
        assert message.button_values() == {}  # decided: no buttons any more
        [reply] = slack.thread(CHANNEL_ID, first.slack_ts or "")
        assert reply.text == "\n".join(lines).replace("->", "-&gt;")  # several lines: one reply, mrkdwn-escaped
        assert slack.calls[2].args["thread_ts"] == first.slack_ts


async def test_a_rejection_and_the_outcome_show() -> None:
    async with SlackStandIn() as slack:
        notifier = _notifier(slack)
        first = await notifier.notify(_notification())
        where = {"slack_channel": first.slack_channel, "slack_ts": first.slack_ts}
        await notifier.notify(
            _notification(
                event="escalated",
                phase=Phase.escalated,
                text="plan plan-1 rejected by bob: not during the sale",
                decided_by="bob",
                **where,
            )
        )
        message = slack.message(CHANNEL_ID, first.slack_ts or "")
        assert ":x: Rejected by *bob*" in message.all_text()
        assert message.button_values() == {}

        receipt = await notifier.notify(
            _notification(
                event="resolved",
                phase=Phase.resolved,
                text="Incident resolved: recovered on its own.",
                decided_by="bob",
                outcome="recovered on its own",
                thread_lines=["12:30Z phase: escalated -> resolved"],
                **where,
            )
        )
        assert receipt.problems == []
        message = slack.message(CHANNEL_ID, first.slack_ts or "")
        assert "*Outcome*\nrecovered on its own" in message.all_text()
        assert "*Phase*\nresolved" in message.all_text()
        assert [reply.text for reply in slack.thread(CHANNEL_ID, first.slack_ts or "")] == [
            "12:30Z phase: escalated -&gt; resolved"  # escaped for mrkdwn
        ]
        assert len(slack.channel_messages(CHANNEL_ID)) == 1


@pytest.mark.parametrize("retry_after", [0, 1])
async def test_a_rate_limit_is_waited_out_and_the_post_succeeds(retry_after: int) -> None:
    async with SlackStandIn() as slack:
        slack.script(ratelimited(retry_after, method="chat.postMessage"))
        started = time.monotonic()
        receipt = await _notifier(slack).notify(_notification())

        assert receipt.problems == []
        assert receipt.slack_ts is not None
        assert [call.status for call in slack.calls] == [429, 200]
        assert time.monotonic() - started >= retry_after
        assert len(slack.channel_messages(CHANNEL_ID)) == 1


async def test_a_long_rate_limit_is_given_up_at_once_and_recorded() -> None:
    async with SlackStandIn() as slack:
        slack.script(ratelimited(30))
        started = time.monotonic()
        receipt = await _notifier(slack).notify(_notification(thread_lines=["a line"]))

        assert time.monotonic() - started < 5
        assert receipt.problems == ["slack: ratelimited"]
        assert receipt.slack_ts is None
        assert len(slack.calls) == 1


async def test_rate_limits_are_retried_a_bounded_number_of_times() -> None:
    async with SlackStandIn() as slack:
        slack.script(*(ratelimited(0) for _ in range(5)))
        receipt = await _notifier(slack, rate_limit_retries=2).notify(_notification())

        assert receipt.problems == ["slack: ratelimited"]
        assert len(slack.calls) == 3  # the call and two retries


async def test_an_unknown_channel_is_recorded_not_raised() -> None:
    async with SlackStandIn() as slack:
        receipt = await _notifier(slack, channel="#no-such-channel").notify(_notification(thread_lines=["x"]))

        assert receipt.problems == ["slack: channel_not_found"]
        assert (receipt.slack_channel, receipt.slack_ts) == (None, None)
        assert len(slack.calls) == 1  # no thread reply attempted


async def test_a_channel_the_bot_is_not_in_is_recorded() -> None:
    async with SlackStandIn(not_member={CHANNEL_ID}) as slack:
        receipt = await _notifier(slack).notify(_notification())

        assert receipt.problems == ["slack: not_in_channel"]


@pytest.mark.parametrize("error", ["invalid_auth", "account_inactive"])
async def test_a_bad_token_is_recorded_not_raised(error: str) -> None:
    async with SlackStandIn() as slack:
        notifier = _notifier(slack, token="xoxb-revoked-or-wrong")
        if error != "invalid_auth":
            slack.script(slack_error(error))
        with capture_logs() as logs:
            receipt = await notifier.notify(
                _notification(slack_channel=CHANNEL_ID, slack_ts="1700000000.000100", thread_lines=["x", "y"])
            )

        assert receipt.problems == [f"slack: {error}"]
        # The message it could not update stays where it was: the next notification tries it again.
        assert (receipt.slack_channel, receipt.slack_ts) == (CHANNEL_ID, "1700000000.000100")
        assert [call.method for call in slack.calls] == ["chat.update"]  # the thread is not attempted
        assert "xoxb-revoked-or-wrong" not in repr(logs)


async def test_an_update_of_a_deleted_message_posts_a_new_one() -> None:
    async with SlackStandIn() as slack:
        notifier = _notifier(slack)
        first = await notifier.notify(_notification())
        slack.delete(CHANNEL_ID, first.slack_ts or "")

        receipt = await notifier.notify(
            _notification(
                event="escalated",
                phase=Phase.escalated,
                slack_channel=first.slack_channel,
                slack_ts=first.slack_ts,
                thread_lines=["12:15Z approval timed out"],
            )
        )

        assert receipt.slack_ts is not None
        assert receipt.slack_ts != first.slack_ts
        assert receipt.slack_channel == CHANNEL_ID
        assert receipt.problems == ["slack: message_not_found (posted a new message)"]
        assert [call.method for call in slack.calls] == [
            "chat.postMessage",
            "chat.update",
            "chat.postMessage",
            "chat.postMessage",
        ]
        [message] = slack.channel_messages(CHANNEL_ID)
        assert message.ts == receipt.slack_ts
        assert "*Phase*\nescalated" in message.all_text()
        assert [reply.text for reply in slack.thread(CHANNEL_ID, receipt.slack_ts)] == ["12:15Z approval timed out"]


async def test_server_errors_are_retried() -> None:
    async with SlackStandIn() as slack:
        slack.script(server_error(500), server_error(503))
        receipt = await _notifier(slack).notify(_notification())

        assert receipt.problems == []
        assert [call.status for call in slack.calls] == [500, 503, 200]
        assert len(slack.channel_messages(CHANNEL_ID)) == 1


async def test_server_errors_past_the_retries_are_recorded() -> None:
    async with SlackStandIn() as slack:
        slack.script(*(server_error(502) for _ in range(4)))
        receipt = await _notifier(slack).notify(_notification())

        assert receipt.problems == ["slack: http_502"]
        assert len(slack.calls) == 3
        assert slack.pending == 1


async def test_an_unreachable_slack_is_recorded() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    notifier = Notifier(
        SlackNotifier(DEFAULT_TOKEN, "#incidents", f"http://127.0.0.1:{port}/api/", retry_interval_s=0.01)
    )

    receipt = await notifier.notify(_notification())

    assert receipt.problems == ["slack: connection_error"]


async def test_a_slack_that_hangs_is_given_up_within_the_budget() -> None:
    async with SlackStandIn() as slack:
        slack.script(hang(5))
        started = time.monotonic()
        receipt = await _notifier(slack, budget_s=0.5).notify(_notification())

        assert time.monotonic() - started < 3
        assert receipt.problems == ["slack: timeout"]


async def test_not_configured_logs_the_console_line_only() -> None:
    async with SlackStandIn() as slack:
        settings = Settings(_env_file=None, slack_api_url=slack.url)
        assert SlackNotifier.from_settings(settings) is None
        for notifier in (Notifier(SlackNotifier.from_settings(settings)), ConsoleNotifier()):
            with capture_logs() as logs:
                receipt = await notifier.notify(_notification(thread_lines=["x"]))
            assert receipt.problems == []
            assert (receipt.slack_channel, receipt.slack_ts) == (None, None)
            [line] = [entry for entry in logs if entry["event"] == "approval_requested"]
            assert line["workflow_id"] == WORKFLOW_ID
            assert line["plan_id"] == "plan-1"
        assert slack.calls == []


async def test_configured_from_settings_when_token_and_channel_are_set() -> None:
    async with SlackStandIn() as slack:
        only_token = Settings(_env_file=None, slack_bot_token=SecretStr(DEFAULT_TOKEN))
        assert SlackNotifier.from_settings(only_token) is None
        settings = Settings(
            _env_file=None,
            slack_bot_token=SecretStr(DEFAULT_TOKEN),
            slack_channel="#incidents",
            slack_api_url=slack.url,
        )
        slack_notifier = SlackNotifier.from_settings(settings)
        assert slack_notifier is not None
        assert DEFAULT_TOKEN not in repr(slack_notifier)
        with capture_logs() as logs:
            receipt = await Notifier(slack_notifier).notify(_notification())
        assert receipt.problems == []
        assert receipt.slack_ts is not None
        assert any(entry["event"] == "approval_requested" for entry in logs)  # the console line too
        assert DEFAULT_TOKEN not in repr(logs)


async def test_the_timeline_is_batched_into_few_bounded_replies() -> None:
    async with SlackStandIn() as slack:
        lines = [f"12:{i % 60:02d}Z event {i}: " + "x" * 400 for i in range(300)]
        receipt = await _notifier(slack).notify(_notification(thread_lines=lines))

        assert receipt.problems == []
        replies = slack.thread(CHANNEL_ID, receipt.slack_ts or "")
        assert 1 < len(replies) <= THREAD_MESSAGES
        assert all(len(reply.text) <= THREAD_MESSAGE_CHARS + 100 for reply in replies)
        assert replies[0].text.startswith("12:00Z event 0: ")
        assert "more timeline entries" in replies[-1].text


async def test_huge_and_hostile_content_stays_within_slack_limits() -> None:
    async with SlackStandIn() as slack:
        many = [
            Action(type=ActionType.scale_up, namespace="shop", target=f"svc-{i}" * 20, reason="r" * 500)
            for i in range(40)
        ]
        diagnosis = _diagnosis().model_copy(update={"summary": "s & <t> " * 2000})
        diagnosis.hypotheses[1].evidence = ["<!channel> " + "e" * 5000] * 10
        receipt = await _notifier(slack).notify(
            _notification(
                title="<!channel> " + "T" * 500,
                text="& " * 10_000,
                plan=Plan(id="plan-big", actions=many, rationale="why " * 3000),
                diagnosis=diagnosis,
                thread_lines=["<@U123> " + "l" * 10_000],
            )
        )

        assert receipt.problems == []  # the stand-in checks Block Kit's limits: nothing was refused
        [message] = slack.channel_messages(CHANNEL_ID)
        assert len(message.blocks) <= 15
        assert "<!channel>" not in message.all_text().replace("CRITICAL: <!channel>", "")  # plain_text header only
        assert "&lt;!channel&gt;" in message.all_text()
        [reply] = slack.thread(CHANNEL_ID, receipt.slack_ts or "")
        assert reply.text.startswith("&lt;@U123&gt;")


async def test_the_stand_in_speaks_slack_to_slack_sdk() -> None:
    async with SlackStandIn() as slack:
        client = AsyncWebClient(token=DEFAULT_TOKEN, base_url=slack.url)
        identity = await client.auth_test()
        assert identity["user_id"] == "U0STANDBOT"
        assert slack.calls[-1].content_type == "application/x-www-form-urlencoded"
        posted = await client.chat_postMessage(channel="incidents", text="hello")
        assert posted["message"]["text"] == "hello"
        updated = await client.chat_update(channel=posted["channel"], ts=posted["ts"], text="hello again")
        assert updated["text"] == "hello again"
        assert slack.message(CHANNEL_ID, posted["ts"]).text == "hello again"


def _feedback_controls(message: StoredMessage) -> dict[str, dict[str, Any]]:
    return {
        element["action_id"]: element
        for block in _blocks_of(message, "actions")
        if block.get("block_id") == "feedback"
        for element in block["elements"]
    }


async def test_a_closed_incident_open_for_feedback_asks_whether_the_diagnosis_was_correct() -> None:
    async with SlackStandIn() as slack:
        closing = _notification(event="closed", phase=Phase.closed, outcome="resolved", feedback_open=True)
        receipt = await _notifier(slack).notify(closing)

        assert receipt.problems == []  # the stand-in checks every block against Slack's limits
        [message] = slack.channel_messages(CHANNEL_ID)
        controls = _feedback_controls(message)
        assert set(controls) == {"feedback_correct", "feedback_wrong", "feedback_cause"}
        assert json.loads(controls["feedback_correct"]["value"]) == {"workflow_id": WORKFLOW_ID}
        causes = [json.loads(option["value"]) for option in controls["feedback_cause"]["options"]]
        assert {c["workflow_id"] for c in causes} == {WORKFLOW_ID}
        named = {c["cause"] for c in causes}
        # Every other cause can be named; not the one diagnosed (that is "Yes"), nor "unknown".
        assert named == {c.value for c in Category} - {"bad_deploy", "unknown"}
        assert "Diagnosis correct?" in message.all_text()


@pytest.mark.parametrize(
    ("verdict", "cause", "shown"),
    [("correct", None, "judged *correct* by *U0ALICE*"), ("wrong", Category.oom_kill, "`oom_kill`")],
)
async def test_a_given_verdict_replaces_the_controls(verdict: str, cause: Category | None, shown: str) -> None:
    record = FeedbackRecord(
        verdict=verdict,  # type: ignore[arg-type]
        by="U0ALICE",
        cause=cause,
        at=datetime(2026, 1, 1, tzinfo=UTC),
        diagnosed=Category.bad_deploy,
    )
    async with SlackStandIn() as slack:
        notification = _notification(event="feedback", phase=Phase.closed, feedback=record, feedback_open=False)
        await _notifier(slack).notify(notification)
        [message] = slack.channel_messages(CHANNEL_ID)
        assert _feedback_controls(message) == {} and shown in message.all_text()


async def test_no_feedback_controls_before_the_close_or_after_the_window() -> None:
    async with SlackStandIn() as slack:
        notifier = _notifier(slack)
        await notifier.notify(_notification(event="closed", phase=Phase.closed, feedback_open=False))
        await notifier.notify(_notification(event="diagnosed", phase=Phase.diagnosing, plan=None))
        for message in slack.channel_messages(CHANNEL_ID):
            assert _feedback_controls(message) == {} and "Diagnosis correct?" not in message.all_text()
