"""Metric evidence from a real Prometheus loaded with a namespace whose story we wrote (promtool backfill).

The story: in namespace ``food``, ``search`` (OpenTelemetry RED metrics) starts failing 5 minutes ago; ``blip``
had a burst of errors that ended 90 seconds ago; ``cart`` (classic RED metrics) is healthy; ``recommendations``
had a CPU bump an hour ago that recovered (a distractor);
a ``search`` pod starts restarting with the errors; ``idle`` serves no traffic (its error ratio is 0/0 = NaN).
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from activities.prometheus import PrometheusActivities
from models.evidence import EvidenceRequest, MetricEvidence
from tests.fixtures.prometheus import PrometheusServer, backfill
from triage.runbooks import Runbook

STEP = 15
# The story's clock is set when the fixture writes it (not at import), so a slow suite cannot age its data.
NOW = START = CHANGE_AT = BUMP_AT = BUMP_END = 0.0


def set_clock(now: float) -> None:
    global NOW, START, CHANGE_AT, BUMP_AT, BUMP_END
    NOW, START, CHANGE_AT = now, now - 75 * 60, now - 5 * 60
    BUMP_AT, BUMP_END = now - 62 * 60, now - 55 * 60


def _counter(name: str, labels: dict[str, str], rate_at, rng: random.Random) -> list[str]:
    """Cumulative counter samples whose per-second rate follows ``rate_at(t)`` (with a little noise)."""
    rendered = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    total, lines, t = 0.0, [], START
    while t <= NOW - 10:
        total += max(0.0, rate_at(t) * (1 + rng.gauss(0, 0.03))) * STEP
        lines.append(f"{name}{{{rendered}}} {total:.3f} {t:.3f}")
        t += STEP
    return lines


def _gauge(name: str, labels: dict[str, str], value_at) -> list[str]:
    rendered = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    lines, t = [], START
    while t <= NOW - 10:
        lines.append(f"{name}{{{rendered}}} {value_at(t)} {t:.3f}")
        t += STEP
    return lines


def story() -> str:
    rng = random.Random(7)
    families: dict[str, list[str]] = {}

    def add(name: str, lines: list[str]) -> None:
        families.setdefault(name, []).extend(lines)

    otel = "http_server_request_duration_seconds_count"
    search = {"namespace": "food", "service": "search", "pod": "search-894587957d-x7k2p", "container": "search"}
    add(otel, _counter(otel, {**search, "http_response_status_code": "200"}, lambda t: 50.0, rng))
    add(
        otel,
        _counter(otel, {**search, "http_response_status_code": "500"}, lambda t: 25.0 if t >= CHANGE_AT else 0.4, rng),
    )
    cart = {"namespace": "food", "service": "cart", "pod": "cart-55f4d76cd9-dtgkz", "container": "cart"}
    add("http_requests_total", _counter("http_requests_total", {**cart, "code": "200"}, lambda t: 30.0, rng))
    add("http_requests_total", _counter("http_requests_total", {**cart, "code": "500"}, lambda t: 0.3, rng))
    # blip: a burst of 5xx that ended 90 s ago; its 5-minute error ratio still shows it, its latest value not.
    blip = {"namespace": "food", "service": "blip", "pod": "blip-5f6d7c8b9a-k2m4n", "container": "blip"}
    add(otel, _counter(otel, {**blip, "http_response_status_code": "200"}, lambda t: 40.0, rng))
    add(
        otel,
        _counter(
            otel,
            {**blip, "http_response_status_code": "500"},
            lambda t: 20.0 if NOW - 240 <= t < NOW - 90 else 0.2,
            rng,
        ),
    )
    idle = {"namespace": "food", "service": "idle", "pod": "idle-6d5c9b8f7d-qqn6z", "container": "idle"}
    add("http_requests_total", _counter("http_requests_total", {**idle, "code": "200"}, lambda t: 0.0, rng))

    cpu = "container_cpu_usage_seconds_total"
    reco = {"namespace": "food", "pod": "recommendations-7c9d5b6f4-h2j4k", "container": "recommendations"}
    add(cpu, _counter(cpu, reco, lambda t: 1.5 if BUMP_AT <= t < BUMP_END else 0.3, rng))
    add(cpu, _counter(cpu, search, lambda t: 0.5, rng))

    restarts = "kube_pod_container_status_restarts_total"
    add(
        restarts,
        _gauge(
            restarts,
            {**search, "job": "kube-state-metrics"},
            lambda t: 0 if t < CHANGE_AT + 60 else int((t - CHANGE_AT - 60) // 60) + 1,
        ),
    )
    owner = {"job": "kube-state-metrics", "namespace": "food", "owner_kind": "ReplicaSet"}
    add(
        "kube_pod_owner",
        _gauge("kube_pod_owner", {**owner, "pod": search["pod"], "owner_name": "search-894587957d"}, lambda t: 1),
    )
    add(
        "kube_pod_owner",
        _gauge("kube_pod_owner", {**owner, "pod": reco["pod"], "owner_name": "recommendations-7c9d5b6f4"}, lambda t: 1),
    )
    rs_owner = {"job": "kube-state-metrics", "namespace": "food", "owner_kind": "Deployment"}
    add(
        "kube_replicaset_owner",
        _gauge(
            "kube_replicaset_owner",
            {**rs_owner, "replicaset": "search-894587957d", "owner_name": "search"},
            lambda t: 1,
        ),
    )
    add(
        "kube_replicaset_owner",
        _gauge(
            "kube_replicaset_owner",
            {**rs_owner, "replicaset": "recommendations-7c9d5b6f4", "owner_name": "recommendations"},
            lambda t: 1,
        ),
    )
    depth = "app_queue_depth"  # a metric only a runbook of its own knows about
    add(depth, _gauge(depth, {"namespace": "food", "service": "search"}, lambda t: 900 if t >= CHANGE_AT + 120 else 20))
    expiry = "probe_ssl_earliest_cert_expiry"
    probe = {"job": "blackbox", "namespace": "food"}
    add(expiry, _gauge(expiry, {**probe, "service": "auth", "instance": "https://auth:8443"}, lambda t: NOW + 2 * 3600))
    add(
        expiry,
        _gauge(expiry, {**probe, "service": "cart", "instance": "https://cart:8443"}, lambda t: NOW + 30 * 86400),
    )
    document = []
    for name, lines in families.items():
        document.append(f"# TYPE {name} unknown")
        document.extend(lines)
    return "\n".join(document) + "\n# EOF\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("metric-evidence") / "tsdb"
    set_clock(time.time())
    backfill(story(), data)
    with PrometheusServer(data) as server:
        yield server


@pytest_asyncio.fixture
async def evidence(prometheus: PrometheusServer) -> AsyncIterator[MetricEvidence]:
    request = EvidenceRequest(
        workflow_id="incident-test",
        alertname="HighErrorRate",
        namespace="food",
        workload="search",
        alert_labels=[{"alertname": "HighErrorRate", "namespace": "food", "service": "search"}],
        onset=datetime.fromtimestamp(NOW - 3 * 60, tz=UTC),
        at=datetime.fromtimestamp(NOW, tz=UTC),
    )
    runbook = Runbook.model_validate(
        {
            "id": "queue-backlog",
            "title": "Queue backlog",
            "match": {"alertnames": ["HighErrorRate"]},
            "hypotheses": [{"category": "application_error", "prior": 0.5, "summary": "s"}],
            "queries": [
                {
                    "metric": "queue_depth",
                    "promql": "max by (namespace, service) (app_queue_depth{namespace=$namespace, service=$workload})",
                    "description": "jobs waiting in the queue",
                    "absolute_floor": 5,
                }
            ],
        }
    )
    request = request.model_copy(update={"runbook": "queue-backlog"})
    async with aiohttp.ClientSession() as session:
        activities = PrometheusActivities(prometheus.url, session, runbooks=[runbook])
        yield await activities.gather_metric_evidence(request)


async def test_the_failing_service_is_the_top_finding_with_when_and_how_much(evidence: MetricEvidence) -> None:
    assert evidence.findings[0].workload == "search"
    errors = next(f for f in evidence.findings if f.metric == "error_ratio")
    assert (errors.workload, errors.direction) == ("search", "up")
    assert errors.baseline == pytest.approx(0.4 / 50.4, rel=0.2)
    assert errors.recent == pytest.approx(25 / 75, rel=0.15)
    # The 5m rate window smears a step over 5 minutes; the onset lands inside it.
    assert CHANGE_AT - 30 <= errors.onset.timestamp() <= CHANGE_AT + 5 * 60
    assert "search" in errors.summary and "rose" in errors.summary


async def test_latest_values_tell_an_ongoing_change_from_one_that_is_over(evidence: MetricEvidence) -> None:
    search = next(f for f in evidence.findings if f.metric == "error_ratio" and f.workload == "search")
    blip = next(f for f in evidence.findings if f.metric == "error_ratio" and f.workload == "blip")
    # Both still look raised over 5 minutes; over the last scrape interval only search still fails.
    assert search.now is not None and search.now == pytest.approx(search.recent, rel=0.3)
    assert blip.recent > 10 * blip.baseline
    assert blip.now is not None and blip.now < blip.baseline + 0.1 * (blip.recent - blip.baseline)
    assert "; now " in blip.summary


async def test_both_red_conventions_are_discovered_and_queried(evidence: MetricEvidence) -> None:
    assert evidence.red_convention == "classic"  # cart and idle speak classic, search speaks OpenTelemetry
    assert any(f.metric == "error_ratio" and f.workload == "search" for f in evidence.findings)
    # cart's classic series were queried and, being steady, produced no finding.
    assert not any(f.workload == "cart" for f in evidence.findings)


async def test_pods_map_to_their_deployments(evidence: MetricEvidence) -> None:
    assert evidence.pod_owners["search-894587957d-x7k2p"] == "search"
    restarts = next(f for f in evidence.findings if f.metric == "restarts")
    assert restarts.workload == "search" and restarts.labels["pod"] == "search-894587957d-x7k2p"


async def test_an_old_recovered_bump_is_not_a_finding(evidence: MetricEvidence) -> None:
    assert not any(f.workload == "recommendations" for f in evidence.findings)


async def test_a_service_without_traffic_yields_nothing_and_breaks_nothing(evidence: MetricEvidence) -> None:
    assert not any(f.workload == "idle" for f in evidence.findings)
    assert evidence.queries > 10


async def test_conditions_that_matter_now_are_reported_whether_or_not_they_changed(evidence: MetricEvidence) -> None:
    [certificate] = [c for c in evidence.conditions if c.metric == "cert_expires_in"]
    assert certificate.workload == "auth"
    assert 2 * 3600 - 600 <= certificate.value <= 2 * 3600
    assert certificate.summary.startswith("auth: TLS certificate expires in 2")


async def test_a_runbook_query_finds_what_the_standard_templates_cannot(evidence: MetricEvidence) -> None:
    [depth] = [f for f in evidence.findings if f.metric == "queue_depth"]
    assert depth.workload == "search" and depth.baseline == 20 and depth.recent == 900
    assert depth.summary.startswith("jobs waiting in the queue of search rose from 20 to 900")


async def test_an_unset_prometheus_is_refused_as_not_configured() -> None:
    from temporalio.exceptions import ApplicationError

    request = EvidenceRequest(
        workflow_id="w",
        alertname="A",
        namespace="food",
        workload="search",
        onset=datetime.now(UTC) - timedelta(minutes=3),
        at=datetime.now(UTC),
    )
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ApplicationError) as info:
            await PrometheusActivities(None, session).gather_metric_evidence(request)
    assert info.value.type == "SourceNotConfigured"


def test_story_document_is_well_formed(tmp_path: Path, prometheus: PrometheusServer) -> None:
    backfill(story(), tmp_path / "tsdb")  # promtool accepts it (the fixture depends on that too)


async def test_an_oversized_answer_is_a_note_and_the_rest_still_counts(
    prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import activities.prometheus as adapter

    # Range answers here are a few kB; a cap below that stands in for a label explosion's hundreds of MB.
    monkeypatch.setattr(adapter, "MAX_RESPONSE_BYTES", 2500)
    request = EvidenceRequest(
        workflow_id="incident-test",
        alertname="HighErrorRate",
        namespace="food",
        workload="search",
        onset=datetime.fromtimestamp(NOW - 3 * 60, tz=UTC),
        at=datetime.fromtimestamp(NOW, tz=UTC),
    )
    async with aiohttp.ClientSession() as session:
        evidence = await PrometheusActivities(prometheus.url, session).gather_metric_evidence(request)
    assert any("over 2500 bytes" in note for note in evidence.notes)
    assert len(evidence.notes) < evidence.queries  # the small answers were still used
