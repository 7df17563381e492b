"""Prometheus HTTP API (any Prometheus-compatible TSDB): the alert's own expression, and metric evidence.

Errors follow Prometheus' envelope (``{"status": "error", "errorType", "error"}``): 400 ``bad_data`` and 422
``execution`` fail the same way on a retry (non-retryable ``BadQuery``); 503, other 5xx, timeouts and refused
connections may not (retryable ``SourceUnavailable``); 401/403 (an auth proxy in front) is ``SourceForbidden``
and a 404 means the URL is not a Prometheus API, both non-retryable.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import (
    BAD_QUERY,
    SOURCE_FORBIDDEN,
    SOURCE_MISCONFIGURED,
    SOURCE_UNAVAILABLE,
    not_configured,
)
from activities.http_body import read_capped
from analysis.findings import Series, conditions_of, find_changes, rank_findings, set_latest
from analysis.queries import (
    CLASSIC_REQUESTS,
    ConditionQuery,
    MetricQuery,
    RedConvention,
    cluster_queries,
    condition_queries,
    pod_owner_queries,
    red_discovery,
    red_queries,
    runbook_queries,
    saturation_queries,
)
from models.evidence import EvidenceRequest, MetricEvidence, SeriesChange
from models.incident import PromQueryRequest, PromQueryResult, PromSeries
from triage.promql import series_of_alerts
from triage.runbooks import Runbook

log = structlog.get_logger(__name__)

# What one evidence pass may cost: a bounded number of points per series, of series per query, of bytes per
# answer, of queries in flight, and of findings handed on.
MAX_POINTS = 240
MIN_STEP_S = 15.0
MAX_SERIES_PER_QUERY = 300
MAX_RESPONSE_BYTES = 20 * 1024 * 1024
CONCURRENT_QUERIES = 4
MAX_FINDINGS = 25


class PrometheusActivities:
    """Holds one HTTP session for the worker's lifetime; constructed with the base URL (None: not configured)."""

    def __init__(
        self,
        base_url: str | None,
        session: aiohttp.ClientSession,
        timeout_s: float = 10.0,
        runbooks: Sequence[Runbook] = (),
    ) -> None:
        self._base_url = base_url.rstrip("/") if base_url else None
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._runbook_queries = {runbook.id: runbook.queries for runbook in runbooks}

    async def _call(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        """POST a query to the API and return its ``data``, or raise the typed error its answer deserves."""
        if self._base_url is None:
            raise not_configured("Prometheus", "PROMETHEUS_URL")
        url = f"{self._base_url}{path}"
        try:
            async with self._session.post(url, data=form, timeout=self._timeout) as response:
                raw, too_large = await read_capped(response, MAX_RESPONSE_BYTES)
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ApplicationError(
                f"Prometheus at {self._base_url} unreachable: {type(exc).__name__}: {exc}",
                type=SOURCE_UNAVAILABLE,
            ) from exc
        if too_large:
            raise ApplicationError(
                f"Prometheus answer over {MAX_RESPONSE_BYTES} bytes for {form.get('query', '')[:200]}",
                type=BAD_QUERY,
                non_retryable=True,
            )
        body = _json_object(raw)
        if status == 200 and body and body.get("status") == "success":
            data = body.get("data")
            return data if isinstance(data, dict) else {}
        reason = (body or {}).get("error") or f"HTTP {status}"
        error_type = (body or {}).get("errorType", "")
        if status in (401, 403):
            raise ApplicationError(
                f"Prometheus at {self._base_url} refused the agent (HTTP {status}): {reason}",
                type=SOURCE_FORBIDDEN,
                non_retryable=True,
            )
        if status == 404:
            raise ApplicationError(
                f"{url} answered 404: PROMETHEUS_URL does not point at a Prometheus API",
                type=SOURCE_MISCONFIGURED,
                non_retryable=True,
            )
        if status in (400, 422):
            raise ApplicationError(
                f"Prometheus rejected the query ({error_type or status}): {reason}",
                type=BAD_QUERY,
                non_retryable=True,
            )
        raise ApplicationError(
            f"Prometheus answered {status} ({error_type or 'no error type'}): {reason}",
            type=SOURCE_UNAVAILABLE,
        )

    async def instant_query(self, expr: str) -> tuple[datetime, list[PromSeries]]:
        data = await self._call("/api/v1/query", {"query": expr})
        return datetime.now(UTC), _vector(data)

    async def range_query(self, expr: str, start: datetime, end: datetime, step_s: float) -> list[Series]:
        data = await self._call(
            "/api/v1/query_range",
            {
                "query": expr,
                "start": f"{start.timestamp():.3f}",
                "end": f"{end.timestamp():.3f}",
                "step": f"{step_s:g}",
            },
        )
        if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise ApplicationError(
                f"Prometheus returned {data.get('resultType')!r}, expected a range matrix",
                type=BAD_QUERY,
                non_retryable=True,
            )
        return [
            Series(
                labels=dict(item.get("metric", {})),
                timestamps=[float(point[0]) for point in item.get("values", [])],
                values=[float(point[1]) for point in item.get("values", [])],
            )
            for item in data["result"][:MAX_SERIES_PER_QUERY]
        ]

    @activity.defn
    async def query_alert_expression(self, request: PromQueryRequest) -> PromQueryResult:
        """Evaluate the alert's own expression now; keep only the series that belong to the incident."""
        evaluated_at, series = await self.instant_query(request.expr)
        ours = series
        if request.alert_labels:
            mine = series_of_alerts([s.labels for s in series], request.alert_labels)
            ours = [s for s in series if s.labels in mine]
        log.info("prometheus_query", expr=request.expr, series=len(series), matching=len(ours))
        return PromQueryResult(expr=request.expr, evaluated_at=evaluated_at, series=ours, total_series=len(series))

    @activity.defn
    async def gather_metric_evidence(self, request: EvidenceRequest) -> MetricEvidence:
        """RED and saturation of the namespace's workloads, and shared infrastructure, searched for changes."""
        evidence = MetricEvidence()
        conventions, pod_owners = await asyncio.gather(
            self._red_conventions(request.namespace), self._pod_owners(request.namespace)
        )
        evidence.pod_owners = pod_owners
        evidence.red_convention = _dominant(conventions)
        if not conventions:
            evidence.notes.append(f"no HTTP request metrics in namespace {request.namespace}")
        queries = [
            q for convention in sorted(set(conventions.values())) for q in red_queries(request.namespace, convention)
        ]
        queries += saturation_queries(request.namespace) + cluster_queries()
        queries += runbook_queries(
            self._runbook_queries.get(request.runbook or "", []), request.namespace, request.workload, request.pod
        )
        start = request.onset - timedelta(seconds=request.baseline_s)
        end = request.at
        step = max(MIN_STEP_S, (end - start).total_seconds() / MAX_POINTS)
        limit = asyncio.Semaphore(CONCURRENT_QUERIES)

        async def run(query: MetricQuery) -> list[Series]:
            async with limit:
                return await self.range_query(query.expr, start, end, step)

        async def instant(expr: str) -> list[PromSeries]:
            async with limit:
                return (await self.instant_query(expr))[1]

        async def check(query: ConditionQuery) -> list[PromSeries]:
            return await instant(query.expr)

        checks = condition_queries(request.namespace)
        answers, states = await asyncio.gather(
            asyncio.gather(*(run(query) for query in queries), return_exceptions=True),
            asyncio.gather(*(check(query) for query in checks), return_exceptions=True),
        )
        for condition, state in zip(checks, states, strict=True):
            if isinstance(state, BaseException):
                _bad_query_or_raise(state)
                evidence.notes.append(f"{condition.metric}: {state}")
                continue
            evidence.conditions += conditions_of(condition, [(s.labels, s.value) for s in state])[:MAX_FINDINGS]
        changed: list[tuple[MetricQuery, list[SeriesChange]]] = []
        for query, answer in zip(queries, answers, strict=True):
            if isinstance(answer, BaseException):
                _bad_query_or_raise(answer)
                evidence.notes.append(f"{query.metric}: {answer}")
                continue
            changed.append((query, find_changes(query, answer, onset=request.onset, pod_owners=pod_owners)))
        # Only a change needs its latest value: is it still going on, or already over?
        latest = [(query, found) for query, found in changed if found and query.now_expr]
        answers_now = await asyncio.gather(
            *(instant(query.now_expr or "") for query, _ in latest),
            return_exceptions=True,
        )
        findings = [finding for _, found in changed for finding in found]
        for (query, found), answer_now in zip(latest, answers_now, strict=True):
            if isinstance(answer_now, BaseException):
                _bad_query_or_raise(answer_now)
                evidence.notes.append(f"{query.metric} (now): {answer_now}")
                continue
            set_latest(found, query, [(s.labels, s.value) for s in answer_now], pod_owners)
        evidence.queries = len(queries) + len(checks) + len(latest) + 3
        evidence.findings = rank_findings(findings, MAX_FINDINGS)
        log.info(
            "metric_evidence",
            queries=evidence.queries,
            findings=len(evidence.findings),
            red_convention=evidence.red_convention,
        )
        return evidence

    async def _red_conventions(self, namespace: str) -> dict[str, RedConvention]:
        """service -> the request counter it exposes (classic wins when a service exposes both)."""
        _, series = await self.instant_query(red_discovery(namespace))
        found: dict[str, RedConvention] = {}
        for item in series:
            service = item.labels.get("service", "")
            convention: RedConvention = "classic" if item.labels.get("__name__") == CLASSIC_REQUESTS else "otel"
            if found.get(service) != "classic":
                found[service] = convention
        return found

    async def _pod_owners(self, namespace: str) -> dict[str, str]:
        """pod -> Deployment, through kube-state-metrics' ownership series."""
        pod_query, replicaset_query = pod_owner_queries(namespace)
        (_, pods), (_, replicasets) = await asyncio.gather(
            self.instant_query(pod_query), self.instant_query(replicaset_query)
        )
        deployment_of = {s.labels.get("replicaset", ""): s.labels.get("owner_name", "") for s in replicasets}
        return {
            s.labels["pod"]: deployment_of[s.labels.get("owner_name", "")]
            for s in pods
            if "pod" in s.labels and deployment_of.get(s.labels.get("owner_name", ""))
        }


def _bad_query_or_raise(error: BaseException) -> None:
    """One rejected query is a note; anything else means the source failed: a gap (or a retry), not half a truth."""
    if not isinstance(error, ApplicationError) or error.type != BAD_QUERY:
        raise error


def _dominant(conventions: dict[str, RedConvention]) -> RedConvention | None:
    """The convention most of the namespace's services speak (reported; queries run for every one found)."""
    values = list(conventions.values())
    if not values:
        return None
    return "classic" if values.count("classic") >= values.count("otel") else "otel"


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _vector(data: dict[str, Any]) -> list[PromSeries]:
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar" and isinstance(result, list) and len(result) == 2:
        return [PromSeries(labels={}, value=float(result[1]))]
    if result_type != "vector" or not isinstance(result, list):
        raise ApplicationError(
            f"Prometheus returned {result_type!r}, expected an instant vector",
            type=BAD_QUERY,
            non_retryable=True,
        )
    return [PromSeries(labels=dict(item.get("metric", {})), value=float(item["value"][1])) for item in result]
