"""End to end: humans in the loop, in ``make run``'s stack with the Slack Web API and PagerDuty stand-ins.

One incident gets one Slack message, updated in place through every phase. Signed clicks are tried:
- one with a bad signature changes nothing (401);
- one from a user who is not an approver changes nothing and is told why;
- one from an allowed approver drives the remediation.

A second incident is left unanswered until its approval timeout and pages PagerDuty exactly once. The
post-incident report is served over HTTP. Once the first incident closes, its message asks "Diagnosis correct?";
a signed answer is recorded, shown in the message and counted by ``GET /stats``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from tests.e2e.stack import bad_deploy_cluster, devstack, eventually, incident_state, wait_phase, wait_ready
from tests.fixtures.http_stand_in import one_route_server
from tests.fixtures.kube import kube_api
from tests.fixtures.pagerduty_stand_in import PagerDutyStandIn
from tests.fixtures.slack_stand_in import DEFAULT_TOKEN, SlackStandIn

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ROUTING_KEY = "R0123456789abcdef0123456789abcde"  # PagerDuty integration keys are 32 characters
CHANNEL = "C0INCIDENTS"


def payload(group: str, starts_at: datetime) -> dict[str, Any]:
    labels = {"alertname": "HighErrorRate", "namespace": "food", "service": "search", "severity": "critical"}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="HighErrorRate", case="{group}"}}',
        "status": "firing",
        "receiver": "incident-agent",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "High 5xx error rate on search"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "High 5xx error rate on search"},
                "startsAt": starts_at.isoformat().replace("+00:00", "Z"),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": f"f{hashlib.sha256(group.encode()).hexdigest()[:15]}",
            }
        ],
    }


def click(workflow_id: str, plan_id: str, user: str, response_url: str, action: str = "approve") -> bytes:
    body = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower()},
        "actions": [
            {
                "action_id": action,
                "block_id": "decision",
                "value": json.dumps({"workflow_id": workflow_id, "plan_id": plan_id}),
                "type": "button",
            }
        ],
        "response_url": response_url,
        "channel": {"id": CHANNEL},
    }
    return urlencode({"payload": json.dumps(body)}).encode()


def resolved(group: str, starts_at: datetime) -> dict[str, Any]:
    body = payload(group, starts_at)
    body["status"] = body["alerts"][0]["status"] = "resolved"
    body["alerts"][0]["endsAt"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return body


def cause_selected(workflow_id: str, cause: str, user: str, response_url: str) -> bytes:
    """The closed incident's "No, it was…" menu, as Slack posts a selection."""
    body = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower()},
        "actions": [
            {
                "action_id": "feedback_cause",
                "block_id": "feedback",
                "type": "static_select",
                "selected_option": {
                    "text": {"type": "plain_text", "text": cause},
                    "value": json.dumps({"workflow_id": workflow_id, "cause": cause}),
                },
            }
        ],
        "response_url": response_url,
    }
    return urlencode({"payload": json.dumps(body)}).encode()


def signature(body: bytes, secret: str = SECRET) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }


