"""Temporal worker: IncidentWorkflow, GovernorWorkflow and every activity. ``python worker.py``"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta

import aiohttp
import structlog
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from activities.alertmanager import AlertmanagerActivities
from activities.kubernetes import KubernetesActivities, load_kubernetes_client
from activities.llm import LLMActivities
from activities.logging_context import IncidentLogContext
from activities.loki import LokiActivities
from activities.memory import MemoryActivities
from activities.metrics import HISTOGRAM_BUCKETS
from activities.notify import Notifier
from activities.pagerduty import PagerDutyActivities
from activities.policy import PolicyActivities
from activities.prometheus import PrometheusActivities
from activities.remediation import RemediationActivities
from activities.slack import SlackNotifier
from activities.triage import TriageActivities
from config.logging import configure_logging
from config.process import exit_now
from config.settings import Settings, get_settings
from config.temporal import connect_with_retry, metrics_runtime
from remediation.policy import effective_dry_run, load_policy, policy_warnings
from triage.runbooks import load_runbooks
from workflows.governor import GovernorActivities, GovernorWorkflow
from workflows.incident import IncidentWorkflow
from workflows.search_attributes import SearchAttributesMissing, check_search_attributes

log = structlog.get_logger("worker")


def build_worker(client: Client, settings: Settings, session: aiohttp.ClientSession) -> Worker:
    """The worker with every workflow and activity; tests build it against their own servers."""
    runbooks = load_runbooks(settings.runbooks_dir)
    prometheus = PrometheusActivities(settings.prometheus_url, session, runbooks=runbooks)
    loki = LokiActivities(settings.loki_url, settings.loki_tenant, session)
    kubernetes = KubernetesActivities(load_kubernetes_client())
    alertmanager = AlertmanagerActivities(settings.alertmanager_url, session)
    llm = LLMActivities.from_settings(settings)
    triage = TriageActivities(runbooks)
    memory = MemoryActivities(client)
    notifier = Notifier(SlackNotifier.from_settings(settings))
    governor = GovernorActivities(client, settings.temporal_task_queue)
    policy = load_policy(settings.policy_file)  # a bad file stops the start, naming the key
    for warning in policy_warnings(policy):
        log.warning("policy", warning=warning)
    judge = PolicyActivities(policy, effective_dry_run(policy, settings.dry_run))
    executor = RemediationActivities(load_kubernetes_client())
    pagerduty = PagerDutyActivities.from_settings(settings, session)
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=[IncidentWorkflow, GovernorWorkflow],
        activities=[
            triage.triage_alerts,
            triage.diagnose_incident,
            memory.recall_incidents,
            prometheus.query_alert_expression,
            prometheus.gather_metric_evidence,
            loki.gather_log_evidence,
            kubernetes.gather_kubernetes_evidence,
            alertmanager.gather_related_alerts,
            llm.diagnose_with_llm,
            llm.summarize_incident,
            notifier.notify,
            governor.reserve_action,
            governor.report_action,
            governor.killswitch_state,
            judge.judge_plan,
            executor.execute_action,
            executor.undo_action,
            pagerduty.page,
        ],
        interceptors=[IncidentLogContext()],
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


def _runtime(settings: Settings) -> Runtime | None:
    """With METRICS_PORT, a runtime serving the SDK's and the agent's metrics; None keeps the SDK's default."""
    if settings.metrics_port is None:
        return None
    try:
        runtime = metrics_runtime(settings.metrics_port, buckets=HISTOGRAM_BUCKETS)
    except ValueError as exc:  # the port is taken, or not ours to bind: a scrape target that never answers
        log.error("metrics_endpoint_failed", port=settings.metrics_port, error=str(exc))
        raise SystemExit(f"worker not started: METRICS_PORT {settings.metrics_port}: {exc}") from None
    log.info("metrics_endpoint", url=f"http://0.0.0.0:{settings.metrics_port}/metrics")
    return runtime


async def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    load_runbooks(settings.runbooks_dir)  # fail fast, naming the bad file, before connecting anywhere
    client = await connect_with_retry(settings, runtime=_runtime(settings))
    try:
        if not await check_search_attributes(client, settings.temporal_namespace):
            log.warning("search_attributes_unchecked", reason="the server does not list search attributes")
    except SearchAttributesMissing as missing:
        # Every incident upserts them: without them each workflow task would fail, over and over.
        log.error("search_attributes_missing", missing=missing.missing, error=str(missing))
        raise SystemExit(f"worker not started: {missing}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with aiohttp.ClientSession() as session:
        worker = build_worker(client, settings, session)
        async with worker:
            log.info(
                "worker_started",
                task_queue=settings.temporal_task_queue,
                temporal=settings.temporal_address,
                prometheus=settings.prometheus_url or "not configured",
                loki=settings.loki_url or "not configured",
                alertmanager=settings.alertmanager_url or "not configured",
            )
            await stop.wait()
            log.info("worker_stopping")
    log.info("worker_stopped")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except SystemExit as refused:  # a start refused with its reason (search attributes, METRICS_PORT)
        # As the interpreter would report it, but without its finalization: see exit_now.
        code = refused.code
        if isinstance(code, str):
            print(code, file=sys.stderr)
        exit_now(code if isinstance(code, int) else 0 if code is None else 1)
    exit_now(0)
