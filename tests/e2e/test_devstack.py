"""End to end on real processes: ``make run``'s stack (Temporal dev server, worker, front door) and a real
Prometheus scraping an exporter whose error ratio the test flips.

An Alertmanager payload is posted to the webhook, the incident shows up in the Temporal UI's API with its
search attributes, is approved over HTTP, verified against Prometheus after the durable wait, and closes. One
SIGINT (Ctrl-C) then stops all three processes cleanly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio

from tests.e2e.stack import bad_deploy_cluster, devstack, eventually, port_open, wait_phase, wait_ready
from tests.fixtures.exporter import Exporter
from tests.fixtures.kube import KubeAPI, kube_api
from tests.fixtures.prometheus import PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
EXPR = "app_error_ratio > 0.05"
WEBHOOK_TOKEN = "hook-token"
API_TOKEN = "operator-token"


@pytest_asyncio.fixture
async def exporter() -> AsyncIterator[Exporter]:
    exporter = Exporter()
    await exporter.start()
    yield exporter
    await exporter.stop()


@pytest.fixture
def prometheus(exporter: Exporter, tmp_path: Path) -> Iterator[PrometheusServer]:
    with PrometheusServer(tmp_path / "tsdb", scrape_targets=[f"127.0.0.1:{exporter.port}"]) as server:
        yield server


async def series_count(session: aiohttp.ClientSession, prometheus: PrometheusServer) -> int:
    async with session.get(f"{prometheus.url}/api/v1/query", params={"query": EXPR}) as response:
        return len((await response.json())["data"]["result"])


def alert_payload() -> dict:
    return {
        "version": "4",
        "groupKey": '{}/{severity=~"critical|warning"}:{alertname="HighErrorRate", namespace="food"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "incident-agent",
        "groupLabels": {"alertname": "HighErrorRate", "namespace": "food"},
        "commonLabels": {
            "alertname": "HighErrorRate",
            "namespace": "food",
            "service": "search",
            "severity": "critical",
        },
        "commonAnnotations": {"summary": "High 5xx error rate on search"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "HighErrorRate",
                    "namespace": "food",
                    "service": "search",
                    "severity": "critical",
                },
                "annotations": {"summary": "High 5xx error rate on search"},
                "startsAt": "2026-11-22T10:00:00.000Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": f"http://prometheus:9090/graph?g0.expr={quote(EXPR)}&g0.tab=1",
                "fingerprint": "f88fef4435c3dcd9",
            }
        ],
    }


@pytest_asyncio.fixture
async def kubernetes(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    # search was rolled out four minutes before the alert began: the diagnosis has a cause to act on.
    starts_at = datetime.fromisoformat(alert_payload()["alerts"][0]["startsAt"].replace("Z", "+00:00"))
    async with kube_api(tmp_path, bad_deploy_cluster(starts_at - timedelta(minutes=4))) as api:
        yield api


async def test_alert_to_closed_incident_through_the_embedded_stack(
    exporter: Exporter, prometheus: PrometheusServer, kubernetes: KubeAPI, tmp_path: Path
) -> None:
    env = {
        "PROMETHEUS_URL": prometheus.url,
        "KUBECONFIG": str(kubernetes.kubeconfig),
        "WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "API_TOKEN": API_TOKEN,
        "VERIFY_AFTER": "1s",
    }
    with devstack(tmp_path, env) as stack:
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: series_count(session, prometheus), 20, "Prometheus to scrape the exporter")
            await wait_ready(session, stack)
            async with session.post(
                f"{stack.front_url}/alerts/alertmanager",
                json=alert_payload(),
                headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
            ) as response:
                assert response.status == 202
                delivery = (await response.json())["incidents"][0]
            assert delivery["action"] == "started"
            workflow_id = delivery["workflow_id"]

            waiting = await wait_phase(session, stack, workflow_id, "awaiting_approval")
            evidence = waiting["evidence"]["items"]
            assert evidence and evidence[0]["data"]["series"][0]["labels"]["service"] == "search"

            # The Temporal UI (its own HTTP API) lists the incident with the contract's search attributes.
            ui_query = quote(f'WorkflowId="{workflow_id}"')
            ui_url = f"{stack.ui_url}/api/v1/namespaces/default/workflows?query={ui_query}"

            async def in_ui() -> dict:
                async with session.get(ui_url) as response:
                    body = await response.json() if response.status == 200 else {}
                executions = body.get("executions") or []
                return executions[0] if executions else {}

            listed = await eventually(in_ui, 20, "the incident in the Temporal UI")
            attributes = listed["searchAttributes"]["indexedFields"]
            assert set(attributes) >= {
                "IncidentPhase",
                "IncidentSeverity",
                "AlertName",
                "IncidentNamespace",
                "IncidentService",
                "RootCauseCategory",
                "DiagnosisConfidence",
            }

            exporter.error_ratio = 0.01  # the service recovers

            async def recovered() -> bool:
                return await series_count(session, prometheus) == 0

            await eventually(recovered, 20, "Prometheus to see the recovery")

            async with session.post(
                f"{stack.front_url}/incidents/{workflow_id}/decision",
                json={"approve": True, "by": "alice", "plan_id": waiting["plan"]["id"]},
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            ) as response:
                assert response.status == 200, await response.text()

            closed = await wait_phase(session, stack, workflow_id, "closed", timeout_s=30)
            assert closed["outcome"] == "resolved"
            assert closed["verification"][-1]["method"] == "prometheus"
            assert closed["verification"][-1]["outcome"] == "recovered"
            assert closed["decision"]["by"] == "alice"

        assert stack.stop() == 0
        for port in stack.ports:
            assert not port_open(port), f"port {port} still open after Ctrl-C"
