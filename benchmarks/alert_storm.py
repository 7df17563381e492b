"""Alert storm: the front door under an HA Alertmanager's storm, against the raw Temporal client; worker memory
with many incidents parked awaiting approval.

    .venv/bin/python -m benchmarks.alert_storm [--groups 100] [--copies 3] [--parked 1000]

1. A Temporal dev server with a SQLite file (as ``make run``). Baseline: the raw client's ``start_workflow``
   rate, ``--groups`` x 2 starts with the same concurrency the storm uses.
2. ``starter.py serve`` as its own process. The storm: every group's notification delivered ``--copies`` times
   at once with identical bodies (the replicas of an HA Alertmanager), then every group's later notification,
   which adds a second alert, likewise. Measured: the share of 202 answers, deliveries per second over the
   storm's wall time (and its ratio to the baseline), the front door's p50/p99 latency.
3. ``worker.py`` is started after the storm and the outcome is checked: exactly ``--groups`` incidents, each with
   both of its alerts (nothing lost), and Temporal writes per incident (signal events in its history: 2 when
   identical copies were coalesced).
4. A fresh in-memory dev server, the Kubernetes emulator holding a bad deploy, and ``worker.py``: ``--parked``
   incidents are opened and diagnosed until each waits for approval; the worker's RSS is read from /proc, idle
   and with every incident parked.

Prints figures and ratios; asserts nothing (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from config.process import exit_now
from config.settings import Settings
from frontdoor.gateway import IncidentGateway
from models.incident import IncidentInput, IncidentState
from tests.e2e.stack import bad_deploy_cluster
from tests.fixtures.kube import kube_api
from tests.fixtures.prometheus import free_port
from tests.harness import alert, notification
from triage.identity import incident_workflow_id
from workflows.incident import IncidentWorkflow
from workflows.search_attributes import ALL_KEYS

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"alertname": "HighErrorRate", "namespace": "food", "service": "search", "severity": "critical"}


def webhook(group: str, alerts: int, starts_at: datetime) -> dict[str, Any]:
    """An Alertmanager v4 notification of ``group`` with its first ``alerts`` alerts (distinct instances)."""
    items = []
    for index in range(alerts):
        labels = {**LABELS, "instance": f"search-{index}"}
        items.append(
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "High 5xx error rate on search"},
                "startsAt": (starts_at + timedelta(seconds=index)).isoformat().replace("+00:00", "Z"),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": hashlib.sha256(f"{group}/{index}".encode()).hexdigest()[:16],
            }
        )
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="HighErrorRate", storm="{group}"}}',
        "status": "firing",
        "receiver": "incident-agent",
        "groupLabels": {"alertname": "HighErrorRate", "storm": group},
        "commonLabels": LABELS,
        "commonAnnotations": {"summary": "High 5xx error rate on search"},
        "externalURL": "http://alertmanager:9093",
        "alerts": items,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered)) - 1))]


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, in MiB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def process(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        # argv is this interpreter and one of the project's own scripts, never anything from input.
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}")


async def bounded(calls: list[Callable[[], Awaitable[Any]]], concurrency: int) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


async def baseline_starts(client: Client, count: int, concurrency: int) -> float:
    """The raw client's start_workflow rate (starts/s) on this server, nobody polling the task queue."""
    run = f"baseline-{time.time_ns()}"

    def start(i: int) -> Callable[[], Awaitable[Any]]:
        return lambda: client.start_workflow(IncidentWorkflow.run, IncidentInput(), id=f"{run}-{i}", task_queue=run)

    await bounded([start(-1 - i) for i in range(20)], concurrency)  # warm up: the storm meets a warm server too
    started = time.monotonic()
    await bounded([start(i) for i in range(count)], concurrency)
    return count / (time.monotonic() - started)


async def storm(front: str, groups: int, copies: int, concurrency: int) -> tuple[list[int], list[float], float]:
    """Every group's first notification ``copies`` times at once, then every group's second; statuses,
    latencies and wall time."""
    starts_at = datetime.now(UTC) - timedelta(minutes=2)
    statuses: list[int] = []
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def deliver(body: dict[str, Any]) -> None:
            started = time.monotonic()
            async with session.post(f"{front}/alerts/alertmanager", json=body) as response:
                await response.read()
                statuses.append(response.status)
            latencies.append(time.monotonic() - started)

        began = time.monotonic()
        for alerts in (1, 2):
            bodies = [webhook(f"g{g}", alerts, starts_at) for g in range(groups)]
            # The copies of one notification go out together, as the replicas deliver it.
            await asyncio.gather(*(deliver(body) for body in bodies for _ in range(copies)))
        wall = time.monotonic() - began
    return statuses, latencies, wall


async def check_outcome(client: Client, groups: int) -> tuple[int, int, float]:
    """(incidents found, incidents with every alert, mean signal writes per incident)."""
    found = complete = 0
    writes: list[int] = []
    for g in range(groups):
        workflow_id = incident_workflow_id(f'{{}}:{{alertname="HighErrorRate", storm="g{g}"}}')
        handle = client.get_workflow_handle(workflow_id)
        try:
            state = await handle.query("state", result_type=IncidentState)
        except RPCError as err:
            print(f"  lost: {workflow_id}: {err}")
            continue
        found += 1
        complete += len(state.alerts) == 2
        history = await handle.fetch_history()
        signalled = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        writes.append(sum(1 for event in history.events if event.event_type == signalled))
    return found, complete, statistics.fmean(writes) if writes else 0.0


