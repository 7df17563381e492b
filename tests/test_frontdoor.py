"""The HTTP front door against a real Temporal dev server: bad input, dedup, auth, operator endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from pydantic import SecretStr
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from config.settings import Settings
from config.temporal import connect
from frontdoor.app import MAX_BODY_BYTES, create_app
from frontdoor.auth import operator_allowed
from frontdoor.gateway import IncidentGateway
from frontdoor.governor import GovernorGateway
from models.incident import IncidentState
from tests.conftest import load_payload
from tests.harness import wait_http_phase
from triage.identity import incident_workflow_id
from workflows.governor import GovernorWorkflow

ROOT = Path(__file__).resolve().parent.parent
Factory = Callable[..., "asyncio.Future[TestClient]"]


def unique_payload(tag: str) -> dict:
    payload = copy.deepcopy(load_payload("alertmanager_firing.json"))
    payload["groupKey"] = f'{{}}:{{alertname="HighErrorRate", test="{tag}"}}'
    return payload


async def assert_no_incident(env: WorkflowEnvironment, group_key: str) -> None:
    with pytest.raises(RPCError) as info:
        await env.client.get_workflow_handle(incident_workflow_id(group_key)).describe()
    assert info.value.status == RPCStatusCode.NOT_FOUND


# ---- bad input gets a clear answer and starts nothing ---------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda p: p.update(version="3"), "version"),
        (lambda p: p.update(alerts=[]), "alerts"),
        (lambda p: p["alerts"][0].pop("labels"), "alerts.0.labels"),
        (lambda p: p["alerts"][0].update(startsAt="yesterday"), "alerts.0.startsAt"),
        (lambda p: p.update(status="burning"), "status"),
    ],
    ids=["wrong-version", "empty-alerts", "missing-labels", "bad-timestamp", "bad-status"],
)
async def test_invalid_payloads_are_400_naming_the_field(front, dev_server, mutate, needle: str) -> None:
    client = await front()
    payload = unique_payload(f"bad-{needle}")
    mutate(payload)
    response = await client.post("/alerts/alertmanager", json=payload)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error.startswith("invalid Alertmanager payload: ") and needle in error
    assert "\n" not in error
    await assert_no_incident(dev_server, payload["groupKey"])


async def test_a_real_payload_missing_its_status_is_refused(front) -> None:
    client = await front()
    response = await client.post("/alerts/alertmanager", json=load_payload("prom2teams_without_status.json"))
    assert response.status == 400
    assert "status: Field required" in (await response.json())["error"]


async def test_malformed_json_is_400(front) -> None:
    client = await front()
    response = await client.post("/alerts/alertmanager", data=b'{"version": "4", "alerts": [')
    assert response.status == 400
    assert (await response.json())["error"].startswith("malformed JSON")


async def test_body_over_one_mib_is_413(front, dev_server) -> None:
    client = await front()
    payload = unique_payload("huge")
    payload["alerts"][0]["annotations"]["description"] = "x" * MAX_BODY_BYTES
    response = await client.post("/alerts/alertmanager", data=json.dumps(payload).encode())
    assert response.status == 413
    assert "limit" in (await response.json())["error"]
    await assert_no_incident(dev_server, payload["groupKey"])


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic s3cret", "Bearer"])
async def test_webhook_token_is_enforced(front, dev_server, header: str | None) -> None:
    client = await front(webhook_token=SecretStr("s3cret"))
    payload = unique_payload(f"auth-{header}")
    headers = {"Authorization": header} if header else {}
    response = await client.post("/alerts/alertmanager", json=payload, headers=headers)
    assert response.status == 401
    await assert_no_incident(dev_server, payload["groupKey"])


async def test_webhook_with_the_right_token_is_accepted(front) -> None:
    client = await front(webhook_token=SecretStr("s3cret"))
    response = await client.post(
        "/alerts/alertmanager", json=unique_payload("auth-ok"), headers={"Authorization": "Bearer s3cret"}
    )
    assert response.status == 202


# ---- delivery ---------------------------------------------------------------------------------------------------


async def test_concurrent_duplicate_deliveries_make_one_incident(front, dev_server) -> None:
    client = await front()
    payload = unique_payload("dedup")
    responses = await asyncio.gather(*(client.post("/alerts/alertmanager", json=payload) for _ in range(3)))
    assert [r.status for r in responses] == [202, 202, 202]
    bodies = [(await r.json())["incidents"][0] for r in responses]
    workflow_id = incident_workflow_id(payload["groupKey"])
    assert {b["workflow_id"] for b in bodies} == {workflow_id}
    # Copies in flight together share the first one's write (all "started"); a later copy is "signalled".
    actions = [b["action"] for b in bodies]
    assert "started" in actions and set(actions) <= {"started", "signalled"}

    state = await wait_http_phase(client, workflow_id, "awaiting_approval")
    assert len(state["alerts"]) == 1
    runs = [w async for w in dev_server.client.list_workflows(f'WorkflowId = "{workflow_id}"')]
    assert len(runs) == 1
    # The incident is findable in the UI by its search attributes.
    found = await _visible(dev_server, f'IncidentPhase = "awaiting_approval" AND WorkflowId = "{workflow_id}"')
    attributes = {key.name: value for key, value in found.typed_search_attributes}
    assert attributes["AlertName"] == "HighErrorRate"
    assert attributes["IncidentSeverity"] == "critical"
    assert attributes["IncidentNamespace"] == "food"
    assert attributes["IncidentService"] == "search"
    assert attributes["RootCauseCategory"] == "bad_deploy"
    state = await dev_server.client.get_workflow_handle(workflow_id).query("state", result_type=IncidentState)
    assert attributes["DiagnosisConfidence"] == pytest.approx(state.diagnosis.confidence)
    assert 0.4 <= state.diagnosis.confidence < 1


async def _visible(env: WorkflowEnvironment, query: str, timeout_s: float = 10):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        found = [w async for w in env.client.list_workflows(query)]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"nothing visible for {query}")


async def test_resolved_notification_signals_a_running_incident_and_is_ignored_otherwise(front, dev_server) -> None:
    client = await front()
    payload = unique_payload("resolve")
    started = await client.post("/alerts/alertmanager", json=payload)
    workflow_id = (await started.json())["incidents"][0]["workflow_id"]
    await wait_http_phase(client, workflow_id, "awaiting_approval")

    resolved = copy.deepcopy(payload)
    resolved["status"] = "resolved"
    resolved["alerts"][0].update(status="resolved", endsAt="2026-01-01T12:30:00Z")
    response = await client.post("/alerts/alertmanager", json=resolved)
    assert (await response.json())["incidents"][0]["action"] == "signalled"
    closed = await wait_http_phase(client, workflow_id, "closed")
    assert closed["outcome"] == "resolved"
    await dev_server.client.get_workflow_handle(workflow_id).result()  # past the closing message and report

    # The same resolution again, now that nothing is open for the group: accepted, nothing started.
    again = await client.post("/alerts/alertmanager", json=resolved)
    assert again.status == 202
    assert (await again.json())["incidents"][0] == {
        "workflow_id": workflow_id,
        "action": "ignored",
        "reason": "no open incident for this group",
    }
    # A new firing notification for the closed group opens a new run of the same incident id.
    reopened = await client.post("/alerts/alertmanager", json=payload)
    assert (await reopened.json())["incidents"][0] == {"workflow_id": workflow_id, "action": "started"}


# ---- operator endpoints -----------------------------------------------------------------------------------------


async def test_decision_over_http_approves_the_pending_plan(front) -> None:
    client = await front()
    response = await client.post("/alerts/alertmanager", json=unique_payload("decide-http"))
    workflow_id = (await response.json())["incidents"][0]["workflow_id"]
    state = await wait_http_phase(client, workflow_id, "awaiting_approval")

    stale = await client.post(
        f"/incidents/{workflow_id}/decision", json={"approve": True, "by": "alice", "plan_id": "plan-stale"}
    )
    assert stale.status == 409 and (await stale.json())["kind"] == "StalePlan"
    invalid = await client.post(f"/incidents/{workflow_id}/decision", json={"approve": "maybe", "by": "alice"})
    assert invalid.status == 400 and "approve" in (await invalid.json())["error"]

    ok = await client.post(
        f"/incidents/{workflow_id}/decision",
        json={"approve": True, "by": "alice", "reason": "matches the deploy", "plan_id": state["plan"]["id"]},
    )
    assert ok.status == 200
    # The update answers as soon as the plan left awaiting_approval: it is being acted on.
    assert (await ok.json()) == {
        "accepted": True,
        "phase": "remediating",
        "plan_id": state["plan"]["id"],
        "by": "alice",
    }
    again = await client.post(f"/incidents/{workflow_id}/decision", json={"approve": False, "by": "alice"})
    assert again.status == 409 and (await again.json())["kind"] == "NoPendingPlan"

    listed = await (await client.get("/incidents?open=true")).json()
    assert any(i["workflow_id"] == workflow_id and i["severity"] == "critical" for i in listed["incidents"])


async def test_unknown_approver_is_403(front) -> None:
    client = await front(approvers=["alice"])
    response = await client.post("/alerts/alertmanager", json=unique_payload("decide-403"))
    workflow_id = (await response.json())["incidents"][0]["workflow_id"]
    await wait_http_phase(client, workflow_id, "awaiting_approval")
    refused = await client.post(f"/incidents/{workflow_id}/decision", json={"approve": True, "by": "mallory"})
    assert refused.status == 403 and (await refused.json())["kind"] == "UnknownApprover"


async def test_api_token_guards_decisions(front) -> None:
    client = await front(api_token=SecretStr("op-token"))
    workflow_id = incident_workflow_id("whatever")
    response = await client.post(f"/incidents/{workflow_id}/decision", json={"approve": True, "by": "alice"})
    assert response.status == 401
    authorised = await client.post(
        f"/incidents/{workflow_id}/decision",
        json={"approve": True, "by": "alice"},
        headers={"Authorization": "Bearer op-token"},
    )
    assert authorised.status == 404  # past the guard: no such incident


def test_without_api_token_only_loopback_callers_may_decide() -> None:
    def request_from(peer: str) -> web.Request:
        transport = type("T", (), {"get_extra_info": lambda self, key, default=None: (peer, 5555)})()
        return make_mocked_request("POST", "/incidents/x/decision", transport=transport)

    assert operator_allowed(request_from("127.0.0.1"), None) == (True, "")
    assert operator_allowed(request_from("::1"), None)[0]
    allowed, why = operator_allowed(request_from("10.1.2.3"), None)
    assert not allowed and "loopback" in why


async def test_unknown_incident_and_bad_ids_are_404(front) -> None:
    client = await front()
    assert (await client.get(f"/incidents/{incident_workflow_id('nobody')}")).status == 404
    assert (await client.get("/incidents/not-an-incident")).status == 404


async def test_cli_approve_and_reject_report_refusals_and_successes(front, dev_server) -> None:
    client = await front()
    response = await client.post("/alerts/alertmanager", json=unique_payload("cli"))
    workflow_id = (await response.json())["incidents"][0]["workflow_id"]
    await wait_http_phase(client, workflow_id, "awaiting_approval")
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
        "LOG_FORMAT": "json",
    }

    async def cli(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "starter.py",
            *args,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        return process.returncode or 0, out.decode(), err.decode()

    code, _, err = await cli("approve", workflow_id, "--by", "carol", "--plan-id", "plan-x")
    assert code == 1 and "stale" in err, err
    code, out, err = await cli("reject", workflow_id, "--by", "carol", "--reason", "not the deploy")
    assert code == 0 and json.loads(out)["phase"] == "escalated", err
    state = await wait_http_phase(client, workflow_id, "escalated")
    assert state["decision"]["by"] == "carol" and state["decision"]["approve"] is False
    code, _, err = await cli("approve", incident_workflow_id("nobody"), "--by", "carol")
    assert code == 1 and "no running incident" in err, err


# ---- the governor: kill switch and state --------------------------------------------------------------------------


@pytest_asyncio.fixture
async def governed(dev_server: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Callable]:
    """Front doors whose governor is this test's own (the production id is a singleton), with a worker for it."""
    clients: list[TestClient] = []
    workflow_id = f"governor-{task_queue}"

    async def make(**overrides: object) -> TestClient:
        settings = Settings(_env_file=None, temporal_task_queue=task_queue, **overrides)  # type: ignore[call-arg]
        gateway = IncidentGateway(dev_server.client, settings)
        governor = GovernorGateway(dev_server.client, task_queue, workflow_id=workflow_id)
        client = TestClient(TestServer(create_app(gateway, settings, governor)))
        await client.start_server()
        clients.append(client)
        return client

    async with Worker(dev_server.client, task_queue=task_queue, workflows=[GovernorWorkflow]):
        yield make
        for client in clients:
            await client.close()
        with contextlib.suppress(RPCError):
            await dev_server.client.get_workflow_handle(workflow_id).terminate("test over")


