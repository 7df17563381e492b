"""Secrets never logged: the redacting processor in the real logging configuration, and ``starter.py serve`` end to end.

Each test configures logging into a stream of its own (``configure_logging(..., stream=, force=True)``) and puts the
process back as it was afterwards (``reset_logging``), so no test leaks its configuration into another.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

import aiohttp
import pytest
import structlog
from aiohttp import web
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from config.logging import configure_logging, reset_logging
from config.redaction import REDACTED, SecretRedactor, is_secret_key, secret_values
from config.settings import get_settings
from tests.conftest import load_payload
from tests.fixtures.http_stand_in import one_route_server

ROOT = Path(__file__).resolve().parent.parent

# One of each configured secret, shaped as the real ones are (and one that has no recognisable shape at all).
SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-2718281828-3141592653-QmFzZTY0c2VjcmV0",
    "SLACK_SIGNING_SECRET": "8f742231b10e8888abcd99yyyzzz85a5",
    "SLACK_APP_TOKEN": "xapp-1-A0SECRET-1618033988-c2VjcmV0YXBw",
    "WEBHOOK_TOKEN": "wh-Tok3n/with+symbols&=",
    "API_TOKEN": "op3rator-api-t0ken",
    "OPENAI_API_KEY": "sk-proj-Zm9vYmFyYmF6cXV4cXV1eA1234",
    "PAGERDUTY_ROUTING_KEY": "R0UTINGKEY0123456789abcdef012345",
}

SECRET_VALUES = tuple(SECRETS.values())
Capture = Callable[..., io.StringIO]


@pytest.fixture
def capture() -> Iterator[Capture]:
    """Configure the real logging into a fresh stream (JSON unless asked otherwise); reset afterwards."""

    def configure(*, secrets: Any = SECRET_VALUES, fmt: str = "json", level: str = "DEBUG") -> io.StringIO:
        stream = io.StringIO()
        configure_logging(level, fmt, secrets=secrets, stream=stream, force=True)  # type: ignore[arg-type]
        return stream

    yield configure
    reset_logging()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def spellings(secret: str) -> set[str]:
    """How a leaked secret could show up in a log: as is, URL-encoded, JSON-escaped."""
    return {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}


def assert_no_secret(text: str, secrets: Any = SECRET_VALUES) -> None:
    for secret in secrets:
        for spelling in spellings(secret):
            assert spelling not in text, f"{spelling!r} leaked:\n{text[:3000]}"


class Holder:
    """An object whose repr shows what it holds, as many client objects' do."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"Holder(token={self.token!r})"


# ---- the processor in the real configuration ----------------------------------------------------------------------


def test_configured_secrets_are_redacted_wherever_they_appear(capture: Capture) -> None:
    stream = capture()
    log = structlog.get_logger("test.redaction")
    bot, signing, app, webhook, api, openai, routing = SECRETS.values()
    log.info(f"posting with {bot} to slack", channel="C0INC")  # the event text itself
    log.info("nested", request={"headers": {"X-Custom": f"prefix {signing} suffix"}, "attempts": [1, webhook]})
    log.info("sequences", values=(api, "plain"), more=[[[{"deep": routing}]]])
    log.info("url", url=f"https://api.example/v1?key={quote_plus(webhook)}&x=1", raw=openai.encode())
    log.info("objects", client=Holder(app), error=ValueError(f"bad key {openai}"))
    log.info("json text", body=json.dumps({"token_in_text": webhook}))
    try:
        raise RuntimeError(f"PagerDuty refused routing key {routing}")
    except RuntimeError:
        log.exception("pagerduty_failed")
    # A library's log, rendered through the ProcessorFormatter (positional arguments and a traceback).
    library = logging.getLogger("slack_sdk.web.base_client")
    library.warning("Sending a request - token: %s, signing: %s", bot, signing)
    try:
        raise ConnectionError(f"handshake failed for {app}")
    except ConnectionError:
        library.exception("socket mode connect failed")

    text = stream.getvalue()
    assert_no_secret(text)
    events = lines(stream)
    assert [e["event"].split(" ")[0] for e in events] == [
        "posting",
        "nested",
        "sequences",
        "url",
        "objects",
        "json",
        "pagerduty_failed",
        "Sending",
        "socket",
    ]
    assert events[0]["event"] == f"posting with {REDACTED} to slack" and events[0]["channel"] == "C0INC"
    assert events[1]["request"] == {"headers": {"X-Custom": f"prefix {REDACTED} suffix"}, "attempts": [1, REDACTED]}
    assert events[2]["values"] == [REDACTED, "plain"]
    assert "RuntimeError: PagerDuty refused routing key [REDACTED]" in events[6]["exception"]
    assert "ConnectionError: handshake failed for [REDACTED]" in events[8]["exception"]
    assert events[7]["logger"] == "slack_sdk.web.base_client" and events[7]["level"] == "warning"


