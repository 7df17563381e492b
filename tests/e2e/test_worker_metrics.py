"""End to end on real processes: ``worker.py`` with METRICS_PORT and ``starter.py serve`` against a dev server,
scraped by a real Prometheus while an incident runs from webhook to close.

The worker's endpoint serves the Temporal SDK's metrics (``temporal_*``) and the agent's own from the workflow
(phases, close), the remediation executor (a dry run on the Kubernetes emulator) and the LLM step (an OpenAI
stand-in whose plain-text answer is no diagnosis but a fine report summary); the front door's serves its webhook
and decision counters. Prometheus scraping both proves the two expositions are what a real server ingests.
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.conftest import load_payload
from tests.e2e.stack import bad_deploy_cluster, eventually
from tests.fixtures.kube import KubeAPI, kube_api
from tests.fixtures.openai_stand_in import OpenAIStandIn, text
from tests.fixtures.prometheus import PrometheusServer, free_port
from tests.test_metrics import parse, total
from workflows.search_attributes import ALL_KEYS

ROOT = Path(__file__).resolve().parents[2]
# Settings of the agent that this machine's environment must not leak into the processes under test.
AGENT_VARIABLES = (
    "METRICS_PORT",
    "PROMETHEUS_URL",
    "LOKI_URL",
    "LOKI_TENANT",
    "ALERTMANAGER_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "LLM_MODEL",
    "SLACK_BOT_TOKEN",
    "SLACK_CHANNEL",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "PAGERDUTY_ROUTING_KEY",
    "WEBHOOK_TOKEN",
    "API_TOKEN",
    "APPROVERS",
    "DRY_RUN",
    "KUBECONFIG",
    "KUBERNETES_SERVICE_HOST",
)


def agent_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key.upper() not in AGENT_VARIABLES}
    return {**env, "HOME": str(tmp_path), "LOG_FORMAT": "json", **settings}


@contextmanager
def process(name: str, args: list[str], env: Mapping[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``args`` (a fixed list, no shell) in the project directory, its output in a log shown when the test ends."""
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(args, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        print(f"---- {name} log (end) ----\n{log_path.read_text(errors='replace')[-3000:]}")


def stop(child: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
    child.send_signal(signal.SIGTERM)
    return child.wait(timeout=timeout_s)


async def http_ok(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def query(session: aiohttp.ClientSession, prometheus: PrometheusServer, promql: str) -> list[dict[str, Any]]:
    async with session.get(f"{prometheus.url}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def payload_and_start() -> tuple[dict[str, Any], datetime]:
    payload = copy.deepcopy(load_payload("alertmanager_firing.json"))
    payload["groupKey"] = f'{{}}:{{alertname="HighErrorRate", test="worker-metrics-{uuid.uuid4().hex[:8]}"}}'
    starts_at = datetime.fromisoformat(payload["alerts"][0]["startsAt"].replace("Z", "+00:00"))
    return payload, starts_at


@pytest_asyncio.fixture
async def temporal() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server of this test's own: the incident it closes must not turn up in other tests' incident memory."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest_asyncio.fixture
async def llm() -> AsyncIterator[OpenAIStandIn]:
    # Plain text: no diagnosis (invalid JSON, the runbook diagnosis stands), but a good report summary.
    async with OpenAIStandIn(api_key=None, default=text("A rollout of search broke it; rolling back fixed it.")) as it:
        yield it


@pytest_asyncio.fixture
async def kubernetes(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    _, starts_at = payload_and_start()
    async with kube_api(tmp_path, bad_deploy_cluster(starts_at - timedelta(minutes=4))) as api:
        yield api


async def test_worker_and_front_door_metrics_through_a_real_prometheus(
    temporal: WorkflowEnvironment, task_queue: str, llm: OpenAIStandIn, kubernetes: KubeAPI, tmp_path: Path
) -> None:
    metrics_port, http_port = free_port(), free_port()
    env = agent_env(
        tmp_path,
        TEMPORAL_ADDRESS=temporal.client.service_client.config.target_host,
        TEMPORAL_TASK_QUEUE=task_queue,
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(http_port),
        KUBECONFIG=str(kubernetes.kubeconfig),
        OPENAI_BASE_URL=llm.base_url,
        VERIFY_AFTER="1s",
        FEEDBACK_WINDOW="0",
    )
    front = f"http://127.0.0.1:{http_port}"
    worker_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    payload, _ = payload_and_start()
    targets = [f"127.0.0.1:{http_port}", f"127.0.0.1:{metrics_port}"]
    with (
        process(
            "worker", [sys.executable, "worker.py"], {**env, "METRICS_PORT": str(metrics_port)}, tmp_path
        ) as worker,
        process("starter", [sys.executable, "starter.py", "serve"], env, tmp_path) as starter,
        PrometheusServer(tmp_path / "tsdb", scrape_targets=targets) as prometheus,
    ):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await eventually(lambda: http_ok(session, worker_metrics), 60, "the worker's metrics endpoint")
            await eventually(lambda: http_ok(session, f"{front}/readyz"), 60, "the front door")

            async with session.post(f"{front}/alerts/alertmanager", json=payload) as response:
                assert response.status == 202
                workflow_id = (await response.json())["incidents"][0]["workflow_id"]

            async def phase_is(phase: str) -> dict[str, Any]:
                async with session.get(f"{front}/incidents/{workflow_id}") as response:
                    state = await response.json() if response.status == 200 else {}
                return state if state.get("phase") == phase else {}

            waiting = await eventually(lambda: phase_is("awaiting_approval"), 90, "the plan to await approval")
            assert waiting["plan"]["actions"][0]["type"] == "rollback"
            decision = {"approve": True, "by": "alice", "plan_id": waiting["plan"]["id"]}
            async with session.post(f"{front}/incidents/{workflow_id}/decision", json=decision) as response:
                assert response.status == 200, await response.text()
            await eventually(lambda: phase_is("verifying"), 60, "the dry run and verification")
            resolved = copy.deepcopy(payload)
            resolved["status"] = "resolved"
            resolved["alerts"][0].update(status="resolved", endsAt="2025-06-03T14:30:00Z")
            async with session.post(f"{front}/alerts/alertmanager", json=resolved) as response:
                assert response.status == 202
            await temporal.client.get_workflow_handle(workflow_id).result()  # closed, summarised, completed

            # The worker's endpoint, as exposed: the SDK's metrics and the agent's own, side by side. The exporter
            # may lag the workflow by a moment: wait for the last things the incident did.
            mine = {"task_queue": task_queue}

            async def worker_counted() -> list[tuple[str, dict[str, str], float]]:
                async with session.get(worker_metrics) as response:
                    samples = parse(await response.text())
                done = total(samples, "temporal_workflow_completed", workflow_type="IncidentWorkflow", **mine)
                calls = total(samples, "incident_agent_llm_request_duration_seconds_count", **mine)
                return samples if done and calls >= 2 else []

            samples = await eventually(worker_counted, 30, "the worker to expose the completed incident")
            phases = {
                labels["phase"]: value
                for name, labels, value in samples
                if name == "incident_agent_incident_phases_entered_total" and labels["task_queue"] == task_queue
            }
            assert phases == {
                "triaging": 1,
                "investigating": 1,
                "diagnosing": 1,
                "awaiting_approval": 1,
                "remediating": 1,
                "verifying": 1,
                "resolved": 1,
                "closed": 1,
            }
            closed = [labels for name, labels, _ in samples if name == "incident_agent_incidents_closed_total"]
            assert [(c["outcome"], c["severity"], c["category"]) for c in closed] == [
                ("approved", "critical", "bad_deploy")
            ]
            remediation = "incident_agent_remediation_actions_total"
            assert total(samples, remediation, action_type="rollback", operation="execute", result="dry_run") == 1
            llm_count = "incident_agent_llm_request_duration_seconds_count"
            assert total(samples, llm_count, call="diagnose", outcome="fallback") == 1
            assert total(samples, llm_count, call="summary", outcome="accepted") == 1
            assert total(samples, "incident_agent_llm_errors_total", call="diagnose", kind="invalid_json") == 1
            histogram = "incident_agent_llm_request_duration_seconds_bucket"
            buckets = {labels["le"] for name, labels, _ in samples if name == histogram}
            assert {"0.25", "150", "+Inf"} <= buckets  # the seconds buckets, not the exporter's millisecond ones
            executed = total(
                samples, "temporal_activity_execution_latency_count", activity_type="execute_action", **mine
            )
            assert executed == 1
            assert total(samples, "temporal_workflow_task_schedule_to_start_latency_count", **mine) > 0
            assert {n for n, _, _ in samples} >= {"temporal_sticky_cache_size", "temporal_worker_task_slots_available"}

            # Prometheus scraped both: the exporters' formats are ones it ingests, under the series the rules use.
            expected = {
                'up{job="app"}': sorted((target, "1") for target in targets),
                'incident_agent_incidents_closed_total{outcome="approved"}': [(targets[1], "1")],
                'incident_agent_webhooks_total{outcome=~"started|signalled"}': [(targets[0], "1"), (targets[0], "1")],
                'incident_agent_operator_decisions_total{via="http",outcome="approved"}': [(targets[0], "1")],
                'incident_agent_http_request_duration_seconds_count{route="/alerts/alertmanager",status="202"}': [
                    (targets[0], "2")
                ],
            }

            async def ingested() -> dict[str, list[tuple[str, str]]]:
                found = {
                    promql: sorted(
                        (r["metric"]["instance"], r["value"][1]) for r in await query(session, prometheus, promql)
                    )
                    for promql in expected
                }
                return found if found == expected else {}

            try:
                await eventually(ingested, 30, "Prometheus to scrape the worker and the front door")
            finally:
                async with session.get(f"{prometheus.url}/api/v1/targets") as response:
                    targets_seen = (await response.json())["data"]["activeTargets"]
                print([(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets_seen])

        assert stop(starter) == 0
        assert stop(worker) == 0


def test_a_taken_metrics_port_stops_the_worker_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = agent_env(tmp_path, TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}", METRICS_PORT=str(port))
        completed = subprocess.run(
            [sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert f"worker not started: METRICS_PORT {port}: " in completed.stderr
    assert "Address already in use" in completed.stderr


@pytest.mark.parametrize("value", ["0", "http", "65536"])
def test_a_bad_metrics_port_stops_the_worker_naming_the_setting(tmp_path: Path, value: str) -> None:
    env = agent_env(tmp_path, TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}", METRICS_PORT=value)
    completed = subprocess.run(
        [sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode != 0
    assert "metrics_port" in completed.stderr