async def test_killswitch_over_http_flips_the_governor_and_get_shows_it(governed) -> None:
    client = await governed()
    before = await client.get("/governor")
    assert before.status == 200
    body = await before.json()
    assert (body["killswitch"], body["ledger"], body["granted"], body["refused"]) == (False, [], 0, 0)

    on = await client.post("/governor/killswitch", json={"on": True, "by": "alice", "reason": "bad rollout wave"})
    assert on.status == 200
    state = await on.json()
    assert (state["killswitch"], state["killswitch_by"], state["killswitch_reason"]) == (
        True,
        "alice",
        "bad rollout wave",
    )
    assert state["killswitch_at"]
    assert (await (await client.get("/governor")).json())["killswitch"] is True

    off = await client.post("/governor/killswitch", json={"on": False, "by": "bob"})
    assert off.status == 200
    assert (await off.json())["killswitch"] is False and (await off.json())["killswitch_by"] == "bob"
    assert (await (await client.get("/governor")).json())["killswitch_by"] == "bob"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"on": "maybe", "by": "alice"}, "on"),
        ({"by": "alice"}, "on: Field required"),
        ({"on": True}, "by: Field required"),
        ({"on": True, "by": ""}, "by"),
        ([], "body"),
    ],
    ids=["on-not-bool", "on-missing", "by-missing", "by-empty", "not-an-object"],
)
async def test_bad_killswitch_requests_are_400_naming_the_field(governed, body: object, needle: str) -> None:
    client = await governed()
    response = await client.post("/governor/killswitch", json=body)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error.startswith("invalid kill switch request: ") and needle in error
    assert (await (await client.get("/governor")).json())["killswitch"] is False


