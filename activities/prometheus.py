"""Prometheus HTTP API (any Prometheus-compatible TSDB): the instant query behind verification."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import BAD_QUERY, SOURCE_MISCONFIGURED, SOURCE_UNAVAILABLE, not_configured
from models.incident import PromQueryRequest, PromQueryResult, PromSeries
from triage.promql import series_of_alerts

log = structlog.get_logger(__name__)


class PrometheusError(ApplicationError):
    pass


class PrometheusActivities:
    """Holds one HTTP session for the worker's lifetime; constructed with the base URL (None: not configured)."""

    def __init__(self, base_url: str | None, session: aiohttp.ClientSession, timeout_s: float = 10.0) -> None:
        self._base_url = base_url.rstrip("/") if base_url else None
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def instant_query(self, expr: str) -> tuple[datetime, list[PromSeries]]:
        if self._base_url is None:
            raise not_configured("Prometheus", "PROMETHEUS_URL")
        url = f"{self._base_url}/api/v1/query"
        try:
            async with self._session.post(url, data={"query": expr}, timeout=self._timeout) as response:
                body = await _json_or_none(response)
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ApplicationError(
                f"Prometheus at {self._base_url} unreachable: {type(exc).__name__}: {exc}",
                type=SOURCE_UNAVAILABLE,
            ) from exc
        if status == 200 and body and body.get("status") == "success":
            return datetime.now(UTC), _vector(body.get("data", {}))
        reason = (body or {}).get("error") or f"HTTP {status}"
        error_type = (body or {}).get("errorType", "")
        # 400 bad_data and 422 execution errors will fail the same way again; 503/5xx and timeouts may not.
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


async def _json_or_none(response: aiohttp.ClientResponse) -> dict | None:
    try:
        body = await response.json(content_type=None)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _vector(data: dict) -> list[PromSeries]:
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
