"""The scenario's world behind the APIs the agent uses in production, built from the test suite's back-ends.

* Prometheus: the real server, its TSDB backfilled from ``metrics.om`` with promtool;
* Alertmanager: the real server, holding the scenario's alerts (posted through its API), so that the agent's
  "other alerts firing here" query sees what production would;
* Loki: the stand-in serving ``logs.json`` over ``query_range``;
* Kubernetes: the API emulator holding ``kubernetes.json``, with a kubeconfig for the official client.

The scenario must already be shifted to now (``scenario.shifted``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.scenario import Scenario
from tests.fixtures.alertmanager import AlertmanagerServer
from tests.fixtures.kube import kube_api
from tests.fixtures.loki import LokiStandIn
from tests.fixtures.prometheus import PrometheusServer, backfill

ZERO_TIME_YEAR = "0001-"  # Go's zero time: Alertmanager's "no end yet"


@dataclass(frozen=True)
class Backends:
    prometheus_url: str
    loki_url: str
    alertmanager_url: str
    kubeconfig: Path

    def env(self) -> dict[str, str]:
        """The product's configuration for this world (the contract's variables)."""
        return {
            "PROMETHEUS_URL": self.prometheus_url,
            "LOKI_URL": self.loki_url,
            "ALERTMANAGER_URL": self.alertmanager_url,
            "KUBECONFIG": str(self.kubeconfig),
        }


def postable_alerts(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The webhook's alerts as Alertmanager's ``POST /api/v2/alerts`` takes them.

    A zero ``endsAt`` is left out: posted as such it would mean "ended in year 1", i.e. resolved, while
    without one Alertmanager keeps the alert firing for its resolve timeout, as it does for a firing alert.
    """
    alerts = []
    for alert in payload["alerts"]:
        posted = {
            "labels": dict(alert["labels"]),
            "annotations": dict(alert.get("annotations") or {}),
            "startsAt": alert["startsAt"],
            "generatorURL": alert.get("generatorURL", ""),
        }
        ends = alert.get("endsAt")
        if ends and not ends.startswith(ZERO_TIME_YEAR):
            posted["endsAt"] = ends
        alerts.append(posted)
    return alerts


async def _start_prometheus(metrics: str, tsdb: Path) -> PrometheusServer:
    await asyncio.to_thread(backfill, metrics, tsdb)
    return await asyncio.to_thread(PrometheusServer(tsdb).start)


async def _start_alertmanager(directory: Path, alerts: list[dict[str, Any]]) -> AlertmanagerServer:
    server = await asyncio.to_thread(AlertmanagerServer(directory).start)
    try:
        await asyncio.to_thread(server.post_alerts, alerts)
    except BaseException:
        await asyncio.to_thread(server.stop)
        raise
    return server


@contextlib.asynccontextmanager
async def backends(scenario: Scenario, workdir: Path) -> AsyncIterator[Backends]:
    """Every back-end of the (shifted) ``scenario`` on free loopback ports; state and logs under ``workdir``."""
    async with contextlib.AsyncExitStack() as stack:
        # The two real servers start in threads, side by side; the stand-ins live in this event loop.
        started = await asyncio.gather(
            _start_prometheus(scenario.metrics, workdir / "tsdb"),
            _start_alertmanager(workdir / "alertmanager", postable_alerts(scenario.alert)),
            return_exceptions=True,
        )
        for server in started:
            if isinstance(server, PrometheusServer | AlertmanagerServer):
                stack.push_async_callback(asyncio.to_thread, server.stop)
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        prometheus, alertmanager = started
        assert isinstance(prometheus, PrometheusServer) and isinstance(alertmanager, AlertmanagerServer)
        loki = await stack.enter_async_context(LokiStandIn(streams=scenario.logs))
        kube = await stack.enter_async_context(kube_api(workdir, scenario.kubernetes))
        yield Backends(
            prometheus_url=prometheus.url,
            loki_url=loki.url,
            alertmanager_url=alertmanager.url,
            kubeconfig=kube.kubeconfig,
        )
