"""PrometheusActivities against a real Prometheus 2.x server (Debian's package) with backfilled samples.

Only the cases a real server cannot produce (503, a hung server) use a small aiohttp stand-in that answers
with Prometheus' documented error envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web
from temporalio.exceptions import ApplicationError

from activities.errors import BAD_QUERY, SOURCE_NOT_CONFIGURED, SOURCE_UNAVAILABLE
from activities.prometheus import PrometheusActivities
from models.incident import PromQueryRequest, PromSeries
from tests.fixtures.http_stand_in import Handler, one_route_server
from tests.fixtures.prometheus import (
    PrometheusNotInstalled,
    PrometheusServer,
    free_port,
    gauge_openmetrics,
    require_prometheus,
    start_with_samples,
)

FOOD_SEARCH = {"__name__": "app_error_ratio", "namespace": "food", "service": "search"}
ALERT_FOOD_SEARCH = {
    "alertname": "HighErrorRate",
    "namespace": "food",
    "service": "search",
    "severity": "critical",
}
ALERT_EXPR = "app_error_ratio > 0.05"


def _every_minute(first_age_s: int, last_age_s: int, value: float) -> list[tuple[float, float]]:
    """Samples once a minute from ``first_age_s`` seconds ago down to ``last_age_s`` seconds ago."""
    return [(float(age), value) for age in range(first_age_s, last_age_s - 1, -60)]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    missing = None
    try:
        require_prometheus()
    except PrometheusNotInstalled as exc:
        missing = str(exc)
    if missing:  # outside the except block, so the report shows only the hint
        pytest.fail(missing, pytrace=False)
    now = time.time()
    # The newest samples are 30 s old: well inside the 5 m lookback of an instant query at "now".
    family = gauge_openmetrics(
        "app_error_ratio",
        [
            # Failing for the last ten minutes: the incident.
            ({"namespace": "food", "service": "search"}, _every_minute(630, 30, 0.35)),
            # Healthy all along.
            ({"namespace": "shop", "service": "cart"}, _every_minute(630, 30, 0.01)),
            # Failed, then recovered: high until ~6 minutes ago, low since.
            ({"namespace": "pay", "service": "checkout"}, _every_minute(630, 390, 0.40)),
            ({"namespace": "pay", "service": "checkout"}, _every_minute(330, 30, 0.02)),
        ],
        now=now,
    )
    server = start_with_samples(tmp_path_factory.mktemp("prometheus") / "tsdb", [family])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def stand_in(handler: Handler) -> contextlib.AbstractAsyncContextManager[str]:
    """A local HTTP server answering /api/v1/query with ``handler``; yields its base URL."""
    return one_route_server("/api/v1/query", handler)


async def _raw_error(http: aiohttp.ClientSession, url: str, expr: str) -> tuple[int, dict]:
    async with http.post(f"{url}/api/v1/query", data={"query": expr}) as response:
        return response.status, await response.json()


# --- instant_query against the real server ---------------------------------------------------------


async def test_alert_expression_returns_only_the_failing_series(
    prometheus: PrometheusServer, http: aiohttp.ClientSession
) -> None:
    before = datetime.now(UTC)
    evaluated_at, series = await PrometheusActivities(prometheus.url, http).instant_query(ALERT_EXPR)

    assert series == [PromSeries(labels=FOOD_SEARCH, value=0.35)]
    assert evaluated_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= evaluated_at <= datetime.now(UTC) + timedelta(seconds=1)


async def test_every_series_is_returned_with_its_latest_value(
    prometheus: PrometheusServer, http: aiohttp.ClientSession
) -> None:
    _, series = await PrometheusActivities(prometheus.url + "/", http).instant_query("app_error_ratio")

    values = {(s.labels["namespace"], s.labels["service"]): s.value for s in series}
    assert values == {("food", "search"): 0.35, ("shop", "cart"): 0.01, ("pay", "checkout"): 0.02}


async def test_scalar_result_is_one_series_without_labels(
    prometheus: PrometheusServer, http: aiohttp.ClientSession
) -> None:
    expr = "scalar(count(app_error_ratio > 0.05))"  # resultType "scalar"
    _, series = await PrometheusActivities(prometheus.url, http).instant_query(expr)

    assert series == [PromSeries(labels={}, value=1.0)]


# --- query_alert_expression -------------------------------------------------------------------------


async def test_alert_labels_keep_the_incidents_series(
    prometheus: PrometheusServer, http: aiohttp.ClientSession
) -> None:
    result = await PrometheusActivities(prometheus.url, http).query_alert_expression(
        PromQueryRequest(expr=ALERT_EXPR, alert_labels=[ALERT_FOOD_SEARCH])
    )

    assert result.expr == ALERT_EXPR
    assert result.series == [PromSeries(labels=FOOD_SEARCH, value=0.35)]
    assert result.total_series == 1


async def test_alert_labels_of_another_namespace_match_nothing(
    prometheus: PrometheusServer, http: aiohttp.ClientSession
) -> None:
    other = {**ALERT_FOOD_SEARCH, "namespace": "shop", "service": "cart"}
    result = await PrometheusActivities(prometheus.url, http).query_alert_expression(
        PromQueryRequest(expr=ALERT_EXPR, alert_labels=[other])
    )

    assert result.series == []
    assert result.total_series == 1


async def test_without_alert_labels_every_series_counts(
    prometheus: PrometheusServer, http: aiohttp.ClientSession
) -> None:
    result = await PrometheusActivities(prometheus.url, http).query_alert_expression(
        PromQueryRequest(expr="app_error_ratio > 0.015")
    )

    assert sorted(s.labels["namespace"] for s in result.series) == ["food", "pay"]
    assert result.total_series == 2


@pytest.mark.parametrize(
    "expr",
    [
        'app_error_ratio{namespace="pay"} > 0.05',  # was above the threshold six minutes ago, not now
        "app_error_ratio > 0.5",
        'app_error_ratio{namespace="no-such-namespace"}',
        "no_such_metric",
    ],
)
async def test_nothing_matching_is_an_empty_result(
    prometheus: PrometheusServer, http: aiohttp.ClientSession, expr: str
) -> None:
    result = await PrometheusActivities(prometheus.url, http).query_alert_expression(
        PromQueryRequest(expr=expr, alert_labels=[ALERT_FOOD_SEARCH])
    )

    assert result.series == []
    assert result.total_series == 0


# --- errors -----------------------------------------------------------------------------------------


async def test_syntax_error_is_a_non_retryable_bad_query(
    prometheus: PrometheusServer, http: aiohttp.ClientSession
) -> None:
    expr = "sum(rate("
    status, envelope = await _raw_error(http, prometheus.url, expr)
    assert status == 400
    assert envelope["status"] == "error"

    with pytest.raises(ApplicationError) as caught:
        await PrometheusActivities(prometheus.url, http).query_alert_expression(PromQueryRequest(expr=expr))

    assert caught.value.type == BAD_QUERY
    assert caught.value.non_retryable is True
    assert envelope["error"] in caught.value.message
    assert "parse error" in caught.value.message
    assert "bad_data" in caught.value.message


async def test_execution_error_is_a_non_retryable_bad_query(
    prometheus: PrometheusServer, http: aiohttp.ClientSession
) -> None:
    # Parses, but fails when evaluated: both sides have several series for the empty match group (422).
    expr = "app_error_ratio * on() app_error_ratio"
    status, envelope = await _raw_error(http, prometheus.url, expr)
    assert status == 422
    assert envelope["errorType"] == "execution"

    with pytest.raises(ApplicationError) as caught:
        await PrometheusActivities(prometheus.url, http).instant_query(expr)

    assert caught.value.type == BAD_QUERY
    assert caught.value.non_retryable is True
    assert envelope["error"] in caught.value.message


@pytest.mark.parametrize("expr", ["app_error_ratio[5m]", '"just a string"'])
async def test_result_that_is_not_an_instant_vector_is_a_bad_query(
    prometheus: PrometheusServer, http: aiohttp.ClientSession, expr: str
) -> None:
    with pytest.raises(ApplicationError) as caught:
        await PrometheusActivities(prometheus.url, http).instant_query(expr)

    assert caught.value.type == BAD_QUERY
    assert caught.value.non_retryable is True
    assert "instant vector" in caught.value.message


async def test_no_base_url_is_source_not_configured(http: aiohttp.ClientSession) -> None:
    with pytest.raises(ApplicationError) as caught:
        await PrometheusActivities(None, http).query_alert_expression(PromQueryRequest(expr=ALERT_EXPR))

    assert caught.value.type == SOURCE_NOT_CONFIGURED
    assert caught.value.non_retryable is True
    assert "PROMETHEUS_URL" in caught.value.message


async def test_closed_port_is_a_retryable_source_unavailable(http: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    with pytest.raises(ApplicationError) as caught:
        await PrometheusActivities(url, http).query_alert_expression(PromQueryRequest(expr=ALERT_EXPR))

    assert caught.value.type == SOURCE_UNAVAILABLE
    assert caught.value.non_retryable is False
    assert url in caught.value.message


async def test_503_error_envelope_is_a_retryable_source_unavailable(http: aiohttp.ClientSession) -> None:
    # A real Prometheus answers 503 only while it starts up or is overloaded; this stand-in sends the
    # documented envelope of that answer.
    envelope = {"status": "error", "errorType": "unavailable", "error": "TSDB not ready yet"}
    received: list[str] = []

    async def unavailable(request: web.Request) -> web.Response:
        received.append(str((await request.post()).get("query", "")))
        return web.Response(status=503, text=json.dumps(envelope), content_type="application/json")

    async with stand_in(unavailable) as url:
        with pytest.raises(ApplicationError) as caught:
            await PrometheusActivities(url, http).query_alert_expression(PromQueryRequest(expr=ALERT_EXPR))

    assert received == [ALERT_EXPR]
    assert caught.value.type == SOURCE_UNAVAILABLE
    assert caught.value.non_retryable is False
    assert "TSDB not ready yet" in caught.value.message
    assert "503" in caught.value.message
    assert "unavailable" in caught.value.message


async def test_non_json_gateway_error_is_a_retryable_source_unavailable(http: aiohttp.ClientSession) -> None:
    # What a reverse proxy in front of Prometheus sends when Prometheus is down.
    async def bad_gateway(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>502 Bad Gateway</html>", content_type="text/html")

    async with stand_in(bad_gateway) as url:
        with pytest.raises(ApplicationError) as caught:
            await PrometheusActivities(url, http).instant_query(ALERT_EXPR)

    assert caught.value.type == SOURCE_UNAVAILABLE
    assert caught.value.non_retryable is False
    assert "HTTP 502" in caught.value.message


async def test_timeout_is_a_retryable_source_unavailable(http: aiohttp.ClientSession) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), timeout=10)
        return web.Response(status=200, text="{}", content_type="application/json")

    async with stand_in(hang) as url:
        try:
            with pytest.raises(ApplicationError) as caught:
                await PrometheusActivities(url, http, timeout_s=0.2).instant_query(ALERT_EXPR)
        finally:
            release.set()

    assert caught.value.type == SOURCE_UNAVAILABLE
    assert caught.value.non_retryable is False
    assert "Timeout" in caught.value.message


async def test_a_url_that_is_not_a_prometheus_api_is_a_non_retryable_misconfiguration(
    prometheus: PrometheusServer,
) -> None:
    async with aiohttp.ClientSession() as session:
        activities = PrometheusActivities(f"{prometheus.url}/not-prometheus", session)
        with pytest.raises(ApplicationError) as info:
            await activities.instant_query("up")
    assert info.value.type == "SourceMisconfigured"
    assert info.value.non_retryable


@pytest.mark.parametrize("status", [401, 403])
async def test_an_auth_proxy_refusal_is_a_non_retryable_forbidden(http: aiohttp.ClientSession, status: int) -> None:
    # What an OAuth/basic-auth proxy in front of Prometheus answers to a caller without credentials.
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=status, text="Unauthorized", content_type="text/plain")

    async with stand_in(refuse) as url:
        with pytest.raises(ApplicationError) as caught:
            await PrometheusActivities(url, http).query_alert_expression(PromQueryRequest(expr=ALERT_EXPR))
    assert caught.value.type == "SourceForbidden"
    assert caught.value.non_retryable is True
    assert f"HTTP {status}" in caught.value.message
