"""Evidence gathering: parallel wall time against the slowest source, and the evidence size budget.

    .venv/bin/python -m benchmarks.evidence_gathering

1. One incident on a real Temporal dev server whose four evidence sources answer after injected latencies
   (0.2 s, 0.5 s, 1 s, 2 s). Measured: how long the investigating phase took, divided by the slowest source
   (target <= 1.2), and by the sum of the latencies (what asking one source after another would cost).
2. A namespace of 50 workloads with 100k log lines: the real Loki adapter mines the lines (from the test
   stand-in), the other sources return everything such a namespace has; the evidence handed to diagnosis is
   measured against its byte budget.
Prints figures; asserts nothing (a benchmark, not a test).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.loki import LokiActivities
from activities.triage import TriageActivities
from analysis.budget import DEFAULT_BUDGET_BYTES, bound_evidence
from analysis.evidence import fold_evidence
from config.settings import Settings
from frontdoor.gateway import IncidentGateway
from models.evidence import (
    Evidence,
    EvidenceRequest,
    KubeEvent,
    KubernetesEvidence,
    LogEvidence,
    MetricEvidence,
    PodStatus,
    RelatedAlert,
    RelatedAlerts,
    Rollout,
    SeriesChange,
)
from models.incident import IncidentSettings, IncidentState, Notification, PromQueryRequest, PromQueryResult
from tests.fixtures.loki import LokiStandIn
from tests.harness import notification
from triage.runbooks import load_runbooks
from workflows.incident import IncidentWorkflow
from workflows.search_attributes import ALL_KEYS

RUNBOOKS = load_runbooks(Path(__file__).resolve().parents[1] / "runbooks")
LATENCIES = {"prometheus": 0.2, "loki": 0.5, "kubernetes": 1.0, "alertmanager": 2.0}


class SlowSources:
    @activity.defn(name="gather_metric_evidence")
    async def metrics(self, request: EvidenceRequest) -> MetricEvidence:
        await asyncio.sleep(LATENCIES["prometheus"])
        return MetricEvidence()

    @activity.defn(name="gather_log_evidence")
    async def logs(self, request: EvidenceRequest) -> LogEvidence:
        await asyncio.sleep(LATENCIES["loki"])
        return LogEvidence(query="")

    @activity.defn(name="gather_kubernetes_evidence")
    async def kubernetes(self, request: EvidenceRequest) -> KubernetesEvidence:
        await asyncio.sleep(LATENCIES["kubernetes"])
        return KubernetesEvidence()

    @activity.defn(name="gather_related_alerts")
    async def related(self, request: EvidenceRequest) -> RelatedAlerts:
        await asyncio.sleep(LATENCIES["alertmanager"])
        return RelatedAlerts()

    @activity.defn(name="query_alert_expression")
    async def probe(self, request: PromQueryRequest) -> PromQueryResult:
        return PromQueryResult(expr=request.expr, evaluated_at=datetime.now(UTC), series=[], total_series=0)

    @activity.defn(name="notify")
    async def notify(self, notification: Notification) -> None:
        return None


async def investigating_seconds(env: WorkflowEnvironment) -> float:
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    sources = SlowSources()
    triage = TriageActivities(RUNBOOKS)
    settings = Settings(_env_file=None, temporal_task_queue=task_queue)  # type: ignore[call-arg]
    gateway = IncidentGateway(env.client, settings, IncidentSettings())
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[IncidentWorkflow],
        activities=[
            triage.triage_alerts,
            triage.diagnose_incident,
            sources.metrics,
            sources.logs,
            sources.kubernetes,
            sources.related,
            sources.probe,
            sources.notify,
        ],
    ):
        delivery = await gateway.deliver(notification(group_key=task_queue))
        handle = env.client.get_workflow_handle(delivery.workflow_id)
        while True:
            state = await handle.query("state", result_type=IncidentState)
            phases = {event.data.get("to"): event.at for event in state.timeline if event.kind == "phase"}
            if "diagnosing" in phases:
                return (phases["diagnosing"] - phases["investigating"]).total_seconds()
            await asyncio.sleep(0.05)


def big_namespace(logs: LogEvidence) -> Evidence:
    now = datetime.now(UTC)
    workloads = [f"service-{index:02d}" for index in range(50)]
    metrics = MetricEvidence(
        findings=[
            SeriesChange(
                metric=metric,
                workload=name,
                labels={"namespace": "big", "service": name},
                query="q" * 300,
                baseline=0.01,
                recent=0.3,
                change=0.29,
                ratio=30.0,
                score=50.0,
                direction="up",
                onset=now,
                summary=f"{metric} of {name} rose from 0.01 to 0.3 at 12:00:00Z (robust z +50.0)",
            )
            for name in workloads
            for metric in ("error_ratio", "latency_p99", "cpu_usage", "restarts")
        ]
    )
    kubernetes = KubernetesEvidence(
        rollouts=[
            Rollout(
                namespace="big",
                deployment=name,
                revision=7,
                replicaset=f"{name}-6d5c9b8f7d",
                at=now,
                images=[f"{name}:v2"],
                previous_images=[f"{name}:v1"],
                changed=["image"],
                summary=f"revision 7 of {name}: image {name}:v1 -> {name}:v2",
            )
            for name in workloads
        ],
        pods=[
            PodStatus(namespace="big", name=f"{name}-6d5c9b8f7d-{i:05d}", workload=name, restarts=i)
            for name in workloads
            for i in range(3)
        ],
        events=[
            KubeEvent(namespace="big", kind="Pod", name=f"{name}-pod", reason="BackOff", message="x" * 300)
            for name in workloads
            for _ in range(4)
        ],
    )
    related = RelatedAlerts(
        alerts=[
            RelatedAlert(alertname=f"Alert{i}", labels={"namespace": "big", "service": workloads[i]}, state="active")
            for i in range(50)
        ]
    )
    return fold_evidence(Evidence(), metrics, logs, kubernetes, related)


VERBS = [
    "read",
    "write",
    "parse",
    "load",
    "send",
    "fetch",
    "store",
    "lock",
    "open",
    "close",
    "decode",
    "encode",
    "sign",
    "verify",
    "queue",
    "flush",
    "dial",
    "bind",
    "route",
    "cache",
]
NOUNS = [
    "order",
    "cart",
    "user",
    "token",
    "session",
    "invoice",
    "payment",
    "stock",
    "price",
    "image",
    "profile",
    "review",
    "ticket",
    "report",
    "config",
    "secret",
    "metric",
    "event",
    "batch",
    "index",
]


def log_lines(count: int) -> list[dict]:
    """``count`` error lines of 400 kinds (verb x noun), ids and codes varying within each kind."""
    now_ns = time.time_ns()
    values = [
        [
            str(now_ns - (count - i) * 30_000_000),
            f'level=error msg="cannot {VERBS[i % 20]} {NOUNS[i // 20 % 20]}" code={500 + i % 4} id={i:08x}',
        ]
        for i in range(count)
    ]
    return [{"stream": {"namespace": "big", "app": f"service-{i:02d}"}, "values": values[i::50]} for i in range(50)]


async def main() -> None:
    binary = shutil.which("temporal", path=str(Path(sys.executable).parent))
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=binary,
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
    )
    try:
        runs = [await investigating_seconds(env) for _ in range(3)]
    finally:
        await env.shutdown()
    slowest, total = max(LATENCIES.values()), sum(LATENCIES.values())
    best = min(runs)
    print(f"sources' injected latencies: {LATENCIES} (slowest {slowest:g} s, sum {total:g} s)")
    print(f"investigating phase, 3 runs: {', '.join(f'{r:.3f} s' for r in runs)}")
    print(f"wall / slowest source: {best / slowest:.3f} (target <= 1.2); wall / sequential sum: {best / total:.3f}")

    # A Loki whose max_entries_limit_per_query was raised to let one query return all 100k lines.
    async with (
        LokiStandIn(streams=log_lines(100_000), max_entries_limit=100_000) as loki,
        aiohttp.ClientSession() as session,
    ):
        request = EvidenceRequest(
            workflow_id="bench",
            alertname="HighErrorRate",
            namespace="big",
            workload="service-00",
            onset=datetime.now(UTC) - timedelta(minutes=20),
            at=datetime.now(UTC),
        )
        started = time.perf_counter()
        logs = await LokiActivities(loki.url, None, session, max_lines=100_000).gather_log_evidence(request)
        mined = time.perf_counter() - started
    evidence = big_namespace(logs)
    raw, bounded = len(evidence.model_dump_json()), bound_evidence(evidence)
    size = len(bounded.model_dump_json())
    print(f"100k log lines: {logs.lines} read and mined into {len(logs.templates)} templates in {mined:.2f} s")
    print(
        f"namespace of 50 workloads: evidence {raw} bytes before the budget, {size} after "
        f"(budget {DEFAULT_BUDGET_BYTES}; {size / DEFAULT_BUDGET_BYTES:.2f} of it); cut: {bounded.dropped}"
    )


if __name__ == "__main__":
    asyncio.run(main())
