"""Fuzzing the front door: the Alertmanager webhook and Slack interactivity, with Hypothesis.

Properties, whatever arrives:

- never a 5xx (the 503 of "Temporal unreachable" included: the near-valid payloads go to a real dev server with a
  worker on the task queue);
- every refusal is a 4xx whose JSON ``error`` names the field (or header) that is wrong;
- invalid input starts no workflow and delivers no update: the deliveries a recording Temporal client was asked to
  make are counted, and the real server's workflows on the test's own task queue are listed;
- accepted input does not crash the workflow it starts (its first workflow task completes).

Input: arbitrary bytes, arbitrary JSON, valid payloads with one field mutated (removed, of the wrong type, huge,
odd Unicode, nested deeply, an odd timestamp, an unknown key), raw header bytes, and correctly signed Slack form
bodies carrying arbitrary payloads or near-valid clicks. The bugs the fuzzing found have a regression test each at
the end of the file.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from frontdoor.app import MAX_BODY_BYTES, create_app
from frontdoor.gateway import IncidentGateway, IncidentNotFound
from frontdoor.slack import SLACK_INTERACTIONS, SlackInteractions
from models.alertmanager import AlertmanagerWebhook
from models.incident import Decision, DecisionResult, Feedback, FeedbackRecord, IncidentSettings, IncidentState
from tests.conftest import load_payload
from tests.fixtures.http_stand_in import one_route_server
from tests.harness import FakePrometheus, RecordingNotifier, governor_id, incident_worker
from triage.identity import incident_workflow_id

WEBHOOK = "/alerts/alertmanager"
SLACK = "/slack/interactions"
SIGNING_SECRET = "f00dfacecafe5ecretf00dfacecafe5e"
WEBHOOK_TOKEN = "webhook-t0ken"
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,  # a fixed budget per run, not replays of old failures from a local database
)


# FUZZ_SCALE=10 makes every fuzz test try ten times as many examples (a deeper local run; the default keeps the file
# under half a minute).
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=max(1, int(examples * SCALE)))


PAYLOAD_FIELDS = {
    "body",
    "version",
    "status",
    "receiver",
    "groupKey",
    "truncatedAlerts",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "alerts",
}


# ---- what goes in -------------------------------------------------------------------------------------------------


def base_payload() -> dict[str, Any]:
    """A valid notification with two alerts (so that alerts are compared with each other), a group of its own."""
    payload = copy.deepcopy(load_payload("alertmanager_firing.json"))
    second = copy.deepcopy(payload["alerts"][0])
    second["labels"]["pod"] = "search-7c9d8b6f5d-x7k2p"
    second["fingerprint"] = "7d1e0c2b3a4f5e6d"
    payload["alerts"].append(second)
    payload["groupKey"] = f'{{}}:{{alertname="HighErrorRate", fuzz="{uuid.uuid4().hex}"}}'
    return payload


Path = tuple[str | int, ...]


def value_paths(node: Any, prefix: Path = ()) -> list[Path]:
    """Every place in a JSON document that holds a value, parents before children."""
    paths: list[Path] = []
    items: list[tuple[str | int, Any]] = []
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    for key, child in items:
        paths.append((*prefix, key))
        paths += value_paths(child, (*prefix, key))
    return paths


def container_paths(node: Any, prefix: Path = ()) -> list[Path]:
    """Every object in a JSON document (where an unknown key can be added), the root included."""
    found: list[Path] = [prefix] if isinstance(node, dict) else []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in children:
        found += container_paths(child, (*prefix, key))
    return found


def dotted(path: Path) -> str:
    return ".".join(str(part) for part in path)


def parent_of(document: Any, path: Path) -> Any:
    for part in path[:-1]:
        document = document[part]
    return document


BASE = base_payload()
PAYLOAD_PATHS = value_paths(BASE)
PAYLOAD_CONTAINERS = container_paths(BASE)
LABEL_PATHS = [p for p in PAYLOAD_PATHS if len(p) == 4 and p[2] in ("labels", "annotations")]
TIME_PATHS = [p for p in PAYLOAD_PATHS if p[-1] in ("startsAt", "endsAt")]
# Every value may be made huge: label values become keyword search attributes, cut to Temporal's 2 KiB limit.
HUGE_OK_PATHS = PAYLOAD_PATHS

# Any character at all, lone surrogates (valid JSON: "\ud800") included.
any_char = st.characters(exclude_categories=()) | st.characters(categories=["Cs"])
any_text = st.text(any_char, max_size=40)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | any_text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=12,
)
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda minutes: timezone(timedelta(minutes=minutes)))
timestamps = st.one_of(
    st.datetimes(timezones=st.none() | st.just(UTC) | offsets).map(lambda at: at.isoformat()),
    st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-05:00",
            "1969-12-31T23:59:59Z",
            "2025-13-01T00:00:00Z",
            "2025-06-03",
            "yesterday",
            "",
        ]
    ),
    st.integers(),
    st.floats(),
)


def deep(depth: int, leaf: Any, kind: str) -> Any:
    """``leaf`` nested ``depth`` times. A few hundred levels at most: deeper Python objects break the test's own tools
    (deepcopy, json.dumps, Hypothesis' printer); deeper JSON is sent as text by the regression tests below."""
    for _ in range(depth):
        leaf = [leaf] if kind == "list" else {"k": leaf}
    return leaf


REMOVE = object()


@dataclass(frozen=True)
class Mutation:
    """One change to a valid document; ``path`` is where (the object, for ``extra``)."""

    kind: str
    path: Path
    value: Any = None
    key: str = ""

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        changed = copy.deepcopy(document)
        if self.kind == "inner":
            # A field inside a string that holds JSON (a Slack control's value): (key, new value or REMOVE).
            parent = parent_of(changed, self.path)
            inner = json.loads(parent[self.path[-1]])
            key, new = self.value
            if new is REMOVE:
                inner.pop(key, None)
            else:
                inner[key] = new
            parent[self.path[-1]] = json.dumps(inner)
            return changed
        if self.kind == "extra":
            target: Any = changed
            for part in self.path:
                target = target[part]
            target[self.key] = self.value
            return changed
        parent = parent_of(changed, self.path)
        if self.kind == "remove":
            del parent[self.path[-1]]
        else:
            parent[self.path[-1]] = self.value
        return changed

    def __repr__(self) -> str:  # keeps Hypothesis' report of a huge value readable
        shown = repr(self.value)
        shown = shown if len(shown) < 200 else f"{shown[:80]}... ({len(shown)} chars)"
        return f"Mutation({self.kind}, {dotted(self.path)!r}, key={self.key!r}, value={shown})"


def mutations(
    paths: Sequence[Path], containers: Sequence[Path], huge_paths: Sequence[Path], times: Sequence[Path]
) -> st.SearchStrategy[Mutation]:
    where = st.sampled_from(list(paths))
    huge = st.sampled_from([3_000, 100_000, MAX_BODY_BYTES + 1]).flatmap(
        lambda size: st.sampled_from(["x" * size, "é" * size, "\u2603" * (size // 3)])
    )
    kinds = [
        st.builds(Mutation, st.just("remove"), where),
        st.builds(Mutation, st.just("replace"), where, json_values),
        st.builds(Mutation, st.just("unicode"), where, any_text),
        st.builds(
            Mutation,
            st.just("deep"),
            where,
            st.builds(deep, st.integers(20, 300), json_values, st.sampled_from(["list", "dict"])),
        ),
        st.builds(Mutation, st.just("extra"), st.sampled_from(list(containers)), json_values, key=any_text),
    ]
    if huge_paths:
        kinds.append(st.builds(Mutation, st.just("huge"), st.sampled_from(list(huge_paths)), huge))
    if times:
        kinds.append(st.builds(Mutation, st.just("timestamp"), st.sampled_from(list(times)), timestamps))
    return st.one_of(kinds)


def has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    return False


def encode(document: Any) -> bytes:
    # Python's JSON writes a lone surrogate as "\udXXX", exactly as a hostile sender would.
    return json.dumps(document).encode()


# ---- a Temporal client that records instead of calling a server --------------------------------------------------


class RecordingClient:
    """Stands in for temporalio's Client where no server is needed: the gateway's own code still runs (preview,
    search attributes, summary), and each start or signal is recorded once its arguments went through the real data
    converter, as a real client's would."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, str]] = []
        self.namespace = "default"

    async def start_workflow(
        self, workflow: Any, arg: Any, *, id: str, start_signal_args: Sequence[Any] = (), **_: Any
    ):
        await pydantic_data_converter.encode([arg, *start_signal_args])
        self.deliveries.append(("start", id))
        return SimpleNamespace(_start_workflow_response=SimpleNamespace(started=True))

    def get_workflow_handle(self, workflow_id: str) -> Any:
        client = self

        class Handle:
            async def signal(self, name: str, arg: Any, **_: Any) -> None:
                await pydantic_data_converter.encode([arg])
                client.deliveries.append(("signal", workflow_id))

        return Handle()


class RecordingGateway(IncidentGateway):
    """A gateway on a RecordingClient (deliveries are recorded there) that records each update it is asked to
    deliver and knows no incident."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(cast(Client, RecordingClient()), settings, IncidentSettings())
        self.updates: list[tuple[str, str, Decision | Feedback]] = []

    async def decide(self, workflow_id: str, decision: Decision) -> DecisionResult:
        self.updates.append(("decide", workflow_id, decision))
        raise IncidentNotFound(workflow_id)

    async def feedback(self, workflow_id: str, feedback: Feedback) -> FeedbackRecord:
        self.updates.append(("feedback", workflow_id, feedback))
        raise IncidentNotFound(workflow_id)

    async def state(self, workflow_id: str) -> IncidentState:
        raise IncidentNotFound(workflow_id)


@dataclass
class Recorded:
    client: TestClient
    gateway: RecordingGateway
    response_url: str

    @property
    def temporal(self) -> RecordingClient:
        return cast(RecordingClient, self.gateway.client)

    @property
    def interactions(self) -> SlackInteractions:
        app = self.client.app
        assert app is not None
        return app[SLACK_INTERACTIONS]


@pytest_asyncio.fixture(scope="module")
async def recorded() -> AsyncIterator[Recorded]:
    """The front door on a recording client (webhook, with a token) and gateway (Slack, signed), no server."""
    settings = Settings(
        _env_file=None,
        webhook_token=SecretStr(WEBHOOK_TOKEN),
        slack_signing_secret=SecretStr(SIGNING_SECRET),
    )
    gateway = RecordingGateway(settings)

    async def respond(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    async with one_route_server("/respond", respond) as base:
        client = TestClient(TestServer(create_app(gateway, settings)))
        await client.start_server()
        yield Recorded(client, gateway, f"{base}/respond")
        await client.close()


AUTH = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}


async def post(client: TestClient, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, Any]:
    response = await client.post(path, data=body, headers=headers)
    text = await response.text()
    try:
        parsed = json.loads(text) if text else None
    except json.JSONDecodeError:
        parsed = None
    return response.status, text, parsed


def assert_refusal(status: int, text: str, body: Any) -> str:
    """A 4xx with a one-line JSON ``error``; the error."""
    assert 400 <= status < 500, (status, text[:500])
    assert isinstance(body, dict) and isinstance(body.get("error"), str), text[:500]
    # One line as sent (a newline inside a field name that echoes the sender's own key is test_error_names_*'s).
    assert "\n" not in text
    return str(body["error"])


def assert_names_a_field(error: str) -> None:
    if error.startswith("invalid Alertmanager payload: "):
        first = error.removeprefix("invalid Alertmanager payload: ").split(":", 1)[0]
        assert first.split(".", 1)[0] in PAYLOAD_FIELDS, error
    else:
        assert error.startswith("malformed JSON") or "limit" in error, error


# ---- the webhook: bytes, JSON, near-valid payloads (recording client) ---------------------------------------------


@fuzz(60)
@given(body=st.binary(max_size=512) | st.text(any_char, max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
async def test_webhook_arbitrary_bytes_are_refused_with_a_4xx(recorded: Recorded, body: bytes) -> None:
    before = len(recorded.temporal.deliveries)
    status, text, parsed = await post(recorded.client, WEBHOOK, body, AUTH)
    assert_names_a_field(assert_refusal(status, text, parsed))
    assert len(recorded.temporal.deliveries) == before


@fuzz(60)
@given(document=json_values)
async def test_webhook_arbitrary_json_is_refused_naming_a_field(recorded: Recorded, document: Any) -> None:
    before = len(recorded.temporal.deliveries)
    status, text, parsed = await post(recorded.client, WEBHOOK, encode(document), AUTH)
    assert status == 400, text[:500]
    assert_names_a_field(assert_refusal(status, text, parsed))
    assert len(recorded.temporal.deliveries) == before


def check_mutation_outcome(mutation: Mutation, status: int, text: str, parsed: Any) -> None:
    """The answer to one mutated payload: 202, or a refusal naming the mutated field."""
    assert status < 500, (status, text[:500])
    object_level = mutation.path == () or (mutation.path[0] == "alerts" and len(mutation.path) == 2)
    if mutation.kind == "extra" and object_level and mutation.key not in parent_of(BASE, (*mutation.path, "")):
        # Unknown keys of the notification or of an alert are ignored (label and annotation maps hold strings only).
        assert status == 202, text[:500]
    if mutation.kind == "unicode" and mutation.path in LABEL_PATHS:
        # Any text is a label value; text with a lone surrogate is no text.
        assert status == (400 if has_surrogate(mutation.value) else 202), text[:500]
    if status == 202:
        return
    error = assert_refusal(status, text, parsed)
    if status == 413:
        assert "limit" in error
        return
    assert status == 400 and error.startswith("invalid Alertmanager payload: "), error
    # The error names the field: the mutated path, or its ancestor the schema stops at.
    named = dotted(mutation.path[: min(len(mutation.path), 3)]) if mutation.path else "body"
    assert named in error, (named, error)


@fuzz(150)
@given(mutation=mutations(PAYLOAD_PATHS, PAYLOAD_CONTAINERS, PAYLOAD_PATHS, TIME_PATHS))
async def test_webhook_near_valid_payloads_are_accepted_or_refused_naming_the_field(
    recorded: Recorded, mutation: Mutation
) -> None:
    payload = mutation.apply(base_payload())
    before = len(recorded.temporal.deliveries)
    status, text, parsed = await post(recorded.client, WEBHOOK, encode(payload), AUTH)
    check_mutation_outcome(mutation, status, text, parsed)
    delivered = recorded.temporal.deliveries[before:]
    if status == 202:
        # One delivery, to the incident the answer names.
        [(_, workflow_id)] = delivered
        assert parsed["incidents"][0]["workflow_id"] == workflow_id
    else:
        assert delivered == []


header_bytes = st.binary(max_size=80).map(
    # What an HTTP header value may carry at all (no CR, LF or NUL), non-UTF-8 bytes included.
    lambda raw: bytes(b for b in raw if b in (9,) or 32 <= b <= 126 or b >= 128)
)


async def raw_post(client: TestClient, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
    """A request written byte by byte: header values no HTTP client library would send."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    head = b"POST %s HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\nContent-Length: %d\r\n" % (path.encode(), len(body))
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    writer.write(head + b"\r\n" + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), rest.partition(b"\r\n\r\n")[2]


@fuzz(40)
@given(value=header_bytes, scheme=st.sampled_from([b"Bearer ", b"bearer ", b"", b"Basic "]))
async def test_webhook_authorization_header_bytes_are_401(recorded: Recorded, value: bytes, scheme: bytes) -> None:
    before = len(recorded.temporal.deliveries)
    assert value.strip() != WEBHOOK_TOKEN.encode()
    status, body = await raw_post(recorded.client, WEBHOOK, [(b"Authorization", scheme + value)], encode(BASE))
    assert status == 401, body[:300]
    assert "bearer token" in json.loads(body)["error"]
    assert len(recorded.temporal.deliveries) == before


# ---- the webhook against a real dev server, with a worker -------------------------------------------------------


@dataclass
class RealFront:
    client: TestClient
    env: WorkflowEnvironment
    task_queue: str
    accepted: set[str] = field(default_factory=set)


@pytest_asyncio.fixture(scope="module")
async def real_front(dev_server: WorkflowEnvironment) -> AsyncIterator[RealFront]:
    task_queue = f"fuzz-{uuid.uuid4().hex[:10]}"
    prometheus = FakePrometheus()
    prometheus.series = []
    async with incident_worker(dev_server.client, task_queue, prometheus, RecordingNotifier()):
        settings_ = Settings(
            _env_file=None,
            temporal_address=dev_server.client.service_client.config.target_host,
            temporal_task_queue=task_queue,
        )
        gateway = IncidentGateway(dev_server.client, settings_, IncidentSettings())
        client = TestClient(TestServer(create_app(gateway, settings_)))
        await client.start_server()
        yield RealFront(client, dev_server, task_queue)
        await client.close()


async def workflows_on(front: RealFront) -> set[str]:
    query = f'TaskQueue = "{front.task_queue}"'
    found = {execution.id async for execution in front.env.client.list_workflows(query)}
    return found - {governor_id(front.task_queue)}


async def started(env: WorkflowEnvironment, workflow_id: str) -> bool:
    try:
        await env.client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        assert err.status == RPCStatusCode.NOT_FOUND
        return False
    return True


async def first_task_outcome(env: WorkflowEnvironment, workflow_id: str, timeout_s: float = 20) -> EventType.ValueType:
    """WORKFLOW_TASK_COMPLETED or WORKFLOW_TASK_FAILED, whichever the run's history shows first."""
    handle = env.client.get_workflow_handle(workflow_id)
    wanted = (EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        history = await handle.fetch_history()
        outcomes = [event.event_type for event in history.events if event.event_type in wanted]
        if outcomes:
            return outcomes[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{workflow_id}: no workflow task finished in {timeout_s}s")


@fuzz(60)
@given(mutation=mutations(PAYLOAD_PATHS, PAYLOAD_CONTAINERS, HUGE_OK_PATHS, TIME_PATHS))
async def test_near_valid_payloads_against_a_real_server(real_front: RealFront, mutation: Mutation) -> None:
    original = base_payload()
    payload = mutation.apply(original)
    status, text, parsed = await post(real_front.client, WEBHOOK, encode(payload), {})
    check_mutation_outcome(mutation, status, text, parsed)
    if status == 202:
        workflow_id = parsed["incidents"][0]["workflow_id"]
        real_front.accepted.add(workflow_id)
        # Accepted input must not crash the incident it opens.
        outcome = await first_task_outcome(real_front.env, workflow_id)
        assert outcome == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, f"{workflow_id} failed its first task"
    else:
        assert not await started(real_front.env, incident_workflow_id(original["groupKey"]))
    # Cumulatively: every workflow on the test's own queue was answered 202 (visibility may lag one example).
    assert await workflows_on(real_front) <= real_front.accepted


async def test_only_accepted_payloads_started_workflows(real_front: RealFront) -> None:
    """After the fuzzing above (in file order; alone, both sets are empty): visibility settled, the same check."""
    await asyncio.sleep(1)
    assert await workflows_on(real_front) == real_front.accepted


# ---- Slack: signed form bodies with arbitrary payloads, near-valid clicks, header bytes --------------------------


def signed(body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """Slack's v0 signature, computed here independently of the SDK the front door verifies with."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(SIGNING_SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }


def form(payload: Any) -> bytes:
    """A form body whose ``payload`` field is ``payload`` as JSON, or as is when it is text (any text: a lone
    surrogate goes as the bytes it would be, invalid UTF-8)."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return urlencode({"payload": text.encode("utf-8", "surrogatepass")}).encode()


async def settle(recorded: Recorded) -> None:
    """Wait for the clicks in flight; none may have failed (a failure is logged and lost, never reported)."""
    pending = recorded.interactions.pending
    if pending:
        done, late = await asyncio.wait(pending, timeout=15)
        assert not late, "a click is still being handled after 15 s"
        for task in done:
            assert task.exception() is None, repr(task.exception())


async def slack_post(recorded: Recorded, body: bytes, headers: dict[str, str]) -> tuple[int, str, bool]:
    """The answer's status and text, and whether an update was delivered."""
    before = len(recorded.gateway.updates)
    status, text, parsed = await post(recorded.client, SLACK, body, headers)
    assert status < 500, (status, text[:500])
    if status != 200:
        assert_refusal(status, text, parsed)
    await settle(recorded)
    return status, text, len(recorded.gateway.updates) > before


@fuzz(50)
@given(body=st.binary(max_size=400))
async def test_slack_signed_arbitrary_bytes_are_acked_and_deliver_nothing(recorded: Recorded, body: bytes) -> None:
    status, text, delivered = await slack_post(recorded, body, signed(body))
    assert not delivered
    try:
        body.decode()
    except UnicodeDecodeError:
        # Slack's bodies are UTF-8; the signature verifier judges text, so it refuses other bytes.
        assert status == 401 and "X-Slack-Signature" in json.loads(text)["error"]
    else:
        assert (status, text) == (200, "")


@fuzz(50)
@given(payload=json_values | any_text)
async def test_slack_signed_arbitrary_payloads_are_acked_and_deliver_nothing(recorded: Recorded, payload: Any) -> None:
    body = form(payload)
    assert await slack_post(recorded, body, signed(body)) == (200, "", False)


def click(action_id: str, response_url: str) -> dict[str, Any]:
    """A ``block_actions`` payload as Slack sends it for a click on one of the incident message's controls."""
    workflow_id = incident_workflow_id("fuzz")
    value: dict[str, Any] = {"workflow_id": workflow_id}
    action: dict[str, Any] = {"action_id": action_id, "block_id": "b", "type": "button", "action_ts": "1.2"}
    if action_id in ("approve", "reject"):
        value["plan_id"] = "plan-1"
    if action_id == "feedback_cause":
        value["cause"] = "oom_kill"
        action.update(type="static_select", selected_option={"value": json.dumps(value), "text": {"text": "oom"}})
    else:
        action["value"] = json.dumps(value)
    return {
        "type": "block_actions",
        "user": {"id": "U0ALLOWED", "username": "alice", "name": "alice", "team_id": "T0TEAM"},
        "api_app_id": "A0APP",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": "1767225600.000100", "channel_id": "C0INC"},
        "trigger_id": "1234.5678.abcdef",
        "team": {"id": "T0TEAM", "domain": "example"},
        "channel": {"id": "C0INC", "name": "incidents"},
        "message": {"type": "message", "ts": "1767225600.000100", "text": "HighErrorRate on food/search"},
        "response_url": response_url,
        "actions": [action],
    }


CLICKS = ["approve", "reject", "feedback_correct", "feedback_wrong", "feedback_cause"]
CLICK_PATHS = sorted({p for a in CLICKS for p in value_paths(click(a, "http://x/"))}, key=dotted)
CLICK_CONTAINERS = sorted({p for a in CLICKS for p in container_paths(click(a, "http://x/"))}, key=dotted)
# Fields the agent never reads: whatever happens to them, the click is still delivered.
IGNORED = {"api_app_id", "token", "container", "trigger_id", "team", "channel", "message"}
# Without these there is no click to deliver.
ESSENTIAL = {("type",), ("actions",), ("actions", 0), ("actions", 0, "action_id"), ("user",), ("user", "id")}
# What the agent reads; mutated more often than the rest.
READ_PATHS = [p for p in CLICK_PATHS if p[0] not in IGNORED]
# A response_url the agent will try to post to: only loopback (a closed port) or no host at all, never the network.
response_urls = st.sampled_from(["http://127.0.0.1:1/", "http://[", "http://127.0.0.1:1/\udcff"]).flatmap(
    lambda prefix: any_text.map(lambda tail: prefix + tail)
)
# Text for a control's value, which Slack sends as a JSON string: JSON, nested deeper than any parser allows, an
# integer longer than Python converts, or no JSON at all.
json_texts = st.one_of(
    json_values.map(json.dumps),
    st.integers(1, 50_000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(4_000, 6_000).map(lambda digits: "1" * digits),
    any_text,
)
CONTROL = ("control",)  # the control's value: actions.0.value, or the chosen option's for the cause menu
click_mutations = st.one_of(
    mutations(READ_PATHS, CLICK_CONTAINERS, [], []),
    mutations(CLICK_PATHS, CLICK_CONTAINERS, [], []),
    st.builds(Mutation, st.just("url"), st.just(("response_url",)), response_urls),
    st.builds(Mutation, st.just("replace"), st.just(CONTROL), json_texts),
    st.builds(
        Mutation,
        st.just("inner"),
        st.just(CONTROL),
        st.tuples(
            st.sampled_from(["workflow_id", "plan_id", "cause"]),
            st.just(REMOVE) | json_values | st.sampled_from(["", " ", "oom_kill", "unknown", "OOM_KILL", "incident-"]),
        ),
    ),
)


def control_path(action: str) -> Path:
    return ("actions", 0, "selected_option", "value") if action == "feedback_cause" else ("actions", 0, "value")


@fuzz(150)
@given(action=st.sampled_from(CLICKS), mutation=click_mutations)
async def test_slack_signed_near_valid_clicks(recorded: Recorded, action: str, mutation: Mutation) -> None:
    original = click(action, recorded.response_url)
    if mutation.path == CONTROL:
        mutation = dataclasses.replace(mutation, path=control_path(action))
    try:
        payload = mutation.apply(original)
    except (KeyError, IndexError, TypeError):
        reject()  # the path exists only in another control's payload
    body = form(payload)
    status, text, delivered = await slack_post(recorded, body, signed(body))
    assert (status, text) == (200, "")
    if mutation.path and mutation.path[0] in IGNORED:
        assert delivered, mutation
    if mutation.kind == "remove" and mutation.path in ESSENTIAL:
        assert not delivered, mutation
    if delivered:
        # What was delivered is well-formed: an incident id and a Slack user, as the models require.
        kind, workflow_id, update = recorded.gateway.updates[-1]
        assert kind == ("decide" if action in ("approve", "reject") else "feedback")
        assert isinstance(workflow_id, str) and workflow_id and not has_surrogate(workflow_id)
        assert update.by and not has_surrogate(update.by)
        type(update).model_validate(update.model_dump())


NOW = b"<now>"  # replaced by the current Unix time when the request is made: a timestamp that passes the skew check


@fuzz(60)
@given(
    timestamp=st.one_of(
        header_bytes,
        st.just(NOW),
        st.text("0123456789", min_size=1, max_size=500).map(str.encode),
        st.integers().map(lambda n: str(n).encode()),
    ),
    signature=header_bytes | header_bytes.map(lambda raw: b"v0=" + raw),
)
async def test_slack_header_bytes_are_401_naming_the_header(
    recorded: Recorded, timestamp: bytes, signature: bytes
) -> None:
    timestamp = str(int(time.time())).encode() if timestamp == NOW else timestamp
    body = form(click("approve", recorded.response_url))
    headers = [(b"Content-Type", b"application/x-www-form-urlencoded")]
    headers += [(b"X-Slack-Request-Timestamp", timestamp)] if timestamp.strip() else []
    headers += [(b"X-Slack-Signature", signature)] if signature.strip() else []
    before = len(recorded.gateway.updates)
    status, answer = await raw_post(recorded.client, SLACK, headers, body)
    assert status == 401, answer[:300]
    assert "X-Slack-" in json.loads(answer)["error"]
    assert len(recorded.gateway.updates) == before


# ---- regressions: each bug the fuzzing found ---------------------------------------------------------------------


async def test_a_lone_surrogate_is_refused_naming_the_field(recorded: Recorded) -> None:
    """Was a 500: the workflow id is a hash of the UTF-8 groupKey, and encoding "\\ud800" raises."""
    cases: list[tuple[str, Mutation]] = [
        ("groupKey", Mutation("replace", ("groupKey",), "{}:{alertname=\ud800}")),
        ("alerts.0.labels.severity", Mutation("replace", ("alerts", 0, "labels", "severity"), "crit\udfff")),
        ("alerts.1.annotations", Mutation("extra", ("alerts", 1, "annotations"), "x", key="\udc80")),
    ]
    for named, mutation in cases:
        before = len(recorded.temporal.deliveries)
        status, text, parsed = await post(recorded.client, WEBHOOK, encode(mutation.apply(BASE)), AUTH)
        error = assert_refusal(status, text, parsed)
        assert status == 400 and named in error and "surrogate" in error, error
        assert len(recorded.temporal.deliveries) == before


async def test_a_start_time_without_an_offset_is_utc(recorded: Recorded) -> None:
    """Was a 500: the incident's lead alert is picked by start time, and a naive time next to an aware one cannot be
    compared."""
    payload = base_payload()
    payload["alerts"][0]["startsAt"] = "2025-06-03T14:02:17"
    before = len(recorded.temporal.deliveries)
    status, text, _ = await post(recorded.client, WEBHOOK, encode(payload), AUTH)
    assert status == 202, text
    assert len(recorded.temporal.deliveries) == before + 1
    parsed = AlertmanagerWebhook.model_validate(payload)
    assert parsed.alerts[0].starts_at == datetime(2025, 6, 3, 14, 2, 17, tzinfo=UTC)


@pytest.mark.parametrize(
    "starts_at", ["0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "9999-12-31T23:59:59-05:00", "9000-01-01T00:00:00Z"]
)
async def test_a_start_time_no_alert_can_have_is_refused(recorded: Recorded, starts_at: str) -> None:
    """Was accepted: a start in year 1 overflows the evidence windows counted back from the incident's onset, and one
    past year 9999 in UTC cannot even be compared with the group's other alerts."""
    payload = base_payload()
    payload["alerts"][1]["startsAt"] = starts_at
    before = len(recorded.temporal.deliveries)
    status, text, parsed = await post(recorded.client, WEBHOOK, encode(payload), AUTH)
    assert status == 400 and "alerts.1.startsAt" in assert_refusal(status, text, parsed)
    assert len(recorded.temporal.deliveries) == before


async def test_an_authorization_header_that_is_not_utf8_is_401(recorded: Recorded) -> None:
    """Was a 500: aiohttp keeps such header bytes as surrogates, and the token check encoded them strictly."""
    for value in (b"Bearer \xff\xfe", b"Bearer webhook-t0ken\x80", b"Bearer \xc3"):
        status, body = await raw_post(recorded.client, WEBHOOK, [(b"Authorization", value)], encode(BASE))
        assert status == 401, body
    status, body = await raw_post(recorded.client, WEBHOOK, [(b"Authorization", b"Bearer webhook-t0ken")], encode(BASE))
    assert status == 202, body


async def test_a_slack_signature_that_is_not_ascii_is_401(recorded: Recorded) -> None:
    """Was a 500: hmac.compare_digest raises TypeError on non-ASCII text, and a header may carry any byte."""
    body = form(click("approve", recorded.response_url))
    headers = [(b"X-Slack-Request-Timestamp", str(int(time.time())).encode())]
    for signature in (b"v0=\xc3\xa9", b"v0=\xff"):
        status, answer = await raw_post(recorded.client, SLACK, [*headers, (b"X-Slack-Signature", signature)], body)
        assert status == 401 and "does not match" in json.loads(answer)["error"]


async def test_a_slack_timestamp_of_hundreds_of_digits_is_401(recorded: Recorded) -> None:
    """Was a 500: int() accepts it, and subtracting it from the float clock overflows."""
    body = form(click("approve", recorded.response_url))
    for timestamp in ("1" + "0" * 400, "+1767225600", "\u0661\u0667\u0666\u0667"):  # the last: Arabic-Indic digits
        headers = {**signed(body), "X-Slack-Request-Timestamp": timestamp}
        status, text, parsed = await post(recorded.client, SLACK, body, headers)
        assert status == 401 and "Unix time" in assert_refusal(status, text, parsed)


def _with(payload: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    return Mutation("replace", path, value).apply(payload)


def _control(action: str, recorded: Recorded, **value: Any) -> dict[str, Any]:
    payload = click(action, recorded.response_url)
    inner = {"workflow_id": incident_workflow_id("fuzz"), **value}
    return _with(payload, control_path(action), json.dumps(inner))


async def test_signed_slack_payloads_that_crashed_the_handler_are_acked_and_ignored(recorded: Recorded) -> None:
    """Each was a 500 from the signed request's handler, before it could ack."""
    approve = click("approve", recorded.response_url)
    bodies = {
        "payload nested too deeply": form("[" * 100_000 + "]" * 100_000),
        "payload with a 5000-digit integer": form("1" * 5_000),
        "action_id that is a list": form(_with(approve, ("actions", 0, "action_id"), ["approve"])),
        "control value nested too deeply": form(_with(approve, ("actions", 0, "value"), "[" * 100_000)),
        "control value with a 5000-digit integer": form(_with(approve, ("actions", 0, "value"), "1" * 5_000)),
        "wrong verdict naming no category": form(_control("feedback_wrong", recorded, cause="bogus")),
        "cause menu with a list for a cause": form(_control("feedback_cause", recorded, cause=["oom_kill"])),
    }
    for what, body in bodies.items():
        assert await slack_post(recorded, body, signed(body)) == (200, "", False), what


# ---- regressions: the front door's JSON reading and field naming, Temporal's search attribute size limit ---------


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"version": "4", "truncatedAlerts": ' + b"1" * 5_000 + b"}"],
    ids=["nested-too-deeply", "5000-digit-integer"],
)
async def test_webhook_json_python_cannot_parse_is_400(recorded: Recorded, body: bytes) -> None:
    """A 500 today: json.loads raises RecursionError, or ValueError (not JSONDecodeError) for a long integer."""
    status, text, parsed = await post(recorded.client, WEBHOOK, body, AUTH)
    assert status == 400 and assert_refusal(status, text, parsed).startswith("malformed JSON")
    assert recorded.temporal.deliveries[-1:] != [("start", "")]


async def test_error_names_a_senders_key_escaped_and_short(recorded: Recorded) -> None:
    """The error echoes a label's name as the field: today a newline in it splits the error, and a 100k-character
    name comes back whole."""
    for key in ("team\nX-Injected: yes", "k" * 100_000):
        payload = Mutation("extra", ("alerts", 0, "labels"), 5, key=key).apply(BASE)
        status, text, parsed = await post(recorded.client, WEBHOOK, encode(payload), AUTH)
        error = assert_refusal(status, text, parsed)
        assert status == 400 and "alerts.0.labels." in error
        assert "\n" not in error and len(error) < 500, error[:200]


async def test_huge_label_values_fit_temporals_search_attribute_limit(real_front: RealFront) -> None:
    """A 500 today: label values become keyword search attributes, which Temporal caps at 2 KiB (as JSON, so 342
    non-ASCII characters are enough); the workflow's own upserts would fail the same way."""
    for label, value in (("alertname", "é" * 400), ("namespace", "n" * 3_000), ("service", "s" * 100_000)):
        payload = _with(base_payload(), ("alerts", 0, "labels", label), value)
        status, text, parsed = await post(real_front.client, WEBHOOK, encode(payload), {})
        assert status == 202, (label, text[:300])
        workflow_id = parsed["incidents"][0]["workflow_id"]
        real_front.accepted.add(workflow_id)
        assert await first_task_outcome(real_front.env, workflow_id) == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
