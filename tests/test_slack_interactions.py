"""Slack button clicks -> the ``decide`` update: signed HTTP requests and Socket Mode, against a real dev server.

Each test opens a real incident that waits for approval (the worker's bad-deploy rollback plan), clicks its buttons
the way Slack does, and reads the outcome from the incident's state and from a local stand-in for ``response_url``.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from frontdoor.app import create_app
from frontdoor.gateway import IncidentGateway
from frontdoor.slack import SLACK_INTERACTIONS, FeedbackClick, SlackInteractions, SocketMode, parse_click
from models.incident import Decision, DecisionResult, Feedback, IncidentSettings
from tests.conftest import load_payload
from tests.fixtures.http_stand_in import one_route_server
from tests.harness import FakePrometheus, RecordingNotifier, incident_worker, wait_http_phase
from triage.identity import incident_workflow_id

ROOT = Path(__file__).resolve().parent.parent
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ALLOWED = "U0ALLOWED"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class ResponseUrl:
    """Stands in for a click's ``response_url``: keeps what the agent posts to it."""

    def __init__(self) -> None:
        self.url = ""
        self.posted: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def handler(self, request: web.Request) -> web.Response:
        self.posted.put_nowait(await request.json())
        return web.Response(text="ok")

    async def next(self, timeout_s: float = 15) -> dict[str, Any]:
        return await asyncio.wait_for(self.posted.get(), timeout_s)

    async def next_text(self) -> str:
        body = await self.next()
        # Ephemeral, to the clicking user only, and never replacing the incident's message.
        assert body["response_type"] == "ephemeral" and body["replace_original"] is False
        return str(body["text"])


class HeldGateway(IncidentGateway):
    """A gateway whose ``decide`` waits for the test: a slow worker, as far as the front door can tell."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def decide(self, workflow_id: str, decision: Decision) -> DecisionResult:
        self.entered.set()
        await self.release.wait()
        return await super().decide(workflow_id, decision)


class Slack:
    """Front doors against the dev server (a worker on the same queue), the response_url stand-in, and clicks."""

    def __init__(self, env: WorkflowEnvironment, task_queue: str, response_url: ResponseUrl) -> None:
        self.env = env
        self.task_queue = task_queue
        self.responses = response_url
        self.clients: list[TestClient] = []
        self.apps: list[web.Application] = []
        self.gateways: list[IncidentGateway] = []

    async def front(self, gateway_type: type[IncidentGateway] = IncidentGateway, **overrides: Any) -> TestClient:
        overrides.setdefault("slack_signing_secret", SecretStr(SECRET))
        overrides.setdefault("approvers", [ALLOWED])
        settings = Settings(
            _env_file=None,
            temporal_address=self.env.client.service_client.config.target_host,
            temporal_task_queue=self.task_queue,
            **overrides,
        )
        gateway = gateway_type(self.env.client, settings, IncidentSettings(approvers=settings.approvers))
        app = create_app(gateway, settings)
        client = TestClient(TestServer(app))
        await client.start_server()
        self.clients.append(client)
        self.apps.append(app)
        self.gateways.append(gateway)
        return client

    async def open_incident(self, client: TestClient) -> tuple[str, str]:
        """A new incident awaiting approval: its workflow id and pending plan id."""
        payload = copy.deepcopy(load_payload("alertmanager_firing.json"))
        payload["groupKey"] = f'{{}}:{{alertname="HighErrorRate", test="slack-{uuid.uuid4().hex[:8]}"}}'
        response = await client.post("/alerts/alertmanager", json=payload)
        workflow_id = (await response.json())["incidents"][0]["workflow_id"]
        state = await wait_http_phase(client, workflow_id, "awaiting_approval")
        return workflow_id, state["plan"]["id"]

    def payload(
        self, workflow_id: str, plan_id: str | None, *, action: str = "approve", user: str = ALLOWED
    ) -> dict[str, Any]:
        """A ``block_actions`` payload as Slack sends it for a click on the incident message's buttons."""
        return {
            "type": "block_actions",
            "user": {"id": user, "username": "alice", "name": "alice", "team_id": "T0TEAM"},
            "api_app_id": "A0APP",
            "token": "legacy-verification-token",
            "container": {"type": "message", "message_ts": "1767225600.000100", "channel_id": "C0INC"},
            "trigger_id": "1234.5678.abcdef",
            "team": {"id": "T0TEAM", "domain": "example"},
            "channel": {"id": "C0INC", "name": "incidents"},
            "message": {"type": "message", "ts": "1767225600.000100", "text": "HighErrorRate on food/search"},
            "response_url": self.responses.url,
            "actions": [
                {
                    "action_id": action,
                    "block_id": "decision",
                    "text": {"type": "plain_text", "text": action.title()},
                    "value": json.dumps({"workflow_id": workflow_id, "plan_id": plan_id}),
                    "type": "button",
                    "action_ts": "1767225601.000200",
                }
            ],
        }

    @property
    def interactions(self) -> SlackInteractions:
        return self.apps[-1][SLACK_INTERACTIONS]


