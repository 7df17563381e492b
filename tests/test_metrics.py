"""Metrics: the front door's ``GET /metrics`` after real requests, the agent's counters from the workflow and the
activities through the Temporal SDK's meters, and the Prometheus rule file checked and unit-tested by promtool.

Front door tests run a real app against the dev server with a worker on the same queue (as tests/test_frontdoor.py
does) and read the figures back from ``/metrics`` in Prometheus' text format. The SDK meters record into a runtime
with an in-memory ``MetricBuffer``; the worker's real Prometheus endpoint is tested end to end in
tests/e2e/test_worker_metrics.py.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from temporalio import workflow
from temporalio.client import Client
from temporalio.common import MetricAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import BufferedMetricUpdate, MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.llm import LLMActivities
from activities.metrics import LLM_DURATION, LLM_ERRORS, LLM_TOKENS, REMEDIATION_ACTIONS, llm_error_kind
from activities.remediation import RemediationActivities
from config.settings import Settings
from config.temporal import connect, metrics_runtime
from frontdoor.app import create_app
from frontdoor.gateway import IncidentGateway
from models.evidence import Evidence
from models.incident import (
    Action,
    ActionType,
    Category,
    Decision,
    Hypothesis,
    IncidentSettings,
    Phase,
    Severity,
    Workload,
)
from models.llm import LLMDiagnoseRequest, LLMSummaryRequest
from models.remediation import ExecuteRequest, UndoRequest
from tests.conftest import load_payload
from tests.fixtures.kube import kube_api, load_document
from tests.fixtures.openai_stand_in import (
    Behaviour,
    OpenAIStandIn,
    answer,
    hang,
    rate_limited,
    raw_body,
    refusal,
    server_error,
    text,
)
from tests.fixtures.prometheus import free_port
from tests.harness import (
    FakePrometheus,
    RecordingNotifier,
    alert,
    incident_worker,
    notification,
    resolved,
    wait_for_phase,
    wait_http_phase,
)
from tests.test_slack_interactions import SECRET, form, signed
from triage.identity import incident_workflow_id
from workflows.metrics import INCIDENTS_CLOSED, PHASES_ENTERED

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "incident-agent-rules.yml"
RULES_TEST = RULES_DIR / "incident-agent-rules.test.yml"
ROUTE_EXAMPLE = RULES_DIR / "alertmanager-route-example.yml"
PAYLOADS = Path(__file__).parent / "payloads"
TOKEN = "hook-token"
KEY = "sk-test-metrics"


# ---- reading metrics back ---------------------------------------------------------------------------------------


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(exposition: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of Prometheus' text format exactly as exposed. (prometheus_client's parser renames a counter's
    samples to ``<name>_total``, which would hide the very names the rules must match.)"""
    samples = []
    for line in exposition.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match is not None, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        samples.append((name, dict(_LABEL.findall(labels or "")), float(value)))
    return samples


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum over the samples named ``name`` whose labels include ``labels``."""
    return sum(v for n, have, v in samples if n == name and labels.items() <= have.items())


async def scrape(client: TestClient) -> list[tuple[str, dict[str, str], float]]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(await response.text())


class Recorded:
    """A Temporal runtime whose metrics go to an in-memory buffer instead of an endpoint."""

    def __init__(self) -> None:
        self.buffer = MetricBuffer(100_000)
        self.runtime = Runtime(telemetry=TelemetryConfig(metrics=self.buffer))
        self._updates: list[BufferedMetricUpdate] = []

    def _matching(self, name: str, labels: dict[str, str]) -> list[BufferedMetricUpdate]:
        self._updates.extend(self.buffer.retrieve_updates())
        return [u for u in self._updates if u.metric.name == name and _includes(u.attributes, labels)]

    def total(self, name: str, **labels: str) -> float:
        """A counter's value: the buffer holds its increments."""
        return sum(u.value for u in self._matching(name, labels))

    def observations(self, name: str, **labels: str) -> list[float]:
        return [float(u.value) for u in self._matching(name, labels)]

    def label_sets(self, name: str) -> list[dict[str, str | int | float | bool]]:
        return [dict(u.attributes) for u in self._matching(name, {})]

    def activities(self) -> ActivityEnvironment:
        env = ActivityEnvironment()
        env.metric_meter = self.runtime.metric_meter
        return env


