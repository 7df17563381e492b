"""The real pipeline, end to end, on real processes, with nothing posted by hand.

A real Prometheus scrapes a small exporter and evaluates an alerting rule; a real Alertmanager (Debian's
``prometheus-alertmanager``) groups the alert and delivers it to the front door's webhook with the
``WEBHOOK_TOKEN`` in ``http_config.authorization``; ``make run``'s stack (Temporal dev server, worker, front door)
opens the incident, gathers evidence from that Prometheus and the Kubernetes emulator, diagnoses the bad deploy
and proposes a rollback, which the shipped policy only dry-runs. A person approves it over HTTP; the agent
verifies against the alert's own expression, which it read from the generatorURL Prometheus set. Because a dry
run changes nothing, the condition still holds and the incident escalates (that is the honest answer). The test
then fixes the service: the metric recovers, Prometheus resolves the alert, Alertmanager sends ``resolved``
(``send_resolved: true``) and the incident closes on that delivery.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest_asyncio

from tests.e2e.stack import Stack, bad_deploy_cluster, devstack, eventually, wait_phase, wait_ready
from tests.fixtures.alertmanager import AlertmanagerServer, webhook_config
from tests.fixtures.exporter import Exporter
from tests.fixtures.kube import KubeAPI, kube_api
from tests.fixtures.prometheus import PrometheusServer, alerting_rule, free_port, rule_file
from triage.identity import incident_workflow_id

EXPR = "app_error_ratio > 0.05"
WEBHOOK_TOKEN = "pipeline-hook-token"
API_TOKEN = "pipeline-operator-token"
RECEIVER = "incident-agent"
# The group key Alertmanager builds for a root route grouping by alertname and namespace: the incident's identity.
GROUP_KEY = '{}:{alertname="HighErrorRate", namespace="food"}'
HEALTHY, FAILING = 0.01, 0.35
RULES = rule_file(
    [
        alerting_rule(
            "HighErrorRate",
            EXPR,
            labels={"severity": "critical"},
            annotations={"summary": "High 5xx error rate on search"},
        )
    ],
    group="search",
)


@pytest_asyncio.fixture
async def exporter() -> AsyncIterator[Exporter]:
    # Healthy until every process is up: the alert must begin while Alertmanager and the stack can hear it.
    exporter = Exporter(error_ratio=HEALTHY)
    await exporter.start()
    yield exporter
    await exporter.stop()


@pytest_asyncio.fixture
async def kubernetes(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    # search was rolled out four minutes before the alert will begin: the diagnosis has a rollback to plan.
    rolled_out_at = datetime.now(UTC) - timedelta(minutes=4)
    async with kube_api(tmp_path, bad_deploy_cluster(rolled_out_at)) as api:
        yield api


async def get_json(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with session.get(url, params=params) as response:
        assert response.status == 200, f"{url}: {response.status} {await response.text()}"
        return await response.json()


async def prometheus_ready_to_alert(session: aiohttp.ClientSession, prometheus: PrometheusServer) -> bool:
    """Prometheus scraped the healthy exporter, loaded the rule and found Alertmanager."""
    healthy = await get_json(session, f"{prometheus.url}/api/v1/query", query="app_error_ratio")
    rules = await get_json(session, f"{prometheus.url}/api/v1/rules", type="alert")
    alertmanagers = await get_json(session, f"{prometheus.url}/api/v1/alertmanagers")
    return (
        len(healthy["data"]["result"]) == 1
        and any(rule["name"] == "HighErrorRate" for group in rules["data"]["groups"] for rule in group["rules"])
        and bool(alertmanagers["data"]["activeAlertmanagers"])
    )


async def listed_incidents(session: aiohttp.ClientSession, stack: Stack) -> list[dict[str, Any]]:
    async with session.get(f"{stack.front_url}/incidents") as response:
        return list((await response.json())["incidents"]) if response.status == 200 else []


def front_door_deliveries(stack: Stack) -> list[dict[str, Any]]:
    """The front door's ``alert_notification`` log lines (JSON), one per webhook delivery it accepted."""
    deliveries = []
    for line in stack.log_path.read_text(errors="replace").splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "alert_notification":
            deliveries.append(record)
    return deliveries


async def test_prometheus_alert_through_alertmanager_to_a_closed_incident(
    exporter: Exporter, kubernetes: KubeAPI, tmp_path: Path
) -> None:
    # Prometheus starts after the stack (it needs Alertmanager's address, and Alertmanager the front door's), so
    # its port is chosen now for the worker's PROMETHEUS_URL.
    prometheus_port = free_port()
    env = {
        "PROMETHEUS_URL": f"http://127.0.0.1:{prometheus_port}",
        "KUBECONFIG": str(kubernetes.kubeconfig),
        "WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "API_TOKEN": API_TOKEN,
        "VERIFY_AFTER": "1s",
        "FEEDBACK_WINDOW": "0",
    }
    with devstack(tmp_path, env) as stack:
        alertmanager = AlertmanagerServer(
            tmp_path / "alertmanager",
            config=webhook_config(
                f"{stack.front_url}/alerts/alertmanager",
                bearer_token=WEBHOOK_TOKEN,
                receiver=RECEIVER,
                group_by=("alertname", "namespace"),
                group_wait="1s",
                group_interval="1s",
            ),
        )
        # Started in threads: the exporter and the Kubernetes emulator answer from this event loop meanwhile.
        await asyncio.to_thread(alertmanager.start)
        try:
            prometheus = PrometheusServer(
                tmp_path / "tsdb",
                port=prometheus_port,
                scrape_targets=[exporter.target],
                scrape_interval="1s",
                evaluation_interval="1s",
                rules=RULES,
                alertmanagers=[alertmanager.url.removeprefix("http://")],
            )
            await asyncio.to_thread(prometheus.start)
            try:
                await run_pipeline(stack, exporter, prometheus, alertmanager)
            finally:
                prometheus.stop()
        finally:
            alertmanager.stop()
        assert stack.stop() == 0