def form(payload: Any) -> bytes:
    return urlencode({"payload": payload if isinstance(payload, str) else json.dumps(payload)}).encode()


def signed(body: bytes, *, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    """Slack's v0 signature, computed here independently of the SDK the front door verifies with."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {**FORM, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


async def settled(client: TestClient, workflow_id: str) -> None:
    """An approved incident acts (dry run) and then waits in verifying on a durable timer: no activity is left in
    flight when the test's worker stops."""
    await wait_http_phase(client, workflow_id, "verifying")


async def state(client: TestClient, workflow_id: str) -> dict[str, Any]:
    return await (await client.get(f"/incidents/{workflow_id}")).json()


async def click(client: TestClient, body: bytes, headers: dict[str, str]) -> tuple[int, str, float]:
    started = time.monotonic()
    response = await client.post("/slack/interactions", data=body, headers=headers)
    return response.status, await response.text(), time.monotonic() - started


async def assert_untouched(slack: Slack, client: TestClient, workflow_id: str) -> None:
    """Nothing in flight, nothing told to Slack, and the incident still waits for its decision."""
    assert not slack.interactions.pending
    await asyncio.sleep(0.2)
    assert slack.responses.posted.empty()
    body = await state(client, workflow_id)
    assert body["phase"] == "awaiting_approval" and body["decision"] is None


@pytest_asyncio.fixture
async def slack(dev_server: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Slack]:
    responses = ResponseUrl()
    prometheus = FakePrometheus()
    prometheus.series = []
    async with (
        one_route_server("/respond", responses.handler) as base,
        incident_worker(dev_server.client, task_queue, prometheus, RecordingNotifier()),
    ):
        responses.url = f"{base}/respond"
        harness = Slack(dev_server, task_queue, responses)
        yield harness
        for client in harness.clients:
            await client.close()


# ---- signed clicks ----------------------------------------------------------------------------------------------


async def test_signed_approve_from_an_allowed_user_decides_and_reports(slack: Slack) -> None:
    client = await slack.front()
    workflow_id, plan_id = await slack.open_incident(client)
    body = form(slack.payload(workflow_id, plan_id))

    status, text, elapsed = await click(client, body, signed(body))
    assert status == 200 and text == ""
    assert elapsed < 3

    assert await slack.responses.next_text() == (
        f"Approved plan {plan_id} of {workflow_id}; the incident is now remediating."
    )
    after = await state(client, workflow_id)
    assert after["phase"] != "awaiting_approval"
    assert after["decision"]["by"] == ALLOWED and after["decision"]["approve"] is True
    assert after["decision"]["reason"] == "via Slack" and after["decision"]["plan_id"] == plan_id
    await settled(client, workflow_id)


async def test_a_replayed_click_is_told_the_plan_was_already_decided(slack: Slack) -> None:
    client = await slack.front()
    workflow_id, plan_id = await slack.open_incident(client)
    body = form(slack.payload(workflow_id, plan_id))
    headers = signed(body)
    assert (await click(client, body, headers))[0] == 200
    assert (await slack.responses.next_text()).startswith("Approved")

    # The very same request again (still inside the 5 minute window): the workflow refuses a second decision.
    assert (await click(client, body, headers))[0] == 200
    text = await slack.responses.next_text()
    assert "already decided" in text and f"approved by <@{ALLOWED}>" in text
    timeline = (await state(client, workflow_id))["timeline"]
    assert [event["kind"] for event in timeline].count("decision") == 1
    await settled(client, workflow_id)


async def test_a_user_not_in_approvers_is_told_so_and_nothing_changes(slack: Slack) -> None:
    client = await slack.front()
    workflow_id, plan_id = await slack.open_incident(client)
    body = form(slack.payload(workflow_id, plan_id, user="U0MALLORY"))

    status, text, _ = await click(client, body, signed(body))
    assert status == 200 and text == ""
    assert "not an allowed approver" in await slack.responses.next_text()
    after = await state(client, workflow_id)
    assert after["phase"] == "awaiting_approval" and after["decision"] is None


async def test_reject_escalates_with_the_slack_user_as_decider(slack: Slack) -> None:
    client = await slack.front()
    workflow_id, plan_id = await slack.open_incident(client)
    body = form(slack.payload(workflow_id, plan_id, action="reject"))

    assert (await click(client, body, signed(body)))[0] == 200
    assert (await slack.responses.next_text()) == (
        f"Rejected plan {plan_id} of {workflow_id}; the incident is now escalated."
    )
    escalated = await wait_http_phase(client, workflow_id, "escalated")
    assert escalated["decision"]["by"] == ALLOWED and escalated["decision"]["approve"] is False


async def test_a_stale_plan_is_reported_as_stale(slack: Slack) -> None:
    client = await slack.front()
    workflow_id, _ = await slack.open_incident(client)
    body = form(slack.payload(workflow_id, "plan-from-an-older-message"))

    assert (await click(client, body, signed(body)))[0] == 200
    assert "this plan is stale" in (await slack.responses.next_text()).lower()
    assert (await state(client, workflow_id))["phase"] == "awaiting_approval"


async def test_an_unknown_incident_is_reported_as_no_such_incident(slack: Slack) -> None:
    client = await slack.front()
    for workflow_id in (incident_workflow_id(f"nobody-{uuid.uuid4()}"), "not-an-incident"):
        body = form(slack.payload(workflow_id, "plan-1"))
        assert (await click(client, body, signed(body)))[0] == 200
        text = await slack.responses.next_text()
        assert "no such incident" in text.lower() and workflow_id in text


async def test_the_ack_does_not_wait_for_a_slow_update(slack: Slack) -> None:
    client = await slack.front(HeldGateway)
    workflow_id, plan_id = await slack.open_incident(client)
    gateway = slack.gateways[-1]
    assert isinstance(gateway, HeldGateway)
    body = form(slack.payload(workflow_id, plan_id))

    status, _, elapsed = await click(client, body, signed(body))
    # Answered while the update has not even been sent: the worker's pace is not Slack's 3 s deadline.
    assert status == 200 and elapsed < 1
    await asyncio.wait_for(gateway.entered.wait(), 5)
    assert len(slack.interactions.pending) == 1
    assert slack.responses.posted.empty()
    assert (await state(client, workflow_id))["decision"] is None

    gateway.release.set()
    assert (await slack.responses.next_text()).startswith(f"Approved plan {plan_id}")
    assert (await state(client, workflow_id))["decision"]["by"] == ALLOWED
    await settled(client, workflow_id)


# ---- refused requests -------------------------------------------------------------------------------------------


async def test_bad_signatures_are_401_and_touch_nothing(slack: Slack) -> None:
    client = await slack.front()
    workflow_id, plan_id = await slack.open_incident(client)
    body = form(slack.payload(workflow_id, plan_id))
    good = signed(body)
    tampered = form(slack.payload(workflow_id, None, user="U0MALLORY"))
    variants: list[tuple[bytes, dict[str, str], str]] = [
        (body, signed(body, secret="not-the-secret"), "does not match"),
        (tampered, good, "does not match"),  # signed for another body
        (body, {**good, "X-Slack-Signature": good["X-Slack-Signature"].removeprefix("v0=")}, "does not match"),
        (body, {**FORM, "X-Slack-Request-Timestamp": good["X-Slack-Request-Timestamp"]}, "missing"),
        (body, {**FORM, "X-Slack-Signature": good["X-Slack-Signature"]}, "missing"),
        (body, FORM, "missing"),
        (body, {**good, "X-Slack-Request-Timestamp": "yesterday"}, "Unix time"),
    ]
    for data, headers, needle in variants:
        response = await client.post("/slack/interactions", data=data, headers=headers)
        assert response.status == 401
        assert needle in (await response.json())["error"]
    await assert_untouched(slack, client, workflow_id)


async def test_a_correctly_signed_but_stale_request_is_401(slack: Slack) -> None:
    client = await slack.front()
    workflow_id, plan_id = await slack.open_incident(client)
    body = form(slack.payload(workflow_id, plan_id))
    for skew in (-6 * 60, 6 * 60):  # a replay six minutes on, or a clock six minutes ahead
        response = await client.post(
            "/slack/interactions", data=body, headers=signed(body, timestamp=int(time.time()) + skew)
        )
        assert response.status == 401
        assert "5 minutes" in (await response.json())["error"]
    await assert_untouched(slack, client, workflow_id)


async def test_malformed_and_foreign_payloads_are_acked_and_ignored(slack: Slack) -> None:
    client = await slack.front()
    workflow_id, plan_id = await slack.open_incident(client)
    click_ = slack.payload(workflow_id, plan_id)

    def changed(update: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        payload = copy.deepcopy(click_)
        update(payload)
        return payload

    bodies = [
        b"",
        urlencode({"not_payload": "x"}).encode(),
        form("{not json"),
        form([click_]),
        form(changed(lambda p: p.update(type="view_submission"))),
        form(changed(lambda p: p.update(actions=[]))),
        form(changed(lambda p: p["actions"][0].update(action_id="snooze"))),
        form(changed(lambda p: p["actions"][0].update(value="approve-it"))),
        form(changed(lambda p: p["actions"][0].update(value=json.dumps({"plan_id": plan_id})))),
        form(changed(lambda p: p.pop("user"))),
        b"payload=%FF%FE",
    ]
    for body in bodies:
        status, text, _ = await click(client, body, signed(body))
        assert (status, text) == (200, ""), body
    await assert_untouched(slack, client, workflow_id)


async def test_without_a_signing_secret_the_endpoint_is_503(slack: Slack) -> None:
    for secret in (None, SecretStr("  ")):
        client = await slack.front(slack_signing_secret=secret)
        body = form(slack.payload(incident_workflow_id("x"), None))
        response = await client.post("/slack/interactions", data=body, headers=signed(body))
        assert response.status == 503
        assert "SLACK_SIGNING_SECRET" in (await response.json())["error"]


# ---- Socket Mode ------------------------------------------------------------------------------------------------


class FakeSocketModeClient:
    """What the listener needs of the SDK's client: somewhere to send the ack."""

    def __init__(self) -> None:
        self.acks: list[dict[str, Any]] = []

    async def send_socket_mode_response(self, response: SocketModeResponse) -> None:
        self.acks.append(response.to_dict())


async def test_socket_mode_client_is_wired_to_the_shared_handler_without_connecting(slack: Slack) -> None:
    await slack.front()
    socket_mode = SocketMode("xapp-1-A0APP-0000-test", slack.interactions, api_url="http://127.0.0.1:9/api/")
    try:
        assert socket_mode.client.socket_mode_request_listeners == [slack.interactions.on_socket_mode_request]
        assert socket_mode.client.app_token == "xapp-1-A0APP-0000-test"
        assert socket_mode.client.web_client.base_url == "http://127.0.0.1:9/api/"
        assert not await socket_mode.client.is_connected()
    finally:
        await socket_mode.stop()


async def test_socket_mode_envelopes_are_acked_at_once_and_decided(slack: Slack) -> None:
    client = await slack.front()
    workflow_id, plan_id = await slack.open_incident(client)
    fake = FakeSocketModeClient()

    other = SocketModeRequest(type="events_api", envelope_id="env-0", payload={"event": {"type": "app_mention"}})
    await slack.interactions.on_socket_mode_request(fake, other)  # type: ignore[arg-type]
    assert fake.acks == [{"envelope_id": "env-0"}] and not slack.interactions.pending

    request = SocketModeRequest(type="interactive", envelope_id="env-1", payload=slack.payload(workflow_id, plan_id))
    await slack.interactions.on_socket_mode_request(fake, request)  # type: ignore[arg-type]
    assert fake.acks[-1] == {"envelope_id": "env-1"}
    assert (await slack.responses.next_text()).startswith(f"Approved plan {plan_id} of {workflow_id}")
    assert (await state(client, workflow_id))["decision"]["by"] == ALLOWED
    await settled(client, workflow_id)


class SlackStandIn:
    """Slack's side of Socket Mode, locally: ``apps.connections.open`` hands out a websocket that delivers
    ``envelope`` and keeps what the client sends back (its acks)."""

    def __init__(self, envelope: dict[str, Any]) -> None:
        self.envelope = envelope
        self.acks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.tokens: list[str] = []
        app = web.Application()
        app.router.add_post("/api/apps.connections.open", self._connections_open)
        app.router.add_get("/link", self._link)
        self.server = TestServer(app)

    @property
    def api_url(self) -> str:
        return str(self.server.make_url("/api/"))

    async def _connections_open(self, request: web.Request) -> web.Response:
        self.tokens.append(request.headers.get("Authorization", ""))
        return web.json_response({"ok": True, "url": f"ws://{request.host}/link"})

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": 1})
        await ws.send_json(self.envelope)
        async for message in ws:
            self.acks.put_nowait(json.loads(message.data))
        return ws


def envelope(payload: dict[str, Any], envelope_id: str) -> dict[str, Any]:
    return {"envelope_id": envelope_id, "type": "interactive", "accepts_response_payload": False, "payload": payload}


async def test_socket_mode_over_a_local_websocket(slack: Slack) -> None:
    """The SDK's real client against a stand-in for Slack: apps.connections.open, then the websocket."""
    client = await slack.front()
    workflow_id, plan_id = await slack.open_incident(client)
    stand_in = SlackStandIn(envelope(slack.payload(workflow_id, plan_id), "env-ws-1"))
    async with stand_in.server:
        socket_mode = SocketMode(
            "xapp-1-A0APP-0000-test", slack.interactions, api_url=stand_in.api_url, ping_interval=1
        )
        socket_mode.start()
        try:
            assert await asyncio.wait_for(stand_in.acks.get(), 10) == {"envelope_id": "env-ws-1"}
            assert (await slack.responses.next_text()).startswith(f"Approved plan {plan_id} of {workflow_id}")
        finally:
            await socket_mode.stop()
    assert stand_in.tokens == ["Bearer xapp-1-A0APP-0000-test"]
    assert (await state(client, workflow_id))["decision"]["by"] == ALLOWED
    await settled(client, workflow_id)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_starter_serve_runs_socket_mode_when_an_app_token_is_set(slack: Slack, task_queue: str) -> None:
    """``python starter.py serve`` with SLACK_APP_TOKEN (and no signing secret): clicks arrive over the websocket,
    the HTTP endpoint says it is not configured, and SIGTERM still stops the process promptly."""
    client = await slack.front()
    workflow_id, plan_id = await slack.open_incident(client)
    stand_in = SlackStandIn(envelope(slack.payload(workflow_id, plan_id), "env-serve-1"))
    port = _free_port()
    async with stand_in.server:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SLACK_")},
            "TEMPORAL_ADDRESS": slack.env.client.service_client.config.target_host,
            "TEMPORAL_TASK_QUEUE": task_queue,
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(port),
            "SLACK_APP_TOKEN": "xapp-1-A0APP-0000-serve",
            "SLACK_API_URL": stand_in.api_url,
            "LOG_FORMAT": "json",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "starter.py",
            "serve",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            assert await asyncio.wait_for(stand_in.acks.get(), 20) == {"envelope_id": "env-serve-1"}
            assert (await slack.responses.next_text()).startswith(f"Approved plan {plan_id} of {workflow_id}")
            url = f"http://127.0.0.1:{port}/slack/interactions"
            async with aiohttp.ClientSession() as session, session.post(url, data=b"payload=%7B%7D") as response:
                assert response.status == 503
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(process.communicate(), 15)
        assert process.returncode == 0, output.decode(errors="replace")[-2000:]
    assert stand_in.tokens == ["Bearer xapp-1-A0APP-0000-serve"]
    assert b"slack_socket_mode_starting" in output and b"frontdoor_stopping" in output
    await settled(client, workflow_id)


# ---- "Diagnosis correct?" -----------------------------------------------------------------------------------------


def feedback_payload(slack: Slack, workflow_id: str, action: str, *, cause: str | None = None, user: str = ALLOWED):
    """A click on the closed incident's feedback controls: a Yes/No button, or the select naming the real cause."""
    payload = slack.payload(workflow_id, None, action=action, user=user)
    control = payload["actions"][0]
    control["block_id"] = "feedback"
    if cause is None:
        control["value"] = json.dumps({"workflow_id": workflow_id})
    else:
        del control["value"], control["text"]
        control["type"] = "static_select"
        control["selected_option"] = {
            "text": {"type": "plain_text", "text": cause.replace("_", " ")},
            "value": json.dumps({"workflow_id": workflow_id, "cause": cause}),
        }
    return payload


async def test_a_signed_verdict_naming_the_cause_is_recorded_and_a_second_one_is_refused(slack: Slack) -> None:
    client = await slack.front()
    workflow_id, _ = await slack.open_incident(client)
    body = form(feedback_payload(slack, workflow_id, "feedback_cause", cause="oom_kill"))

    status, _, elapsed = await click(client, body, signed(body))
    assert status == 200 and elapsed < 3
    assert await slack.responses.next_text() == (
        f"Thank you: the diagnosis of {workflow_id} (bad_deploy) is recorded wrong; the cause was oom_kill."
    )
    recorded = (await state(client, workflow_id))["feedback"]
    assert (recorded["verdict"], recorded["cause"], recorded["by"], recorded["note"]) == (
        "wrong",
        "oom_kill",
        ALLOWED,
        "via Slack",
    )

    again = form(feedback_payload(slack, workflow_id, "feedback_correct"))
    assert (await click(client, again, signed(again)))[0] == 200
    assert await slack.responses.next_text() == (
        f"Your answer was not recorded: the diagnosis was already judged wrong by {ALLOWED}."
    )
    assert (await state(client, workflow_id))["feedback"]["verdict"] == "wrong"


async def test_a_verdict_from_someone_not_in_approvers_changes_nothing(slack: Slack) -> None:
    client = await slack.front()
    workflow_id, _ = await slack.open_incident(client)
    body = form(feedback_payload(slack, workflow_id, "feedback_wrong", user="U0STRANGER"))
    assert (await click(client, body, signed(body)))[0] == 200
    assert await slack.responses.next_text() == (
        f"You are not an allowed approver for {workflow_id} (APPROVERS); nothing was recorded."
    )
    assert (await state(client, workflow_id))["feedback"] is None


async def test_a_verdict_on_a_finished_incident_is_told_the_window_is_over(slack: Slack) -> None:
    client = await slack.front()
    workflow_id = incident_workflow_id(f"gone-{uuid.uuid4()}")
    body = form(feedback_payload(slack, workflow_id, "feedback_correct"))
    assert (await click(client, body, signed(body)))[0] == 200
    text = await slack.responses.next_text()
    assert text.startswith(f"The feedback window of {workflow_id} is over") and "nothing was recorded" in text


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (
            lambda c: c["selected_option"].update(value=json.dumps({"workflow_id": "incident-1", "cause": "gremlins"})),
            "not a taxonomy category",
        ),
        (lambda c: c.pop("selected_option"), "not JSON"),
        (lambda c: c["selected_option"].update(value=json.dumps({"cause": "oom_kill"})), "no workflow_id"),
    ],
)
def test_a_malformed_cause_selection_is_not_a_verdict(mutate: Callable[[dict], Any], why: str) -> None:
    harness = Slack(None, "q", ResponseUrl())  # type: ignore[arg-type]
    payload = feedback_payload(harness, "incident-1", "feedback_cause", cause="oom_kill")
    mutate(payload["actions"][0])
    problem = parse_click(payload)
    assert isinstance(problem, str) and why in problem


def test_yes_and_no_buttons_parse_to_verdicts_by_the_clicking_user() -> None:
    harness = Slack(None, "q", ResponseUrl())  # type: ignore[arg-type]
    yes = parse_click(feedback_payload(harness, "incident-1", "feedback_correct"))
    no = parse_click(feedback_payload(harness, "incident-1", "feedback_wrong", user="U0BOB"))
    assert isinstance(yes, FeedbackClick) and isinstance(no, FeedbackClick)
    assert yes.feedback() == Feedback(verdict="correct", by=ALLOWED, note="via Slack")
    assert no.feedback() == Feedback(verdict="wrong", by="U0BOB", note="via Slack")