def _includes(attributes: MetricAttributes, labels: dict[str, str]) -> bool:
    return all(attributes.get(key) == value for key, value in labels.items())


# ---- the front door ---------------------------------------------------------------------------------------------


def unique_payload(tag: str) -> dict[str, Any]:
    payload = copy.deepcopy(load_payload("alertmanager_firing.json"))
    payload["groupKey"] = f'{{}}:{{alertname="HighErrorRate", test="metrics-{tag}-{uuid.uuid4().hex[:6]}"}}'
    return payload


def resolved_payload(payload: dict[str, Any]) -> dict[str, Any]:
    done = copy.deepcopy(payload)
    done["status"] = "resolved"
    for each in done["alerts"]:
        each.update(status="resolved", endsAt="2026-01-01T12:30:00Z")
    return done


async def test_webhooks_are_counted_by_outcome_and_requests_timed_by_route(front) -> None:
    client = await front(webhook_token=SecretStr(TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    before = await scrape(client)
    # Every outcome is there from the start, at 0, so a rate() sees the first failure.
    for outcome in ("started", "signalled", "ignored", "400", "401", "413", "503"):
        assert ("incident_agent_webhooks_total", {"outcome": outcome}, 0.0) in before

    payload = unique_payload("webhooks")
    started = await client.post("/alerts/alertmanager", json=payload, headers=auth)
    assert (await started.json())["incidents"][0]["action"] == "started"
    again = await client.post("/alerts/alertmanager", json=payload, headers=auth)
    assert (await again.json())["incidents"][0]["action"] == "signalled"
    nothing_open = await client.post(
        "/alerts/alertmanager", json=resolved_payload(unique_payload("idle")), headers=auth
    )
    assert (await nothing_open.json())["incidents"][0]["action"] == "ignored"
    assert (await client.post("/alerts/alertmanager", data=b'{"version": "4",', headers=auth)).status == 400
    assert (await client.post("/alerts/alertmanager", json=payload)).status == 401
    assert (
        await client.post("/alerts/alertmanager", json=payload, headers={"Authorization": "Bearer no"})
    ).status == 401
    huge = unique_payload("huge")
    huge["alerts"][0]["annotations"]["description"] = "x" * (1024 * 1024)
    assert (await client.post("/alerts/alertmanager", data=json.dumps(huge).encode(), headers=auth)).status == 413
    workflow_id = incident_workflow_id(payload["groupKey"])
    assert (await client.get(f"/incidents/{workflow_id}")).status == 200
    assert (await client.get("/no/such/route")).status == 404
    assert (await client.request("TRACE", "/healthz")).status == 405  # methods outside the set: "other"

    samples = await scrape(client)
    webhooks = {labels["outcome"]: v for n, labels, v in samples if n == "incident_agent_webhooks_total"}
    assert webhooks == {"started": 1, "signalled": 1, "ignored": 1, "400": 1, "401": 2, "413": 1, "503": 0}

    duration = "incident_agent_http_request_duration_seconds_count"
    assert total(samples, duration, route="/alerts/alertmanager", method="POST", status="202") == 3
    assert total(samples, duration, route="/alerts/alertmanager", method="POST", status="401") == 2
    assert total(samples, duration, route="/incidents/{workflow_id}", method="GET", status="200") == 1
    assert total(samples, duration, route="unmatched", status="404") == 1
    assert total(samples, duration, method="other", status="405") == 1
    # Routes by pattern, never by path: an incident id makes no series of its own.
    assert not any(workflow_id in value or value == "TRACE" for _, labels, _ in samples for value in labels.values())
    # The process figures every Python exporter has, on this app's registry.
    assert total(samples, "process_resident_memory_bytes") > 0

    # Each app counts on a registry of its own.
    other = await front()
    assert total(await scrape(other), "incident_agent_webhooks_total") == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_temporal_unreachable_webhooks_are_counted_as_503() -> None:
    settings = Settings(_env_file=None, temporal_address=f"127.0.0.1:{_closed_port()}")  # type: ignore[call-arg]
    gateway = IncidentGateway(await connect(settings, lazy=True), settings)
    async with TestClient(TestServer(create_app(gateway, settings))) as client:
        assert (await client.post("/alerts/alertmanager", json=unique_payload("down"))).status == 503
        assert (await client.get("/readyz")).status == 503
        samples = await scrape(client)
    assert total(samples, "incident_agent_webhooks_total", outcome="503") == 1
    duration = "incident_agent_http_request_duration_seconds_count"
    assert total(samples, duration, route="/alerts/alertmanager", status="503") == 1
    assert total(samples, duration, route="/readyz", status="503") == 1


async def test_operator_decisions_and_feedback_are_counted_by_outcome(front) -> None:
    client = await front(approvers=["alice"])
    started = await client.post("/alerts/alertmanager", json=unique_payload("decide"))
    workflow_id = (await started.json())["incidents"][0]["workflow_id"]
    state = await wait_http_phase(client, workflow_id, "awaiting_approval")
    decision = f"/incidents/{workflow_id}/decision"

    assert (await client.post(decision, json={"approve": True, "by": "mallory"})).status == 403
    assert (await client.post(decision, json={"approve": True, "by": "alice", "plan_id": "plan-old"})).status == 409
    assert (await client.post(decision, json={"approve": "maybe", "by": "alice"})).status == 400
    unknown = f"/incidents/{incident_workflow_id('nobody-' + uuid.uuid4().hex)}/decision"
    assert (await client.post(unknown, json={"approve": True, "by": "alice"})).status == 404
    ok = await client.post(decision, json={"approve": True, "by": "alice", "plan_id": state["plan"]["id"]})
    assert ok.status == 200
    assert (await client.post(decision, json={"approve": False, "by": "alice"})).status == 409

    verdict = f"/incidents/{workflow_id}/feedback"
    assert (await client.post(verdict, json={"verdict": "correct", "by": "alice"})).status == 200
    assert (await client.post(verdict, json={"verdict": "wrong", "by": "alice"})).status == 409

    samples = await scrape(client)
    decisions = {labels["outcome"]: v for n, labels, v in samples if n == "incident_agent_operator_decisions_total"}
    assert decisions == {
        "unknown_approver": 1,
        "stale_plan": 1,
        "invalid": 1,
        "not_found": 1,
        "approved": 1,
        "no_pending_plan": 1,
    }
    assert {labels["via"] for n, labels, _ in samples if n == "incident_agent_operator_decisions_total"} == {"http"}
    feedback = {labels["outcome"]: v for n, labels, v in samples if n == "incident_agent_operator_feedback_total"}
    assert feedback == {"correct": 1, "feedback_recorded": 1}
    await wait_http_phase(client, workflow_id, "verifying")  # nothing left in flight when the worker stops


def click(workflow_id: str, plan_id: str, user: str) -> dict[str, Any]:
    """A ``block_actions`` payload for the Approve button, as Slack sends it (no response_url: nobody to tell)."""
    value = json.dumps({"workflow_id": workflow_id, "plan_id": plan_id})
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "alice"},
        "actions": [{"action_id": "approve", "value": value, "type": "button"}],
    }