def test_values_of_keys_that_name_a_secret_are_redacted(capture: Capture) -> None:
    stream = capture(secrets=())  # no configured value: the key alone decides
    log = structlog.get_logger("test.redaction")
    log.info(
        "keys",
        token="t-1",
        password="hunter2",
        api_key="k-1",
        routing_key="r-1",
        signing_secret="s-1",
        headers={"Authorization": "Digest abc", "X-Api-Key": "k-2", "X-Slack-Signature": "v0=abc", "Accept": "*/*"},
        slackBotToken="t-2",
        credentials=["a", "b"],
        token_set=True,  # whether one is set is no secret
        client_secret=None,
        tokens_used=1234,  # a count, not a token
        dedup_key="incident-0123",
        group_key='{}:{alertname="X"}',
    )
    [event] = lines(stream)
    for key in ("token", "password", "api_key", "routing_key", "signing_secret", "slackBotToken", "credentials"):
        assert event[key] == REDACTED, key
    assert event["headers"] == {
        "Authorization": REDACTED,
        "X-Api-Key": REDACTED,
        "X-Slack-Signature": REDACTED,
        "Accept": "*/*",
    }
    assert event["token_set"] is True and event["client_secret"] is None
    assert event["tokens_used"] == 1234 and event["dedup_key"] == "incident-0123"
    assert event["group_key"] == '{}:{alertname="X"}'


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_well_known_token_shapes_are_redacted_without_configuration(capture: Capture, fmt: str) -> None:
    stream = capture(secrets=(), fmt=fmt)
    shaped = [
        "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy",
        "xoxp-4956821238-4956821239-4944587312-8f2c1a",
        "xapp-1-A0123456789-1234567890123-0123456789abcdef",
        "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
        "hunter2-password",
        "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    ]
    log = structlog.get_logger("test.redaction")
    log.info(f"calling with {shaped[0]}", user_token=None, detail=f"user {shaped[1]} and app {shaped[2]}")
    log.info("llm", note=f"key={shaped[3]}")
    log.info("http", header=f"Authorization: Bearer {shaped[4]}", basic="Basic YWxpY2U6aHVudGVyMi1wYXNzd29yZA==")
    log.info("proxy", url=f"https://alice:{shaped[5]}@proxy.example:3128/")
    log.info("slack hook", url=f"https://hooks.slack.com/services/{shaped[6]}")
    text = stream.getvalue()
    assert_no_secret(text, [*shaped, "YWxpY2U6aHVudGVyMi1wYXNzd29yZA=="])
    for kept in ("Bearer [REDACTED]", "Basic [REDACTED]", "https://alice:[REDACTED]@proxy.example", "hooks.slack.com/"):
        assert kept in text, kept


def test_ordinary_text_is_left_alone(capture: Capture) -> None:
    stream = capture()
    log = structlog.get_logger("test.redaction")
    ordinary = {
        "reason": "missing or wrong bearer token",
        "category": "disk_pressure",
        "note": "risk-assessment of task-queue sk-1 on disk-pressure nodes",
        "url": "http://prometheus:9090/api/v1/query?query=up",
        "where": "https://user@host.example/path",
    }
    log.info("ordinary text", **ordinary)
    [event] = lines(stream)
    assert {key: event[key] for key in ordinary} == ordinary


def test_a_secret_too_short_to_search_for_is_still_redacted_by_its_key(capture: Capture) -> None:
    stream = capture(secrets=("abc",))
    structlog.get_logger("test").info("the abc of it", webhook_token="abc")
    [event] = lines(stream)
    assert event["event"] == "the abc of it" and event["webhook_token"] == REDACTED


def test_the_secrets_come_from_settings_when_not_given(capture: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Callers that pass only a level and a format (worker.py, starter.py) get every secret of their Settings."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        assert set(secret_values(get_settings())) == set(SECRETS.values())
        stream = io.StringIO()
        configure_logging("INFO", "json", stream=stream, force=True)
        structlog.get_logger("test").info("startup", summary=" ".join(SECRETS.values()))
    finally:
        get_settings.cache_clear()
    assert_no_secret(stream.getvalue())
    assert lines(stream)[0]["summary"] == " ".join([REDACTED] * len(SECRETS))


def test_reset_puts_the_process_back_as_it_was(capture: Capture) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = capture()
    assert root.handlers != handlers and structlog.is_configured()
    structlog.get_logger("test").info("while configured")
    reset_logging()
    assert root.handlers == handlers and root.level == level and not structlog.is_configured()
    # Configured once per process: a second call without force changes nothing.
    configure_logging("INFO", "json", secrets=(), stream=io.StringIO())
    configured = list(root.handlers)
    configure_logging("DEBUG", "console", secrets=(), stream=io.StringIO())
    assert root.handlers == configured and root.level == logging.INFO
    assert len(lines(stream)) == 1


def test_the_processor_alone() -> None:
    redact = SecretRedactor([SecretStr("s3cr3t-value"), None, "  "])
    event = {"event": "x s3cr3t-value", "_record": object(), "exc_info": True, "n": 5, "ok": False}
    out = redact(None, "info", dict(event))
    assert out["event"] == f"x {REDACTED}" and out["_record"] is event["_record"] and out["exc_info"] is True
    assert out["n"] == 5 and out["ok"] is False
    assert is_secret_key("PAGERDUTY_ROUTING_KEY") and is_secret_key("x-api-key") and is_secret_key("signingSecret")
    assert not is_secret_key("max_tokens") and not is_secret_key("dedup_key") and not is_secret_key("author")
    # A structure deeper than any log event has: redacted as text past the depth limit, never a RecursionError.
    deep: Any = "s3cr3t-value"
    for _ in range(5_000):
        deep = [deep]
    assert "s3cr3t-value" not in json.dumps(redact(None, "info", {"event": "deep", "v": deep}), default=str)


# ---- end to end: starter.py serve with WEBHOOK_TOKEN, SLACK_SIGNING_SECRET and friends ----------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _signed(body: bytes, secret: str) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }


async def test_starter_serve_never_logs_its_secrets(
    dev_server: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """The front door as deployed, at DEBUG: right and wrong tokens and signatures, a payload and a Slack user that
    carry the secrets themselves (so the events that log them are put to the test), and Socket Mode refused by a
    stand-in Slack API (so the Slack SDK's own logs are too). The events are logged; the secrets are not."""
    secrets = dict(SECRETS)
    refused: list[str] = []

    async def connections_open(request: web.Request) -> web.Response:
        refused.append(request.headers.get("Authorization", ""))
        return web.json_response({"ok": False, "error": "invalid_auth"})

    port = _free_port()
    log_file = tmp_path / "serve.log"
    async with one_route_server("/api/apps.connections.open", connections_open) as slack_api:
        env = {
            **{key: value for key, value in os.environ.items() if key not in SECRETS and not key.startswith("SLACK_")},
            **secrets,
            "SLACK_API_URL": f"{slack_api}/api/",
            "TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
            "TEMPORAL_TASK_QUEUE": task_queue,
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(port),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "DEBUG",
        }
        with log_file.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "starter.py", "serve", cwd=ROOT, env=env, stdout=sink, stderr=sink
            )
            try:
                statuses = await _exercise(f"http://127.0.0.1:{port}", secrets)
                deadline = time.monotonic() + 20
                while not refused and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
            finally:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 20)
    assert statuses == {
        "webhook, no token": 401,
        "webhook, wrong token": 401,
        "webhook, right token": 202,
        "slack, wrong signature": 401,
        "slack, right signature": 200,
        "decision, wrong api token": 401,
        "decision, right api token": 404,
    }
    assert refused == [f"Bearer {secrets['SLACK_APP_TOKEN']}"], refused  # the app token did go out, to Slack only
    text = log_file.read_text(errors="replace")
    assert_no_secret(text, secrets.values())
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    names = {event["event"] for event in events}
    for name in ("frontdoor_started", "alert_notification", "slack_signature_refused", "slack_click"):
        assert name in names, sorted(names)
    [notification] = [event for event in events if event["event"] == "alert_notification"]
    assert REDACTED in notification["group_key"]  # it carried the webhook token: still logged, redacted
    [clicked] = [event for event in events if event["event"] == "slack_click"]
    assert clicked["user_name"] == f"on-call {REDACTED}"
    assert any(event.get("logger", "").startswith("slack_sdk") for event in events), "no Slack SDK log at DEBUG"


async def _exercise(base: str, secrets: dict[str, str]) -> dict[str, int]:
    """The requests, once the front door answers; their statuses."""
    webhook, signing, api = secrets["WEBHOOK_TOKEN"], secrets["SLACK_SIGNING_SECRET"], secrets["API_TOKEN"]
    payload = load_payload("alertmanager_firing.json")
    payload["groupKey"] = f'{{}}:{{alertname="HighErrorRate", leaked="{webhook}"}}'
    click = {
        "type": "block_actions",
        "user": {"id": "U0ALLOWED", "username": f"on-call {signing}"},
        "actions": [{"action_id": "approve", "value": json.dumps({"workflow_id": "not-an-incident"})}],
    }
    slack_body = urlencode({"payload": json.dumps(click)}).encode()
    statuses: dict[str, int] = {}
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 30
        while True:
            try:
                async with session.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("webhook, no token", "/alerts/alertmanager", {"json": payload}),
            ("webhook, wrong token", "/alerts/alertmanager", {"json": payload, "headers": _bearer(webhook[::-1])}),
            ("webhook, right token", "/alerts/alertmanager", {"json": payload, "headers": _bearer(webhook)}),
            (
                "slack, wrong signature",
                "/slack/interactions",
                {"data": slack_body, "headers": _signed(slack_body, signing[::-1])},
            ),
            (
                "slack, right signature",
                "/slack/interactions",
                {"data": slack_body, "headers": _signed(slack_body, signing)},
            ),
            (
                "decision, wrong api token",
                "/incidents/incident-0000000000000000/decision",
                {"json": {"approve": True, "by": "alice"}, "headers": _bearer(api[::-1])},
            ),
            (
                "decision, right api token",
                "/incidents/incident-0000000000000000/decision",
                {"json": {"approve": True, "by": "alice"}, "headers": _bearer(api)},
            ),
        ]
        for what, path, arguments in requests:
            async with session.post(f"{base}{path}", **arguments) as response:
                statuses[what] = response.status
    return statuses


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
