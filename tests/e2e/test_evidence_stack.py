"""End to end: an incident in ``make run``'s stack, pointed at every evidence source, shows what it found.

Sources: a real Prometheus holding the bad-deploy story of ``test_metric_evidence`` (search starts failing 5
minutes ago), a real Alertmanager with a related alert, the Kubernetes emulator holding an excerpt of a real
bad-deploy cluster (search's rollout history), and the Loki stand-in holding that incident's logs moved to now.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client

from tests.e2e.stack import bad_deploy_cluster, devstack, wait_phase, wait_ready
from tests.fixtures.alertmanager import AlertmanagerServer
from tests.fixtures.kube import KubeAPI, kube_api
from tests.fixtures.loki import LokiStandIn
from tests.fixtures.prometheus import PrometheusServer, backfill
from tests.test_metric_evidence import set_clock, story

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads"
EXPR = (
    'sum by (namespace, service) (rate(http_server_request_duration_seconds_count{http_response_status_code=~"5.."}'
    "[5m])) / sum by (namespace, service) (rate(http_server_request_duration_seconds_count[5m])) > 0.05"
)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    set_clock(time.time())
    backfill(story(), tmp_path / "tsdb")
    with PrometheusServer(tmp_path / "tsdb") as server:
        yield server


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[AlertmanagerServer]:
    with AlertmanagerServer(tmp_path / "alertmanager") as server:
        server.post_alerts(
            [
                {
                    "labels": {
                        "alertname": "KubePodCrashLooping",
                        "namespace": "food",
                        "pod": "search-894587957d-x7k2p",
                        "severity": "warning",
                    },
                    "annotations": {"summary": "search keeps restarting"},
                    "startsAt": (datetime.now(UTC) - timedelta(minutes=2)).isoformat(),
                }
            ]
        )
        yield server


@pytest_asyncio.fixture
async def loki() -> AsyncIterator[LokiStandIn]:
    excerpt = json.loads((PAYLOADS / "loki_bad_deploy_food.json").read_text())
    # Move the recorded incident so that its notification is now, as an evaluation runner would.
    notified = datetime.fromisoformat(excerpt["at"].replace("Z", "+00:00"))
    shift_ns = int((time.time() - 5 - notified.timestamp()) * 1e9)
    streams = [
        {"stream": stream["stream"], "values": [[str(int(ts) + shift_ns), line] for ts, line in stream["values"]]}
        for stream in excerpt["streams"]
    ]
    async with LokiStandIn(streams=streams) as stand_in:
        yield stand_in


@pytest_asyncio.fixture
async def kubernetes(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    # search was rolled out two minutes before its errors began (the story's CHANGE_AT, 5 minutes ago).
    rolled_out_at = datetime.fromtimestamp(time.time() - 7 * 60, tz=UTC)
    async with kube_api(tmp_path, bad_deploy_cluster(rolled_out_at)) as api:
        yield api


def alert_payload() -> dict:
    starts = datetime.now(UTC) - timedelta(minutes=3)
    labels = {"alertname": "HighErrorRate", "namespace": "food", "service": "search", "severity": "critical"}
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate", namespace="food"}',
        "status": "firing",
        "receiver": "incident-agent",
        "groupLabels": {"alertname": "HighErrorRate", "namespace": "food"},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "High 5xx error rate on search"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "High 5xx error rate on search"},
                "startsAt": starts.isoformat().replace("+00:00", "Z"),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": f"http://prometheus:9090/graph?g0.expr={quote(EXPR)}&g0.tab=1",
                "fingerprint": "f88fef4435c3dcd9",
            }
        ],
    }


async def test_an_incident_shows_ranked_findings_rollouts_new_log_templates_and_related_alerts(
    prometheus: PrometheusServer,
    alertmanager: AlertmanagerServer,
    loki: LokiStandIn,
    kubernetes: KubeAPI,
    tmp_path: Path,
) -> None:
    env = {
        "PROMETHEUS_URL": prometheus.url,
        "ALERTMANAGER_URL": alertmanager.url,
        "LOKI_URL": loki.url,
        "KUBECONFIG": str(kubernetes.kubeconfig),
    }
    with devstack(tmp_path, env) as stack:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, stack)
            async with session.post(f"{stack.front_url}/alerts/alertmanager", json=alert_payload()) as response:
                assert response.status == 202
                workflow_id = (await response.json())["incidents"][0]["workflow_id"]
            state = await wait_phase(session, stack, workflow_id, "awaiting_approval")

        evidence = state["evidence"]
        assert evidence["gaps"] == []  # every source answered
        top = evidence["findings"][0]
        assert (top["metric"], top["workload"], top["direction"]) == ("error_ratio", "search", "up")
        assert top["onset"] and top["recent"] > 10 * top["baseline"]
        assert any(
            r["deployment"] == "search" and r["current"] and "image" in r["changed"] for r in evidence["rollouts"]
        )
        new_templates = [t for t in evidence["log_templates"] if t["new"]]
        assert new_templates and "search" in new_templates[0]["workloads"]
        assert [a["alertname"] for a in evidence["related_alerts"]] == ["KubePodCrashLooping"]
        kinds = [event["message"].split(":")[0] for event in state["timeline"] if event["kind"] == "evidence"]
        assert {"prometheus", "loki", "kubernetes", "alertmanager"} <= set(kinds)
        # The diagnosis weighs what was found: the rollout just before the errors, aimed back at search.
        assert state["diagnosis"]["category"] == "bad_deploy"
        assert state["diagnosis"]["root_cause"] == {"namespace": "food", "workload": "search"}
        cited = state["diagnosis"]["hypotheses"][0]["evidence"]
        assert any("revision 4" in line and "shortly before" in line for line in cited)
        assert [(a["type"], a["target"]) for a in state["plan"]["actions"]] == [("rollback", "search")]

        # The Temporal UI shows the same in the incident's current details (the workflow metadata query).
        client = await Client.connect(stack.temporal_address)
        metadata = await client.get_workflow_handle(workflow_id).query(
            "__temporal_workflow_metadata", result_type=WorkflowMetadata
        )
        details = metadata.current_details
        assert "- changed: share of requests failing with 5xx of search rose" in details
        assert "- rollout: revision" in details and "- new in logs" in details
        assert "- also firing: KubePodCrashLooping" in details
        assert stack.stop() == 0
