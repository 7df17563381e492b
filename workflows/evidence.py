"""The investigating phase: every evidence source at once, each within its own time budget.

Runs in workflow context (deterministic: only activities touch the world). A source that is unset, down,
refusing or slow comes back as a gap with its reason; it never fails the incident.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.alertmanager import AlertmanagerActivities
    from activities.errors import (
        BAD_QUERY,
        SOURCE_FORBIDDEN,
        SOURCE_MISCONFIGURED,
        SOURCE_NOT_CONFIGURED,
    )
    from activities.kubernetes import KubernetesActivities
    from activities.loki import LokiActivities
    from activities.prometheus import PrometheusActivities
    from models.evidence import (
        EvidenceGap,
        EvidenceRequest,
        KubernetesEvidence,
        LogEvidence,
        MetricEvidence,
        RelatedAlerts,
    )
    from workflows.failures import failure_reason

T = TypeVar("T")

# Errors that a retry cannot fix: the source is unset, refuses us, is not what its URL says, or rejected the
# question. Anything else (5xx, timeouts, refused connections) is retried within the source's budget.
_FINAL = [SOURCE_NOT_CONFIGURED, SOURCE_FORBIDDEN, SOURCE_MISCONFIGURED, BAD_QUERY]


def _budget(attempt_s: float, total_s: float) -> dict[str, Any]:
    return {
        "start_to_close_timeout": timedelta(seconds=attempt_s),
        "schedule_to_close_timeout": timedelta(seconds=total_s),
        "retry_policy": RetryPolicy(
            initial_interval=timedelta(seconds=1),
            maximum_interval=timedelta(seconds=10),
            non_retryable_error_types=_FINAL,
        ),
    }


# Metrics run ~20 queries (4 at a time); logs mine two windows; Kubernetes lists a namespace; Alertmanager is
# one request. Each source's total budget bounds how long the incident waits for it.
METRICS_BUDGET = _budget(attempt_s=60, total_s=120)
LOGS_BUDGET = _budget(attempt_s=45, total_s=90)
KUBERNETES_BUDGET = _budget(attempt_s=45, total_s=90)
ALERTMANAGER_BUDGET = _budget(attempt_s=15, total_s=45)


@dataclass
class Gathered:
    metrics: MetricEvidence | None = None
    logs: LogEvidence | None = None
    kubernetes: KubernetesEvidence | None = None
    related: RelatedAlerts | None = None
    gaps: list[EvidenceGap] = field(default_factory=list)


async def gather_evidence(request: EvidenceRequest) -> Gathered:
    gathered = Gathered()

    async def attempt(source: str, call: Callable[[], Awaitable[T]]) -> T | None:
        try:
            return await call()
        except ActivityError as err:
            gathered.gaps.append(EvidenceGap(source=source, reason=failure_reason(err)))
            return None

    def run(method: Any, budget: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
        return lambda: workflow.execute_activity_method(method, request, **budget)

    metrics, logs, kubernetes, related = await asyncio.gather(
        attempt("prometheus", run(PrometheusActivities.gather_metric_evidence, METRICS_BUDGET)),
        attempt("loki", run(LokiActivities.gather_log_evidence, LOGS_BUDGET)),
        attempt("kubernetes", run(KubernetesActivities.gather_kubernetes_evidence, KUBERNETES_BUDGET)),
        attempt("alertmanager", run(AlertmanagerActivities.gather_related_alerts, ALERTMANAGER_BUDGET)),
    )
    gathered.metrics, gathered.logs, gathered.kubernetes, gathered.related = metrics, logs, kubernetes, related
    return gathered