async def test_api_token_guards_the_killswitch_but_not_the_state(governed) -> None:
    client = await governed(api_token=SecretStr("op-token"))
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        refused = await client.post("/governor/killswitch", json={"on": True, "by": "mallory"}, headers=headers)
        assert refused.status == 401
    assert (await client.get("/governor")).status == 200  # reads are open, as GET /incidents is
    assert (await (await client.get("/governor")).json())["killswitch"] is False
    authorised = await client.post(
        "/governor/killswitch", json={"on": True, "by": "alice"}, headers={"Authorization": "Bearer op-token"}
    )
    assert authorised.status == 200 and (await authorised.json())["killswitch"] is True


async def test_cli_killswitch_on_off_and_governor_state(
    governed, dev_server: WorkflowEnvironment, task_queue: str
) -> None:
    client = await governed()
    workflow_id = f"governor-{task_queue}"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
        "TEMPORAL_TASK_QUEUE": task_queue,
        "LOG_FORMAT": "json",
    }

    async def cli(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "starter.py",
            *args,
            "--governor-id",
            workflow_id,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        return process.returncode or 0, out.decode(), err.decode()

    code, out, err = await cli("killswitch", "on", "--by", "carol", "--reason", "incident storm")
    assert code == 0, err
    assert (json.loads(out)["killswitch"], json.loads(out)["killswitch_reason"]) == (True, "incident storm")
    assert (await (await client.get("/governor")).json())["killswitch_by"] == "carol"
    code, out, err = await cli("governor")
    assert code == 0 and json.loads(out)["killswitch"] is True, err
    code, out, err = await cli("killswitch", "off", "--by", "dave")
    assert code == 0 and json.loads(out)["killswitch"] is False, err
    code, _, err = await cli("killswitch", "on")
    assert code == 2 and "--by" in err  # argparse: the flip must say who did it
    code, _, err = await cli("killswitch", "on", "--by", " ")
    assert code == 1 and "--by" in err


# ---- Temporal down ----------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_temporal_unreachable_is_503_and_not_ready() -> None:
    settings = Settings(_env_file=None, temporal_address=f"127.0.0.1:{_closed_port()}")  # type: ignore[call-arg]
    gateway = IncidentGateway(await connect(settings, lazy=True), settings)
    async with TestClient(TestServer(create_app(gateway, settings))) as client:
        response = await client.post("/alerts/alertmanager", json=unique_payload("down"))
        assert response.status == 503
        assert "retry" in (await response.json())["error"]
        assert (await client.get("/readyz")).status == 503
        assert (await client.get("/healthz")).status == 200
        assert (await client.post("/governor/killswitch", json={"on": True, "by": "alice"})).status == 503
        assert (await client.get("/governor")).status == 503