async def run_pipeline(
    stack: Stack, exporter: Exporter, prometheus: PrometheusServer, alertmanager: AlertmanagerServer
) -> None:
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, stack)
        await eventually(lambda: prometheus_ready_to_alert(session, prometheus), 30, "Prometheus to be ready")
        assert await listed_incidents(session, stack) == []

        exporter.error_ratio = FAILING  # the service breaks; from here on no test code talks to the webhook

        # Alertmanager's grouping, not the test, names the incident.
        workflow_id = incident_workflow_id(GROUP_KEY)
        listed = await eventually(lambda: listed_incidents(session, stack), 30, "an incident opened by Alertmanager")
        assert [incident["workflow_id"] for incident in listed] == [workflow_id]

        waiting = await wait_phase(session, stack, workflow_id, "awaiting_approval")
        assert waiting["group_key"] == GROUP_KEY
        assert waiting["severity"] == "critical"
        assert (waiting["alertname"], waiting["namespace"], waiting["service"]) == ("HighErrorRate", "food", "search")

        # The alert is the one Prometheus raised and Alertmanager holds: its labels carry the scrape's job and
        # instance, its fingerprint is Alertmanager's, its generatorURL is Prometheus's own link to the rule.
        [(fingerprint, alert)] = waiting["alerts"].items()
        assert alert["status"] == "firing"
        assert alert["labels"]["instance"] == exporter.target and alert["labels"]["job"] == "app"
        [held] = await asyncio.to_thread(alertmanager.alerts)
        assert held["fingerprint"] == fingerprint
        assert [receiver["name"] for receiver in held["receivers"]] == [RECEIVER]
        assert held["generatorURL"] == alert["generator_url"]
        generator = urlsplit(alert["generator_url"])
        assert generator.port == prometheus.port and parse_qs(generator.query)["g0.expr"] == [EXPR]
        assert waiting["alert_expr"] == EXPR

        # Evidence from that Prometheus: the alert's expression, evaluated now, returns the exporter's series.
        probe = next(item for item in waiting["evidence"]["items"] if item["kind"] == "alert_expression")
        [series] = probe["data"]["series"]
        assert series["labels"]["instance"] == exporter.target and series["value"] == FAILING

        # The diagnosis found the rollout in the cluster; the shipped policy only dry-runs, a person must approve.
        assert waiting["diagnosis"]["category"] == "bad_deploy"
        assert waiting["diagnosis"]["root_cause"] == {"namespace": "food", "workload": "search"}
        plan = waiting["plan"]
        assert [(a["type"], a["namespace"], a["target"]) for a in plan["actions"]] == [("rollback", "food", "search")]
        assert waiting["dry_run"] is True

        async with session.post(
            f"{stack.front_url}/incidents/{workflow_id}/decision",
            json={"approve": True, "by": "alice", "plan_id": plan["id"]},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        ) as response:
            assert response.status == 200, await response.text()

        # A dry run changes nothing, so the alert's own expression still matches after VERIFY_AFTER: escalated.
        escalated = await wait_phase(session, stack, workflow_id, "escalated")
        [action] = escalated["actions_taken"]
        assert action["mode"] == "dry_run" and action["action"]["type"] == "rollback"
        [verification] = escalated["verification"]
        assert verification["method"] == "prometheus"
        assert verification["outcome"] == "still_failing"
        assert verification["expr"] == EXPR
        assert escalated["decision"]["by"] == "alice"
        assert escalated["escalation_reason"] == "the alert condition still holds after remediation"

        exporter.error_ratio = HEALTHY  # a person fixes it; Prometheus resolves the alert, Alertmanager says so

        closed = await wait_phase(session, stack, workflow_id, "closed", timeout_s=30)
        assert closed["outcome"] == "resolved after escalation"
        assert closed["alerts"][fingerprint]["status"] == "resolved"
        assert closed["alerts"][fingerprint]["ends_at"] is not None
        kinds = [event["kind"] for event in closed["timeline"]]
        assert "alerts_resolved" in kinds and kinds.index("alerts_resolved") > kinds.index("verification")
        resolved_event = next(event for event in closed["timeline"] if event["kind"] == "alerts_resolved")
        assert resolved_event["data"]["fingerprints"] == [fingerprint]

        # Every delivery the front door took came from Alertmanager, through its webhook integration, without
        # a failure: the first one firing (it started the incident), the last one resolved.
        deliveries = [d for d in front_door_deliveries(stack) if d.get("workflow_id") == workflow_id]
        assert deliveries, f"no alert_notification line for {workflow_id} in {stack.log_path}"
        assert deliveries[0]["status"] == "firing" and deliveries[0]["action"] == "started"
        assert deliveries[-1]["status"] == "resolved" and deliveries[-1]["group_key"] == GROUP_KEY
        sent = await asyncio.to_thread(alertmanager.metric, "alertmanager_notifications_total", integration="webhook")
        failed = await asyncio.to_thread(
            alertmanager.metric, "alertmanager_notifications_failed_total", integration="webhook"
        )
        assert sent >= len(deliveries) >= 2 and failed == 0
