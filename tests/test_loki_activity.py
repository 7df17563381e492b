"""LokiActivities.gather_log_evidence against the Loki stand-in in tests/fixtures/loki.py.

The realistic data is an excerpt of a generated bad-deploy scenario (tests/payloads/loki_bad_deploy_food.json,
provenance inside the file); the rest is generated here. Expected numbers are counted from the data in the test,
with the test's own keyword list, never taken from the activity's code.
"""

from __future__ import annotations

import json
import socket
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from temporalio.exceptions import ApplicationError

from activities.errors import (
    BAD_QUERY,
    SOURCE_FORBIDDEN,
    SOURCE_MISCONFIGURED,
    SOURCE_NOT_CONFIGURED,
    SOURCE_UNAVAILABLE,
)
from activities.loki import LokiActivities, workload_of
from models.evidence import EvidenceRequest, LogEvidence
from tests.conftest import load_payload
from tests.fixtures.loki import LogQLParseError, LokiStandIn, parse_logql

NS = 1_000_000_000
ERRORISH = ("error", "exception", "fail", "fatal", "panic", "timeout", "refused", "denied", "unavailable", "oom")
ONSET = datetime(2025, 6, 17, 14, 0, tzinfo=UTC)
AT = ONSET + timedelta(minutes=2)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * NS + moment.microsecond * 1000


def _is_errorish(line: str) -> bool:
    lowered = line.lower()
    return any(word in lowered for word in (*ERRORISH, "killed"))


def _stream(labels: dict[str, str], entries: Iterable[tuple[datetime | int, str]]) -> dict[str, Any]:
    values = [[str(ts if isinstance(ts, int) else _ns(ts)), line] for ts, line in entries]
    return {"stream": labels, "values": values}


def _request(namespace: str = "food", onset: datetime = ONSET, at: datetime = AT, **extra: Any) -> EvidenceRequest:
    return EvidenceRequest(
        workflow_id="wf-loki",
        alertname="HighErrorRate",
        namespace=namespace,
        workload="search",
        onset=onset,
        at=at,
        **extra,
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="module")
def scenario() -> dict[str, Any]:
    return load_payload("loki_bad_deploy_food.json")


def _scenario_request(scenario: dict[str, Any]) -> EvidenceRequest:
    onset = datetime.fromisoformat(scenario["onset"])
    return _request("food", onset=onset, at=datetime.fromisoformat(scenario["at"]))


def _window_lines(scenario: dict[str, Any], window: str, needle: str = "") -> list[tuple[int, str, str]]:
    """(ts, line, app) of the error-ish scenario lines in one window that contain ``needle``."""
    onset = _ns(datetime.fromisoformat(scenario["onset"]))
    at = _ns(datetime.fromisoformat(scenario["at"]))
    start, end = (onset - 300 * NS, at) if window == "recent" else (onset - 3600 * NS, onset - 300 * NS)
    return [
        (int(ts), line, stream["stream"]["app"])
        for stream in scenario["streams"]
        for ts, line in stream["values"]
        if start <= int(ts) < end and _is_errorish(line) and needle in line
    ]


async def _evidence(loki: LokiStandIn, http: aiohttp.ClientSession, request: EvidenceRequest, **kw: Any) -> LogEvidence:
    tenant = kw.pop("tenant", None)
    return await LokiActivities(loki.url, tenant, http, **kw).gather_log_evidence(request)


async def _failure(loki_url: str | None, http: aiohttp.ClientSession, **kw: Any) -> ApplicationError:
    tenant = kw.pop("tenant", None)
    with pytest.raises(ApplicationError) as caught:
        await LokiActivities(loki_url, tenant, http, **kw).gather_log_evidence(_request())
    return caught.value


# ---- what the evidence says ------------------------------------------------------------------------------


