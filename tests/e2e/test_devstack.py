"""End to end on real processes: ``make run``'s stack (Temporal dev server, worker, front door) and a real
Prometheus scraping an exporter whose error ratio the test flips.

An Alertmanager payload is posted to the webhook, the incident shows up in the Temporal UI's API with its
search attributes, is approved over HTTP, verified against Prometheus after the durable wait, and closes. One
SIGINT (Ctrl-C) then stops all three processes cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from tests.fixtures.prometheus import PrometheusServer, free_port

ROOT = Path(__file__).resolve().parents[2]
EXPR = "app_error_ratio > 0.05"
WEBHOOK_TOKEN = "hook-token"
API_TOKEN = "operator-token"


class Exporter:
    """A /metrics endpoint with one gauge the test controls."""

    def __init__(self) -> None:
        self.error_ratio = 0.35
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = (
            f'# TYPE app_error_ratio gauge\napp_error_ratio{{namespace="food",service="search"}} {self.error_ratio}\n'
        )
        return web.Response(text=body, content_type="text/plain")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


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


async def eventually(check, timeout_s: float, what: str):
    deadline = asyncio.get_running_loop().time() + timeout_s
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last {last!r}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


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


async def test_alert_to_closed_incident_through_the_embedded_stack(
    exporter: Exporter, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    temporal_port, ui_port, http_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "TEMPORAL_UI_PORT": str(ui_port),
        "TEMPORAL_DB_FILE": str(tmp_path / "temporal.db"),
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(http_port),
        "PROMETHEUS_URL": prometheus.url,
        "WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "API_TOKEN": API_TOKEN,
        "VERIFY_AFTER": "1s",
        "LOG_FORMAT": "json",
    }
    front = f"http://127.0.0.1:{http_port}"
    log_path = tmp_path / "devstack.log"
    with open(log_path, "wb") as log:
        stack = subprocess.Popen(
            [sys.executable, "-m", "devstack"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: series_count(session, prometheus), 20, "Prometheus to scrape the exporter")

            async def ready() -> bool:
                try:
                    async with session.get(f"{front}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(ready, 60, "the front door to be ready")
            async with session.post(
                f"{front}/alerts/alertmanager",
                json=alert_payload(),
                headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
            ) as response:
                assert response.status == 202
                delivery = (await response.json())["incidents"][0]
            assert delivery["action"] == "started"
            workflow_id = delivery["workflow_id"]

            async def incident() -> dict:
                async with session.get(f"{front}/incidents/{workflow_id}") as response:
                    return await response.json() if response.status == 200 else {}

            waiting = await eventually(
                lambda: _when(incident(), lambda s: s.get("phase") == "awaiting_approval"),
                30,
                "awaiting_approval",
            )
            evidence = waiting["evidence"]["items"]
            assert evidence and evidence[0]["data"]["series"][0]["labels"]["service"] == "search"

            # The Temporal UI (its own HTTP API) lists the incident with the contract's search attributes.
            ui_query = f'WorkflowId="{workflow_id}"'
            ui_url = f"http://127.0.0.1:{ui_port}/api/v1/namespaces/default/workflows?query={quote(ui_query)}"

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
                f"{front}/incidents/{workflow_id}/decision",
                json={"approve": True, "by": "alice", "plan_id": waiting["plan"]["id"]},
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            ) as response:
                assert response.status == 200, await response.text()

            closed = await eventually(
                lambda: _when(incident(), lambda s: s.get("phase") == "closed"), 30, "the incident to close"
            )
            assert closed["outcome"] == "resolved"
            assert closed["verification"][-1]["method"] == "prometheus"
            assert closed["verification"][-1]["outcome"] == "recovered"
            assert closed["decision"]["by"] == "alice"

        stack.send_signal(signal.SIGINT)
        assert stack.wait(timeout=60) == 0
        for port in (temporal_port, ui_port, http_port):
            assert not port_open(port), f"port {port} still open after Ctrl-C"
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()
        print(log_path.read_text(errors="replace")[-4000:])


async def _when(awaitable, predicate):
    value = await awaitable
    return value if predicate(value) else None