async def test_slack_message_signed_approval_pagerduty_once_and_the_report(tmp_path: Path) -> None:
    starts_at = datetime.now(UTC) - timedelta(minutes=2)
    answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def response_url(request: web.Request) -> web.Response:
        await answers.put(await request.json())
        return web.Response(text="ok")

    async with (
        SlackStandIn() as slack,
        PagerDutyStandIn() as pagerduty,
        one_route_server("/respond", response_url) as respond_base,
        kube_api(tmp_path, bad_deploy_cluster(starts_at - timedelta(minutes=4))) as kubernetes,
    ):
        env = {
            "SLACK_BOT_TOKEN": DEFAULT_TOKEN,
            "SLACK_CHANNEL": CHANNEL,
            "SLACK_API_URL": slack.url,
            "SLACK_SIGNING_SECRET": SECRET,
            "APPROVERS": "U0ALLOWED",
            "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
            "PAGERDUTY_EVENTS_URL": pagerduty.events_url,
            "KUBECONFIG": str(kubernetes.kubeconfig),
            "APPROVAL_TIMEOUT": "6s",
            "VERIFY_AFTER": "1s",
        }
        respond_url = f"{respond_base}/respond"
        with devstack(tmp_path, env) as stack:
            async with aiohttp.ClientSession() as session:
                await wait_ready(session, stack)
                posted = []
                for group in ("approved", "unanswered"):
                    async with session.post(
                        f"{stack.front_url}/alerts/alertmanager", json=payload(group, starts_at)
                    ) as response:
                        assert response.status == 202
                        posted.append((await response.json())["incidents"][0]["workflow_id"])
                approved, unanswered = posted
                waiting = await wait_phase(session, stack, approved, "awaiting_approval", timeout_s=30)
                plan_id = waiting["plan"]["id"]
                interactions = f"{stack.front_url}/slack/interactions"

                # A forged click: refused before anything is read.
                body = click(approved, plan_id, "U0ALLOWED", respond_url)
                async with session.post(interactions, data=body, headers=signature(body, "wrong")) as response:
                    assert response.status == 401
                # A signed click from someone who may not decide: nothing changes, and they are told why.
                body = click(approved, plan_id, "U0INTRUDER", respond_url)
                async with session.post(interactions, data=body, headers=signature(body)) as response:
                    assert response.status == 200
                told = await asyncio.wait_for(answers.get(), timeout=15)
                assert "not an allowed approver" in told["text"]
                assert (await incident_state(session, stack, approved))["phase"] == "awaiting_approval"
                # The allowed approver's click drives the remediation.
                body = click(approved, plan_id, "U0ALLOWED", respond_url)
                async with session.post(interactions, data=body, headers=signature(body)) as response:
                    assert response.status == 200
                told = await asyncio.wait_for(answers.get(), timeout=15)
                assert told["text"].startswith("Approved")

                async def decided() -> dict[str, Any]:
                    state = await incident_state(session, stack, approved)
                    return state if state.get("phase") in ("verifying", "escalated", "resolved", "closed") else {}

                acted = await eventually(decided, 30, "the approved incident to act")
                assert acted["decision"]["by"] == "U0ALLOWED" and acted["actions_taken"]

                # The unanswered incident escalates at its approval timeout and pages PagerDuty once.
                escalated = await wait_phase(session, stack, unanswered, "escalated", timeout_s=30)
                assert "no decision" in escalated["escalation_reason"]
                await eventually(lambda: _paged(pagerduty, unanswered), 15, "PagerDuty to be paged")

                async with session.get(f"{stack.front_url}/incidents/{approved}/report") as response:
                    assert response.status == 200
                    assert response.content_type == "text/markdown"
                    report = await response.text()

                # The alert resolves; the closed incident asks whether its diagnosis was right.
                async with session.post(
                    f"{stack.front_url}/alerts/alertmanager", json=resolved("approved", starts_at)
                ) as response:
                    assert response.status == 202
                await wait_phase(session, stack, approved, "closed", timeout_s=30)

                async def asks() -> bool:
                    return _asks_for_feedback(slack, approved)

                await eventually(asks, 15, "the feedback controls")
                body = cause_selected(approved, "oom_kill", "U0ALLOWED", respond_url)
                async with session.post(interactions, data=body, headers=signature(body)) as response:
                    assert response.status == 200
                told = await asyncio.wait_for(answers.get(), timeout=15)
                assert told["text"].startswith("Thank you") and "oom_kill" in told["text"]

                async def judged() -> dict[str, Any]:
                    async with session.get(f"{stack.front_url}/stats?window=1h&service=search") as response:
                        figures = await response.json()
                    return figures if figures["diagnosis"]["judged"] == 1 else {}

                figures = await eventually(judged, 15, "the verdict in the stats")
                assert figures["diagnosis"]["wrong"] == 1 and figures["closed"] == 1
            assert stack.stop() == 0

    # One Slack message per incident, updated in place through every phase, with the timeline in its thread.
    messages = slack.channel_messages(CHANNEL)
    assert len(messages) == 2
    message = next(m for m in messages if approved in m.all_text())
    assert message.edits >= 4  # received -> triaging -> investigating -> diagnosing -> awaiting_approval -> ...
    assert "Approved by" in message.all_text() and "U0ALLOWED" in message.all_text()
    assert slack.thread(CHANNEL, message.ts)
    # PagerDuty: exactly one page for the unanswered incident, whatever retries happened.
    alert = pagerduty.alert(unanswered)
    assert alert is not None and alert.triggers == 1
    assert "# Incident report" in report and "U0ALLOWED" in report
    # The verdict replaced the controls in the message.
    assert not _asks_for_feedback(slack, approved) and "judged *wrong* by *U0ALLOWED*" in message.all_text()


def _asks_for_feedback(slack: SlackStandIn, workflow_id: str) -> bool:
    message = next(m for m in slack.channel_messages(CHANNEL) if workflow_id in m.all_text())
    return "feedback_correct" in message.button_values()


async def _paged(pagerduty: PagerDutyStandIn, dedup_key: str) -> bool:
    return pagerduty.alert(dedup_key) is not None