async def test_new_error_templates_rank_first_with_counts_and_first_seen(
    scenario: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    async with LokiStandIn(scenario["streams"]) as loki:
        evidence = await _evidence(loki, http, _scenario_request(scenario))

    exceptions = _window_lines(scenario, "recent", "AttributeError: 'NoneType'")
    server_errors = _window_lines(scenario, "recent", "500 Internal Server Error")
    assert len(exceptions) == 105 and len(server_errors) == 105  # what the excerpt holds
    first, second = evidence.templates[0], evidence.templates[1]
    exception = next(t for t in (first, second) if "AttributeError" in t.template)
    server_error = next(t for t in (first, second) if "Internal Server Error" in t.template)
    assert exception.new and server_error.new
    assert exception.count == 105 and exception.baseline_count == 0
    assert server_error.count == 105
    assert exception.first_seen == datetime.fromtimestamp(0, UTC) + timedelta(
        microseconds=min(ts for ts, _, _ in exceptions) // 1000
    )
    assert exception.last_seen == datetime.fromtimestamp(0, UTC) + timedelta(
        microseconds=max(ts for ts, _, _ in exceptions) // 1000
    )
    assert exception.workloads == ["search"] and server_error.workloads == ["search"]
    assert exception.sample.startswith("ERROR:search.app:Exception in ASGI application: AttributeError")
    # Variable parts are masked: one template for every client address and both paths.
    assert "10.244." not in server_error.template
    assert all(not t.new for t in evidence.templates[2:])
    words = "error|exception|fail|fatal|panic|timeout|refused|denied|unavailable|oom|killed"
    assert evidence.query == '{namespace="food"} |~ "(?i)(' + words + ')"'
    assert evidence.truncated is False


async def test_template_present_in_both_windows_is_not_new_and_carries_its_baseline_count(
    scenario: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    async with LokiStandIn(scenario["streams"]) as loki:
        evidence = await _evidence(loki, http, _scenario_request(scenario))

    needle = "retrying after transient error"
    recent, baseline = _window_lines(scenario, "recent", needle), _window_lines(scenario, "baseline", needle)
    assert recent and baseline
    retry = next(t for t in evidence.templates if needle in t.template)
    assert retry.new is False
    assert (retry.count, retry.baseline_count) == (len(recent), len(baseline))
    assert retry.workloads == ["users"]
    assert evidence.templates[-1] is retry  # not new: ranked after every new template


async def test_only_error_lines_are_read_and_counted(scenario: dict[str, Any], http: aiohttp.ClientSession) -> None:
    async with LokiStandIn(scenario["streams"]) as loki:
        evidence = await _evidence(loki, http, _scenario_request(scenario))

    in_windows = len(_window_lines(scenario, "recent")) + len(_window_lines(scenario, "baseline"))
    everything = sum(len(s["values"]) for s in scenario["streams"])
    assert everything > in_windows + 100  # the excerpt does hold plenty of lines that are not errors
    assert evidence.lines == in_windows
    assert sum(t.count for t in evidence.templates) == len(_window_lines(scenario, "recent"))
    assert all(_is_errorish(t.sample) for t in evidence.templates)
    # The baseline-only cart warning about 'http.timeout' is an error-ish line, but not of the recent window.
    assert not any("deprecated configuration key" in t.sample for t in evidence.templates)


async def test_namespace_is_isolated_and_escaped(http: aiohttp.ClientSession) -> None:
    minute = timedelta(minutes=1)
    streams = [
        _stream(
            {"namespace": "food", "pod": "checkout-7d9f8b6c5d-x2k4q"},  # no app/container: derived from the pod
            [
                (ONSET + i * minute / 10, f"ERROR payment provider refused connection to 10.0.3.{i}:443")
                for i in range(7)
            ],
        ),
        _stream({"namespace": "food-canary", "app": "canary"}, [(ONSET, "FATAL canary exploded")] * 3),
        _stream({"namespace": "shop", "app": "cart"}, [(ONSET, "panic: runtime error: index out of range")]),
        _stream({"namespace": 'we"ird\\ns', "app": "odd"}, [(ONSET, "error in a namespace that needs escaping")]),
    ]
    async with LokiStandIn(streams) as loki:
        food = await _evidence(loki, http, _request("food"))
        odd = await _evidence(loki, http, _request('we"ird\\ns'))
        sent = [r.params["query"] for r in loki.requests]

    assert [(t.count, t.workloads) for t in food.templates] == [(7, ["checkout"])]
    assert food.templates[0].template == "ERROR payment provider refused connection to <IP>"
    assert food.lines == 7
    assert [(t.count, t.workloads) for t in odd.templates] == [(1, ["odd"])]
    assert sent[-1].startswith('{namespace="we\\"ird\\\\ns"} |~ ')
    assert parse_logql(sent[-1]).matchers[0].value == 'we"ird\\ns'


async def test_a_cluster_alert_without_namespace_reads_every_namespace(http: aiohttp.ClientSession) -> None:
    # A node alert names no namespace; Loki refuses {namespace=""}, so the query must select all of them.
    streams = [
        _stream({"namespace": "food", "app": "search"}, [(ONSET, "ERROR dial tcp 10.0.0.1:80: connect: no route")] * 2),
        _stream({"namespace": "shop", "app": "cart"}, [(ONSET, "panic: runtime error: index out of range")]),
    ]
    async with LokiStandIn(streams) as loki:
        evidence = await _evidence(loki, http, _request(""))
        sent = loki.requests[-1].params["query"]

    assert sent.startswith('{namespace=~".+"} |~ ')
    assert sorted(w for t in evidence.templates for w in t.workloads) == ["cart", "search"]


async def test_windows_limit_and_direction_are_sent_as_loki_expects(http: aiohttp.ClientSession) -> None:
    async with LokiStandIn([]) as loki:
        await _evidence(loki, http, _request(baseline_s=1800.0), max_lines=1234)
        recent, baseline = (r.params for r in loki.requests)

    assert loki.requests[0].path == "/loki/api/v1/query_range"
    assert (int(recent["start"]), int(recent["end"])) == (_ns(ONSET) - 300 * NS, _ns(AT))
    assert (int(baseline["start"]), int(baseline["end"])) == (_ns(ONSET) - 1800 * NS, _ns(ONSET) - 300 * NS)
    assert recent["limit"] == baseline["limit"] == "1234"
    assert recent["direction"] == baseline["direction"] == "backward"


async def test_empty_result_is_no_templates_and_no_error(http: aiohttp.ClientSession) -> None:
    async with LokiStandIn([_stream({"namespace": "food", "app": "search"}, [(ONSET, "INFO all good")])]) as loki:
        evidence = await _evidence(loki, http, _request())

    assert evidence.templates == [] and evidence.lines == 0 and evidence.truncated is False
    assert len(loki.requests) == 2


async def test_short_baseline_skips_the_baseline_query_and_says_so(http: aiohttp.ClientSession) -> None:
    streams = [_stream({"namespace": "food", "app": "search"}, [(ONSET, "ERROR boom")])]
    async with LokiStandIn(streams) as loki:
        evidence = await _evidence(loki, http, _request(baseline_s=120.0))

    assert len(loki.requests) == 1
    assert evidence.templates[0].new and evidence.templates[0].count == 1
    assert any("no baseline window" in note for note in evidence.notes)


# ---- tenancy -----------------------------------------------------------------------------------------------


async def test_tenant_header_is_sent(scenario: dict[str, Any], http: aiohttp.ClientSession) -> None:
    async with LokiStandIn(scenario["streams"], tenant="team-food") as loki:
        evidence = await _evidence(loki, http, _scenario_request(scenario), tenant="team-food")

    assert [r.headers.get("X-Scope-OrgID") for r in loki.requests] == ["team-food", "team-food"]
    assert evidence.templates and evidence.templates[0].new


async def test_another_tenant_sees_none_of_the_data(scenario: dict[str, Any], http: aiohttp.ClientSession) -> None:
    async with LokiStandIn(scenario["streams"], tenant="team-food") as loki:
        evidence = await _evidence(loki, http, _scenario_request(scenario), tenant="team-shop")

    assert evidence.templates == [] and evidence.lines == 0


async def test_missing_tenant_is_forbidden(scenario: dict[str, Any], http: aiohttp.ClientSession) -> None:
    async with LokiStandIn(scenario["streams"], tenant="team-food") as loki:
        error = await _failure(loki.url, http)

    assert error.type == SOURCE_FORBIDDEN and error.non_retryable
    assert "no org id" in error.message
    assert "X-Scope-OrgID" not in loki.requests[0].headers


# ---- Loki's errors -----------------------------------------------------------------------------------------


async def test_loki_400_plain_text_is_a_bad_query_with_lokis_text(http: aiohttp.ClientSession) -> None:
    text = "parse error at line 1, col 5: syntax error: unexpected IDENTIFIER"
    async with LokiStandIn([], fail_with=(400, text)) as loki:
        error = await _failure(loki.url, http)

    assert error.type == BAD_QUERY and error.non_retryable
    assert text in error.message


async def test_limit_above_lokis_max_entries_is_a_bad_query(http: aiohttp.ClientSession) -> None:
    async with LokiStandIn([], max_entries_limit=1000) as loki:  # a real 400 of the stand-in's own
        error = await _failure(loki.url, http, max_lines=5000)

    assert error.type == BAD_QUERY and error.non_retryable
    assert "max entries limit per query exceeded, limit > max_entries_limit (5000 > 1000)" in error.message


async def test_loki_json_error_body_is_read_too(http: aiohttp.ClientSession) -> None:
    body = json.dumps({"status": "error", "errorType": "bad_data", "error": "invalid query, through < from"})
    async with LokiStandIn([], fail_with=(400, body)) as loki:
        error = await _failure(loki.url, http)

    assert error.type == BAD_QUERY and "invalid query, through < from" in error.message


async def test_403_is_forbidden(http: aiohttp.ClientSession) -> None:
    async with LokiStandIn([], fail_with=(403, "access denied: tenant team-x")) as loki:
        error = await _failure(loki.url, http)

    assert error.type == SOURCE_FORBIDDEN and error.non_retryable and "access denied" in error.message


async def test_404_means_the_url_is_not_lokis_api(http: aiohttp.ClientSession) -> None:
    async with LokiStandIn([]) as loki:
        error = await _failure(loki.url + "/grafana", http)

    assert error.type == SOURCE_MISCONFIGURED and error.non_retryable and "LOKI_URL" in error.message


@pytest.mark.parametrize(
    ("status", "text"),
    [(503, "upstream connect error or disconnect/reset before headers"), (429, "too many outstanding requests")],
)
async def test_503_and_429_are_retryable_unavailability(status: int, text: str, http: aiohttp.ClientSession) -> None:
    async with LokiStandIn([], fail_with=(status, text)) as loki:
        error = await _failure(loki.url, http)

    assert error.type == SOURCE_UNAVAILABLE and not error.non_retryable
    assert str(status) in error.message and text in error.message


async def test_connection_refused_is_unavailable(http: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there
    error = await _failure(f"http://127.0.0.1:{port}", http)

    assert error.type == SOURCE_UNAVAILABLE and not error.non_retryable and "unreachable" in error.message


async def test_hang_past_the_timeout_is_unavailable(http: aiohttp.ClientSession) -> None:
    async with LokiStandIn([], hang=True) as loki:
        started = time.monotonic()
        error = await _failure(loki.url, http, timeout_s=0.3)
        elapsed = time.monotonic() - started

    assert error.type == SOURCE_UNAVAILABLE and not error.non_retryable
    assert elapsed < 3.0


async def test_not_configured(http: aiohttp.ClientSession) -> None:
    error = await _failure(None, http)

    assert error.type == SOURCE_NOT_CONFIGURED and error.non_retryable and "LOKI_URL" in error.message


# ---- bounds ------------------------------------------------------------------------------------------------


def _stack_trace_line(i: int) -> str:
    """A ~3 KB JSON line: a Java exception with its stack, as real services log them."""
    frames = "\\n".join(
        f"\\tat com.example.checkout.service.PaymentClient$Retry{k}.invoke(PaymentClient.java:{100 + k})"
        for k in range(36)
    )
    return json.dumps(
        {
            "level": "ERROR",
            "logger": "com.example.checkout.PaymentClient",
            "msg": "payment authorization failed",
            "trace_id": uuid.UUID(int=i).hex,
            "stack": f"java.net.SocketTimeoutException: Read timed out\\n{frames}",
        }
    )


async def test_a_10_mb_response_is_cut_at_the_byte_cap_and_salvaged(http: aiohttp.ClientSession) -> None:
    cap = 10 * 1024 * 1024  # the default
    lines = [(_ns(ONSET) + i * 10_000_000, _stack_trace_line(i)) for i in range(4000)]
    streams = [_stream({"namespace": "food", "app": "checkout"}, lines)]

    async with LokiStandIn(streams) as loki:
        started = time.monotonic()
        evidence = await _evidence(loki, http, _request())
        elapsed = time.monotonic() - started
        # The whole answer Loki gave, fetched again here to see where the cap fell.
        url, params = f"{loki.url}/loki/api/v1/query_range", loki.requests[0].params
        async with http.get(url, params=params) as response:
            raw = await response.read()

    assert len(raw) > 12 * 1024 * 1024
    # Newest first (direction=backward), one stream: the entries follow each other in the body.
    values = json.loads(raw)["data"]["result"][0]["values"]
    offset = raw.index(json.dumps(values[0]).encode())
    complete = 0
    for value in values:
        offset += len(json.dumps(value).encode())
        if offset > cap:
            break
        complete += 1
        offset += len(", ")
    assert evidence.truncated is True
    assert any(f"exceeded {cap} bytes" in note for note in evidence.notes)
    assert evidence.lines == complete  # every complete line before the cut, none after it
    assert 2000 < complete < 4000
    [template] = evidence.templates
    assert template.count == evidence.lines and template.new and template.workloads == ["checkout"]
    assert template.last_seen == datetime.fromtimestamp(0, UTC) + timedelta(microseconds=int(values[0][0]) // 1000)
    assert len(template.sample) <= 300 and len(template.template) <= 500
    assert len(evidence.model_dump_json()) < 4096
    assert elapsed < 15.0


async def test_an_endless_response_is_not_read_past_the_cap(http: aiohttp.ClientSession) -> None:
    streams = [_stream({"namespace": "food", "app": "checkout"}, [(ONSET, _stack_trace_line(1))])]
    offered = 256 * 1024 * 1024
    async with LokiStandIn(streams, pad_to_bytes=offered) as loki:
        started = time.monotonic()
        tracemalloc.start()
        try:
            evidence = await _evidence(loki, http, _request(), max_response_bytes=2 * 1024 * 1024)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        elapsed = time.monotonic() - started
        written = loki.bytes_written

    assert evidence.truncated is True and evidence.lines > 0
    assert written < offered // 4  # the client hung up right after its 2 MiB; the rest never left the server
    assert peak < 32 * 1024 * 1024  # client and server together, far below the 256 MiB on offer
    assert elapsed < 10.0


async def test_a_cut_before_the_first_complete_line_is_a_clear_error(http: aiohttp.ClientSession) -> None:
    streams = [_stream({"namespace": "food", "app": "checkout"}, [(ONSET, _stack_trace_line(1))])]
    async with LokiStandIn(streams) as loki:
        error = await _failure(loki.url, http, max_response_bytes=1000)

    assert error.type == SOURCE_UNAVAILABLE and error.non_retryable
    assert "exceeded 1000 bytes" in error.message


# 20 components x 15 operations: the first two words of a line, so drain keeps every pair a template of its own.
COMPONENTS: list[str] = ["billing", "ledger", "orders", "stock", "pricing", "search", "users", "carts", "payments"]
COMPONENTS += ["shipping", "refunds", "invoices", "coupons", "reviews", "catalog", "sessions", "tokens", "emails"]
COMPONENTS += ["audits", "reports"]
OPERATIONS: list[str] = ["connect", "read", "write", "resolve", "authorize", "decode", "encode", "publish", "fetch"]
OPERATIONS += ["commit", "lock", "unlock", "scan", "sync", "ping"]
PODS = ("orders-5f7c9d8b6b-x2k4q", "orders-5f7c9d8b6b-h7z9m", "orders-5f7c9d8b6b-p5w8t", "orders-7dd9c5b4f6-r2d6n")


def _many_lines(count: int, start: datetime, span: timedelta) -> list[dict[str, Any]]:
    """``count`` lines of 20 x 15 = 300 distinct error templates (1 line in 10 is not an error), over four pods."""
    per_pod: dict[str, list[tuple[int, str]]] = {}
    step = span / count
    errors = 0
    assert len(COMPONENTS) * len(OPERATIONS) == 300
    for i in range(count):
        if i % 10 == 9:
            line = f"INFO request served in {i % 97} ms"
        else:
            component, operation = COMPONENTS[errors % 20], OPERATIONS[(errors // 20) % 15]
            line = f"{component} {operation} failed after {i % 13} retries request_id={uuid.UUID(int=i)}"
            errors += 1
        per_pod.setdefault(PODS[i % 4], []).append((_ns(start + i * step), line))
    return [_stream({"namespace": "food", "pod": pod}, entries) for pod, entries in per_pod.items()]


async def test_100k_lines_give_a_small_bounded_result(http: aiohttp.ClientSession) -> None:
    recent = _many_lines(50_000, ONSET - timedelta(minutes=4), timedelta(minutes=5))
    baseline = _many_lines(50_000, ONSET - timedelta(minutes=50), timedelta(minutes=40))
    async with LokiStandIn([*recent, *baseline]) as loki:
        evidence = await _evidence(loki, http, _request())

    assert len(evidence.templates) == 20  # at most max_templates of the 300 the data holds
    assert evidence.lines == 2 * 5000  # max_lines per window
    assert "recent window: the limit of 5000 lines was reached; older lines were not read" in evidence.notes
    assert evidence.truncated is True
    assert "280 more templates of the recent window not shown" in evidence.notes
    assert all(t.workloads == ["orders"] for t in evidence.templates)  # derived from the pod names
    assert all(t.template.endswith("failed after <NUM> retries request_id=<UUID>") for t in evidence.templates)
    assert all(not t.new and t.baseline_count for t in evidence.templates)
    counts = [t.count for t in evidence.templates]
    assert counts == sorted(counts, reverse=True) and sum(counts) < 5000
    assert len(evidence.model_dump_json()) < 16 * 1024


# ---- the stand-in itself -----------------------------------------------------------------------------------


def test_stand_in_parses_selectors_and_filters_like_loki() -> None:
    query = parse_logql(
        '{app=~"se.*", namespace="food", pod!="x", container!~`side|car`} |= "a" != "b" |~ `(?i)c` !~ "d"'
    )

    labels = {"app": "search", "namespace": "food", "pod": "p", "container": "search"}
    assert query.selects(labels)
    assert not query.selects({**labels, "app": "xsearch"})  # label regexes are anchored
    assert not query.selects({**labels, "container": "car"})
    assert [f.op for f in query.filters] == ["|=", "!=", "|~", "!~"]
    assert query.keeps("a C") and not query.keeps("a b C") and not query.keeps("a C d")


@pytest.mark.parametrize(
    ("logql", "message"),
    [
        ("{namespace=food}", "parse error at line 1, col 12: syntax error: unexpected IDENTIFIER, expecting STRING"),
        ('{app=~".*"}', "queries require at least one regexp or equality matcher"),
        ('{app="a"} | json', "does not support"),
        ('{app="a" |= "x"', "syntax error: unexpected PIPE_EXACT, expecting COMMA or CLOSE_BRACE"),
    ],
)
def test_stand_in_rejects_what_loki_rejects(logql: str, message: str) -> None:
    with pytest.raises(LogQLParseError) as caught:
        parse_logql(logql)
    assert message in str(caught.value)


async def test_stand_in_answers_plain_text_400(http: aiohttp.ClientSession) -> None:
    async with LokiStandIn([]) as loki:
        params = {"query": "{namespace=food}", "limit": "10"}
        async with http.get(f"{loki.url}/loki/api/v1/query_range", params=params) as response:
            status, content_type, text = response.status, response.content_type, await response.text()

    assert (status, content_type) == (400, "text/plain")
    assert text == "parse error at line 1, col 12: syntax error: unexpected IDENTIFIER, expecting STRING\n"


def test_workload_of_stream_labels() -> None:
    assert workload_of({"app": "search", "container": "main", "pod": "search-894587957d-6tfqq"}) == "search"
    assert workload_of({"container": "search", "pod": "search-894587957d-6tfqq"}) == "search"
    assert workload_of({"pod": "search-894587957d-6tfqq"}) == "search"
    assert workload_of({"pod": "pg-main-0"}) == "pg-main"
    assert workload_of({"pod": "node-exporter-x7k2p"}) == "node-exporter"
    assert workload_of({}) == ""