async def slack_decisions(client: TestClient, count: int, timeout_s: float = 30) -> dict[str, float]:
    """The Slack decisions counted by outcome, once there are ``count`` of them (or the timeout)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        samples = await scrape(client)
        decisions = {
            labels["outcome"]: v
            for n, labels, v in samples
            if n == "incident_agent_operator_decisions_total" and labels["via"] == "slack"
        }
        if sum(decisions.values()) >= count or asyncio.get_running_loop().time() > deadline:
            return decisions
        await asyncio.sleep(0.1)


async def test_slack_interactions_and_their_decisions_are_counted(front) -> None:
    unconfigured = await front()
    assert (await unconfigured.post("/slack/interactions", data=b"payload=%7B%7D")).status == 503
    assert total(await scrape(unconfigured), "incident_agent_slack_interactions_total", outcome="not_configured") == 1

    client = await front(slack_signing_secret=SecretStr(SECRET), approvers=["U0ALICE"])
    started = await client.post("/alerts/alertmanager", json=unique_payload("slack"))
    workflow_id = (await started.json())["incidents"][0]["workflow_id"]
    plan_id = (await wait_http_phase(client, workflow_id, "awaiting_approval"))["plan"]["id"]

    body = form(click(workflow_id, plan_id, "U0MALLORY"))
    assert (await client.post("/slack/interactions", data=body, headers=signed(body, secret="wrong"))).status == 401
    assert (await client.post("/slack/interactions", data=body, headers=signed(body))).status == 200
    # A click's decision runs in the background after the ack: wait for it to be counted before the next one.
    assert await slack_decisions(client, 1) == {"unknown_approver": 1}
    body = form(click(workflow_id, plan_id, "U0ALICE"))
    assert (await client.post("/slack/interactions", data=body, headers=signed(body))).status == 200
    assert await slack_decisions(client, 2) == {"unknown_approver": 1, "approved": 1}
    samples = await scrape(client)
    interactions = {labels["outcome"]: v for n, labels, v in samples if n == "incident_agent_slack_interactions_total"}
    assert interactions == {"acked": 2, "bad_signature": 1, "too_large": 0, "not_configured": 0}
    await wait_http_phase(client, workflow_id, "verifying")


# ---- the workflow's counters ------------------------------------------------------------------------------------


async def test_phases_and_closes_are_counted_once_even_when_a_new_worker_replays_the_history(
    dev_server: WorkflowEnvironment, task_queue: str
) -> None:
    recorded = Recorded()
    client = await Client.connect(
        dev_server.client.service_client.config.target_host,
        namespace=dev_server.client.namespace,
        data_converter=pydantic_data_converter,
        runtime=recorded.runtime,
    )
    settings = Settings(_env_file=None, temporal_task_queue=task_queue)  # type: ignore[call-arg]
    gateway = IncidentGateway(dev_server.client, settings, IncidentSettings(feedback_window_s=0))
    # A service of its own: incident memory on the shared server must not find this closed incident for another test.
    fired = notification(alert(service="metrics-replay"), group_key=f'{{}}:{{test="{task_queue}"}}')
    prometheus, notifier = FakePrometheus(), RecordingNotifier()

    async with incident_worker(client, task_queue, prometheus, notifier):
        delivery = await gateway.deliver(fired)
        handle = dev_server.client.get_workflow_handle(delivery.workflow_id)
        await wait_for_phase(handle, Phase.awaiting_approval, timeout_s=30)
    # A new worker has no cached copy of the incident: the next task replays its whole history, phases included.
    async with incident_worker(client, task_queue, prometheus, notifier):
        await wait_for_phase(handle, Phase.awaiting_approval, timeout_s=30)
        await gateway.decide(delivery.workflow_id, Decision(approve=False, by="alice", reason="not the deploy"))
        await wait_for_phase(handle, Phase.escalated, timeout_s=30)
        await gateway.deliver(resolved(fired))
        await asyncio.wait_for(handle.result(), 60)

    entered = {str(labels["phase"]) for labels in recorded.label_sets(PHASES_ENTERED)}
    assert entered == {
        "triaging",
        "investigating",
        "diagnosing",
        "awaiting_approval",
        "escalated",
        "resolved",
        "closed",
    }
    for phase in entered:
        assert recorded.total(PHASES_ENTERED, phase=phase) == 1, phase
    assert recorded.label_sets(INCIDENTS_CLOSED) == [
        {
            "outcome": "escalated",
            "severity": "critical",
            "category": "bad_deploy",
            "namespace": dev_server.client.namespace,
            "task_queue": task_queue,
            "workflow_type": "IncidentWorkflow",
            "service_name": "temporal-core-sdk",
        }
    ]
    # The second worker did replay the history (the SDK times each replay), and the phases it replayed were not
    # counted again.
    assert recorded.observations("temporal_workflow_task_replay_latency", task_queue=task_queue)


# ---- the activities' meters -------------------------------------------------------------------------------------

ROLLBACK = Action(type=ActionType.rollback, namespace="food", target="search", risk="medium", requires_approval=True)
ANSWER: dict[str, Any] = {
    "category": "bad_deploy",
    "confidence": 0.8,
    "root_cause_namespace": "food",
    "root_cause_workload": "search",
    "explanation": "Errors began right after the rollout of search.",
    "evidence": ["search rolled out revision 4"],
    "actions": [{"type": "rollback", "namespace": "food", "target": "search"}],
}


def llm_request() -> LLMDiagnoseRequest:
    return LLMDiagnoseRequest(
        workflow_id="incident-0123456789abcdef",
        alertname="HighErrorRate",
        severity=Severity.critical,
        namespace="food",
        service="search",
        title="search: 20% of requests fail",
        evidence=Evidence(),
        candidates=[
            Hypothesis(
                category=Category.bad_deploy,
                confidence=0.7,
                root_cause=Workload(namespace="food", workload="search"),
            )
        ],
        allowed_actions=[ROLLBACK],
    )


@pytest_asyncio.fixture
async def llm() -> AsyncIterator[OpenAIStandIn]:
    async with OpenAIStandIn(api_key=KEY) as stand_in:
        yield stand_in


async def test_an_accepted_llm_call_is_timed_and_its_tokens_counted(llm: OpenAIStandIn) -> None:
    recorded = Recorded()
    activities = LLMActivities(KEY, llm.base_url, max_retries=0)
    llm.script(answer(ANSWER), text("The rollout of search broke it; rolling back fixed it."))
    diagnosis = await recorded.activities().run(activities.diagnose_with_llm, llm_request())
    summary = await recorded.activities().run(
        activities.summarize_incident, LLMSummaryRequest(workflow_id="incident-0123456789abcdef", report="# r")
    )
    assert diagnosis.used and summary.used
    assert recorded.observations(LLM_DURATION, call="diagnose", outcome="accepted") == [
        pytest.approx(diagnosis.latency_ms / 1000)
    ]
    assert len(recorded.observations(LLM_DURATION, call="summary", outcome="accepted")) == 1
    assert recorded.total(LLM_TOKENS, call="diagnose", type="prompt") == diagnosis.prompt_tokens > 0
    assert recorded.total(LLM_TOKENS, call="diagnose", type="completion") == diagnosis.completion_tokens > 0
    assert recorded.total(LLM_ERRORS) == 0


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [
        (rate_limited(), "rate_limited"),
        (server_error(), "server_error"),
        (hang(5), "timeout"),
        (refusal("I can't help with that."), "refused"),
        (text("It was the deploy, I think."), "invalid_json"),
        (text(""), "empty_response"),
        (answer({**ANSWER, "category": "gremlins"}), "schema_violation"),
        (answer({**ANSWER, "actions": [{**ANSWER["actions"][0], "namespace": "kube-system"}]}), "outside_allowed_set"),
        (raw_body("text/html", "<html>sign in</html>"), "unusable_response"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_llm_failures_are_counted_by_kind(llm: OpenAIStandIn, behaviour: Behaviour, kind: str) -> None:
    recorded = Recorded()
    llm.script(behaviour)
    activities = LLMActivities(KEY, llm.base_url, max_retries=0, timeout_s=0.5)
    result = await recorded.activities().run(activities.diagnose_with_llm, llm_request())
    assert not result.used
    assert llm_error_kind(result.fallback_reason) == kind, result.fallback_reason
    assert recorded.total(LLM_ERRORS, call="diagnose", kind=kind) == 1
    assert len(recorded.observations(LLM_DURATION, call="diagnose", outcome="fallback")) == 1


async def test_llm_auth_and_connection_failures_have_their_kinds(llm: OpenAIStandIn) -> None:
    recorded = Recorded()
    wrong_key = await recorded.activities().run(
        LLMActivities("sk-wrong", llm.base_url, max_retries=0).diagnose_with_llm, llm_request()
    )
    nowhere = await recorded.activities().run(
        LLMActivities(KEY, f"http://127.0.0.1:{_closed_port()}/v1", max_retries=0).diagnose_with_llm, llm_request()
    )
    assert llm_error_kind(wrong_key.fallback_reason) == "auth"
    assert llm_error_kind(nowhere.fallback_reason) == "connection"
    assert recorded.total(LLM_ERRORS, kind="auth") == 1 and recorded.total(LLM_ERRORS, kind="connection") == 1
    # An unconfigured LLM is never called: nothing to time, nothing failed.
    unset = await recorded.activities().run(LLMActivities(None, None).diagnose_with_llm, llm_request())
    assert unset.fallback_reason == "LLM not configured"
    assert len(recorded.observations(LLM_DURATION)) == 2


async def test_remediation_actions_are_counted_by_type_and_result(tmp_path: Path) -> None:
    recorded = Recorded()
    scale = Action(type=ActionType.scale_up, namespace="food", target="search", params={"factor": 1.5})
    unconfigured = RemediationActivities(None)
    with pytest.raises(Exception, match="not configured"):
        await recorded.activities().run(
            unconfigured.execute_action, ExecuteRequest(workflow_id="i", action_id="a-0", action=scale, dry_run=True)
        )
    async with kube_api(tmp_path, load_document(PAYLOADS / "kube_bad_deploy.json")) as api:
        api_client = api.client()
        try:
            acts = RemediationActivities(api_client)
            for dry_run in (True, False, False):  # a dry run, the apply, and a retry that finds it applied
                request = ExecuteRequest(workflow_id="i", action_id="a-1", action=scale, dry_run=dry_run)
                done = await recorded.activities().run(acts.execute_action, request)
            undo = UndoRequest(workflow_id="i", action_id="a-1", action=scale, before=done.before, dry_run=False)
            await recorded.activities().run(acts.undo_action, undo)
        finally:
            api_client.close()

    seen = {(str(labels["operation"]), str(labels["result"])) for labels in recorded.label_sets(REMEDIATION_ACTIONS)}
    counted = {(op, result): recorded.total(REMEDIATION_ACTIONS, operation=op, result=result) for op, result in seen}
    assert counted == {
        ("execute", "SourceNotConfigured"): 1,
        ("execute", "dry_run"): 1,
        ("execute", "applied"): 1,
        ("execute", "already_applied"): 1,
        ("undo", "applied"): 1,
    }
    assert {labels["action_type"] for labels in recorded.label_sets(REMEDIATION_ACTIONS)} == {"scale_up"}


# ---- the worker's runtime: the SDK's own metric names, as the rules use them --------------------------------------


@workflow.defn(sandboxed=False)
class BrokenWorkflow:
    """Fails every workflow task, as a bug or a non-determinism would."""

    @workflow.run
    async def run(self) -> None:
        raise RuntimeError("a bug in workflow code")


async def test_the_metrics_runtime_serves_the_sdk_failure_counter_the_rules_alert_on(
    dev_server: WorkflowEnvironment, task_queue: str
) -> None:
    port = free_port()
    runtime = metrics_runtime(port, host="127.0.0.1")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, temporal_address=dev_server.client.service_client.config.target_host
    )
    client = await connect(settings, runtime=runtime)
    async with Worker(
        client, task_queue=task_queue, workflows=[BrokenWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
    ):
        await client.start_workflow(
            BrokenWorkflow.run, id=f"broken-{task_queue}", task_queue=task_queue, execution_timeout=timedelta(minutes=1)
        )
        failed: float = 0
        deadline = asyncio.get_running_loop().time() + 30
        async with aiohttp.ClientSession() as session:
            while failed == 0 and asyncio.get_running_loop().time() < deadline:
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    samples = parse(await response.text())
                failed = total(samples, "temporal_workflow_task_execution_failed", task_queue=task_queue)
                await asyncio.sleep(0.2)
    assert failed >= 1
    assert total(samples, "temporal_workflow_task_schedule_to_start_latency_bucket", task_queue=task_queue) > 0
    await dev_server.client.get_workflow_handle(f"broken-{task_queue}").terminate("test over")


def test_metrics_port_is_optional_and_blank_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).metrics_port is None  # type: ignore[call-arg]
    monkeypatch.setenv("METRICS_PORT", "")
    assert Settings(_env_file=None).metrics_port is None  # type: ignore[call-arg]
    monkeypatch.setenv("METRICS_PORT", "9464")
    assert Settings(_env_file=None).metrics_port == 9464  # type: ignore[call-arg]
    monkeypatch.setenv("METRICS_PORT", "70000")
    with pytest.raises(ValueError, match="metrics_port"):
        Settings(_env_file=None)  # type: ignore[call-arg]


# ---- the rule file and the Alertmanager route ---------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/install-test-services.sh (make test does)")
    return path


def run(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    promtool = _tool("promtool")
    checked = run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout
    tested = run(promtool, "test", "rules", str(RULES_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.fixture
def broken_rules(tmp_path: Path) -> Iterator[Path]:
    """The unit tests next to a copy of the rules whose worker-down alert can never fire."""
    rules = RULES.read_text()
    assert rules.count('up{job="incident-agent-worker"} == 0') == 1
    (tmp_path / RULES.name).write_text(rules.replace('up{job="incident-agent-worker"} == 0', 'up{job="nope"} == 0'))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    yield tmp_path


def test_the_rule_unit_tests_fail_when_the_down_alert_cannot_fire(broken_rules: Path) -> None:
    tested = run(_tool("promtool"), "test", "rules", RULES_TEST.name, cwd=broken_rules)
    assert tested.returncode != 0
    assert "IncidentAgentWorkerDown" in tested.stdout + tested.stderr


def test_every_rule_is_labelled_for_the_route_around_the_agent() -> None:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["component"] == "incident-agent", rule["alert"]
            assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
            assert rule["annotations"]["summary"] and "1. " in rule["annotations"]["description"], rule["alert"]


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            ["component=incident-agent", "alertname=IncidentAgentWorkerDown", "severity=critical"],
            "incident-agent-owners",
        ),
        (["component=incident-agent", "alertname=IncidentAgentLLMFailing", "namespace=food"], "incident-agent-owners"),
        (["alertname=HighErrorRate", "namespace=food", "severity=critical"], "incident-agent"),
    ],
)
def test_the_example_route_sends_the_agents_alerts_around_it(labels: list[str], receiver: str) -> None:
    amtool = _tool("amtool")
    checked = run(amtool, "check-config", str(ROUTE_EXAMPLE))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    routed = run(
        amtool, "config", "routes", "test", f"--config.file={ROUTE_EXAMPLE}", f"--verify.receivers={receiver}", *labels
    )
    assert routed.returncode == 0, routed.stdout + routed.stderr
    assert routed.stdout.strip() == receiver