async def parked_rss(parked: int, wave: int, env: dict[str, str], workdir: Path) -> None:
    temporal = shutil.which("temporal", path=str(Path(sys.executable).parent)) or "temporal"
    server = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal,
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
    )
    starts_at = datetime.now(UTC) - timedelta(minutes=2)
    try:
        async with kube_api(workdir, bad_deploy_cluster(starts_at - timedelta(minutes=4))) as kube:
            worker_env = {
                **env,
                "TEMPORAL_ADDRESS": server.client.service_client.config.target_host,
                "KUBECONFIG": str(kube.kubeconfig),
                "APPROVAL_TIMEOUT": "24h",
            }
            worker = process([sys.executable, "worker.py"], worker_env, workdir / "parked-worker.log")
            try:
                await asyncio.sleep(5)
                idle, _ = rss_mib(worker.pid)
                gateway = IncidentGateway(server.client, Settings(_env_file=None))
                opened = time.monotonic()

                def opening(i: int) -> Callable[[], Awaitable[Any]]:
                    group = notification(alert(f"{i:016x}", starts_at=starts_at), group_key=f"{{}}:{{parked={i}}}")
                    return lambda: gateway.deliver(group)

                async def settled(count: int) -> bool:
                    waiting = await server.client.count_workflows("IncidentPhase = 'awaiting_approval'")
                    escalated = await server.client.count_workflows("IncidentPhase = 'escalated'")
                    return waiting.count + escalated.count >= count

                # In waves: a thousand incidents investigating at once would time out their evidence requests
                # against the in-process emulator and escalate, which is not what is measured here.
                for first in range(0, parked, wave):
                    last = min(parked, first + wave)
                    await bounded([opening(i) for i in range(first, last)], 32)
                    await until(functools.partial(settled, last), 600, f"{last} incidents parked")
                took = time.monotonic() - opened
                await asyncio.sleep(2)
                now, peak = rss_mib(worker.pid)
                waiting = (await server.client.count_workflows("IncidentPhase = 'awaiting_approval'")).count
                print(
                    f"parked: {parked} incidents opened in waves of {wave}, {waiting} awaiting approval "
                    f"(the rest escalated), after {took:.0f} s ({parked / took:.1f}/s)"
                )
                print(f"worker RSS: idle {idle:.0f} MiB; parked {now:.0f} MiB (peak {peak:.0f} MiB);")
                print(f"  {(now - idle) * 1024 / parked:.0f} KiB per parked incident")
            finally:
                stop(worker)
    finally:
        await server.shutdown()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=60, help="client connections (and baseline in-flight)")
    parser.add_argument("--parked", type=int, default=1000, help="0 skips the memory measurement")
    parser.add_argument("--wave", type=int, default=50, help="parked incidents opened at a time")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")

    workdir = Path(tempfile.mkdtemp(prefix="alert-storm-"))
    env = {**os.environ, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "FEEDBACK_WINDOW": "0"}
    temporal = shutil.which("temporal", path=str(Path(sys.executable).parent)) or "temporal"
    server = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal,
        dev_server_database_filename=str(workdir / "temporal.db"),
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
    )
    try:
        client = server.client
        address = client.service_client.config.target_host
        raw = await baseline_starts(client, args.groups * 2, args.concurrency)
        print(f"baseline: raw client start_workflow {raw:.1f} starts/s (SQLite dev server)")

        port = free_port()
        front_env = {**env, "TEMPORAL_ADDRESS": address, "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(port)}
        front = process([sys.executable, "starter.py", "serve"], front_env, workdir / "front.log")
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:

                async def ready() -> bool:
                    try:
                        async with session.get(f"{url}/readyz") as response:
                            return response.status == 200
                    except aiohttp.ClientError:
                        return False

                await until(ready, 60, "the front door")
            statuses, latencies, wall = await storm(url, args.groups, args.copies, args.concurrency)
        finally:
            stop(front)
        deliveries = len(statuses)
        accepted = sum(1 for status in statuses if status == 202)
        rate = deliveries / wall
        print(
            f"storm: {deliveries} deliveries ({args.groups} groups x 2 notifications x {args.copies} copies) "
            f"in {wall:.2f} s: {rate:.1f} deliveries/s, {accepted}/{deliveries} answered 202"
        )
        print(f"  ratio to the raw client's start rate: {rate / raw:.2f}x")
        print(
            f"  front door latency: p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms"
        )

        worker = process([sys.executable, "worker.py"], {**env, "TEMPORAL_ADDRESS": address}, workdir / "worker.log")
        try:
            found, complete, writes = await check_outcome(client, args.groups)
        finally:
            stop(worker)
        listed = await client.count_workflows("WorkflowType = 'IncidentWorkflow' AND TaskQueue = 'incidents'")
        print(
            f"outcome: {found} incidents found of {args.groups} ({listed.count} incident workflows listed), "
            f"{complete} with every alert; {writes:.2f} signal writes per incident "
            f"(2 = one per notification: identical copies coalesced)"
        )
    finally:
        await server.shutdown()

    if args.parked:
        await parked_rss(args.parked, args.wave, env, workdir)
    print(f"logs: {workdir}")


if __name__ == "__main__":
    asyncio.run(main())
    exit_now(0)  # past the Temporal runtime's threads, which can abort a normal interpreter shutdown
