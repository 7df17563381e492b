"""AlertmanagerActivities against a real Alertmanager (Debian's package), loaded through its own v2 API.

Every test uses namespaces and nodes of its own, so they share one server. Only what a real Alertmanager cannot
produce (a 503, a hang, a 200 that is not Alertmanager's, a 400 the activity's own escaping never provokes) uses a
small aiohttp stand-in; the 400 stand-in replays the body the real server sends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.alertmanager import AlertmanagerActivities, matcher
from activities.errors import (
    BAD_QUERY,
    SOURCE_FORBIDDEN,
    SOURCE_MISCONFIGURED,
    SOURCE_NOT_CONFIGURED,
    SOURCE_UNAVAILABLE,
)
from models.evidence import EvidenceRequest, RelatedAlert
from tests.fixtures.alertmanager import (
    BASIC_AUTH_PASSWORD,
    BASIC_AUTH_USER,
    DEFAULT_CONFIG,
    AlertmanagerNotInstalled,
    AlertmanagerServer,
    alert,
    require_alertmanager,
)
from tests.fixtures.http_stand_in import Handler, one_route_server
from tests.fixtures.prometheus import free_port

# An alert labelled inhibitor="yes" mutes the alerts labelled inhibitable="yes" of its namespace.
CONFIG = (
    DEFAULT_CONFIG
    + """\
inhibit_rules:
  - source_matchers: ['inhibitor="yes"']
    target_matchers: ['inhibitable="yes"']
    equal: [namespace]
"""
)


def _require() -> None:
    missing = None
    try:
        require_alertmanager()
    except AlertmanagerNotInstalled as exc:
        missing = str(exc)
    if missing:  # outside the except block, so the report shows only the hint
        pytest.fail(missing, pytrace=False)


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerServer]:
    _require()
    with AlertmanagerServer(tmp_path_factory.mktemp("alertmanager"), config=CONFIG) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def ns() -> str:
    """A namespace no other test uses."""
    return f"ns-{uuid.uuid4().hex[:8]}"


def request(namespace: str, *, node: str = "", own: list[dict[str, str]] | None = None) -> EvidenceRequest:
    now = datetime.now(UTC)
    return EvidenceRequest(
        workflow_id="incident-test",
        alertname=(own or [{}])[0].get("alertname", "HighErrorRate"),
        namespace=namespace,
        workload="search",
        node=node,
        alert_labels=own or [],
        onset=now - timedelta(minutes=10),
        at=now,
    )


def names(alerts: list[RelatedAlert]) -> list[str]:
    return [a.alertname for a in alerts]


def stand_in(handler: Handler) -> contextlib.AbstractAsyncContextManager[str]:
    """A local HTTP server answering /api/v2/alerts with ``handler``; yields its base URL."""
    return one_route_server("/api/v2/alerts", handler)


# --- what counts as related ---------------------------------------------------------------------------------


async def test_alerts_firing_in_the_namespace_are_returned_and_other_namespaces_are_not(
    alertmanager: AlertmanagerServer, http: aiohttp.ClientSession, ns: str
) -> None:
    own = {"alertname": "HighErrorRate", "namespace": ns, "service": "search", "severity": "critical"}
    crash = {"alertname": "KubePodCrashLooping", "namespace": ns, "pod": "search-7d9f8-x2x4z", "severity": "warning"}
    elsewhere = {
        "alertname": "KubePodCrashLooping",
        "namespace": f"{ns}-other",
        "pod": "cart-1",
        "severity": "critical",
    }
    posted = alert(crash, summary="Pod search-7d9f8-x2x4z is crash looping", starts_ago_s=300)
    alertmanager.post_alerts([alert(own, summary="errors"), posted, alert(elsewhere, summary="elsewhere")])

    activities = AlertmanagerActivities(alertmanager.url, http)
    result = await ActivityEnvironment().run(activities.gather_related_alerts, request(ns, own=[own]))

    [found] = result.alerts
    [raw] = [a for a in alertmanager.alerts(filter=matcher("namespace", ns)) if a["labels"] == crash]
    assert found == RelatedAlert(
        alertname="KubePodCrashLooping",
        labels=crash,
        state="active",
        starts_at=datetime.fromisoformat(posted["startsAt"]),
        summary="Pod search-7d9f8-x2x4z is crash looping",
        fingerprint=raw["fingerprint"],
    )
    assert len(found.fingerprint) == 16


async def test_other_namespaces_count_only_for_the_same_node(
    alertmanager: AlertmanagerServer, http: aiohttp.ClientSession, ns: str
) -> None:
    node = f"node-{uuid.uuid4().hex[:6]}"
    same_node_other_ns = {"alertname": "KubePodNotReady", "namespace": f"{ns}-b", "node": node, "severity": "warning"}
    node_alert = {"alertname": "KubeNodeNotReady", "node": node, "severity": "critical"}  # no namespace at all
    other_node = {"alertname": "KubeNodeNotReady", "node": f"{node}-x", "severity": "critical"}
    in_ns_other_node = {"alertname": "CPUThrottlingHigh", "namespace": ns, "node": f"{node}-x", "severity": "info"}
    alertmanager.post_alerts([alert(same_node_other_ns), alert(node_alert), alert(other_node), alert(in_ns_other_node)])
    activities = AlertmanagerActivities(alertmanager.url, http)

    with_node = await activities.gather_related_alerts(request(ns, node=node))
    without_node = await activities.gather_related_alerts(request(ns))

    # Same namespace whatever the node; other namespaces (or none) only on the incident's node.
    assert [a.labels for a in with_node.alerts] == [node_alert, same_node_other_ns, in_ns_other_node]
    assert [a.labels for a in without_node.alerts] == [in_ns_other_node]


async def test_an_alert_in_the_namespace_and_on_the_node_is_returned_once(
    alertmanager: AlertmanagerServer, http: aiohttp.ClientSession, ns: str
) -> None:
    node = f"node-{uuid.uuid4().hex[:6]}"
    both = {"alertname": "KubeMemoryOvercommit", "namespace": ns, "node": node}
    alertmanager.post_alerts([alert(both)])

    result = await AlertmanagerActivities(alertmanager.url, http).gather_related_alerts(request(ns, node=node))

    assert [a.labels for a in result.alerts] == [both]


async def test_the_incidents_own_alerts_are_excluded_by_their_labels(
    alertmanager: AlertmanagerServer, http: aiohttp.ClientSession, ns: str
) -> None:
    # Same alertname, one label apart: only the exact label sets the incident carries are its own.
    own_a = {"alertname": "HighErrorRate", "namespace": ns, "service": "search", "pod": "search-a"}
    own_b = {"alertname": "HighErrorRate", "namespace": ns, "service": "search", "pod": "search-b"}
    sibling = {"alertname": "HighErrorRate", "namespace": ns, "service": "search", "pod": "search-c"}
    alertmanager.post_alerts([alert(own_a), alert(own_b), alert(sibling)])
    activities = AlertmanagerActivities(alertmanager.url, http)

    result = await activities.gather_related_alerts(request(ns, own=[own_a, own_b]))
    unfiltered = await activities.gather_related_alerts(request(ns))

    assert [a.labels for a in result.alerts] == [sibling]
    assert len(unfiltered.alerts) == 3


async def test_silenced_alerts_are_excluded(
    alertmanager: AlertmanagerServer, http: aiohttp.ClientSession, ns: str
) -> None:
    loud = {"alertname": "KubeHpaMaxedOut", "namespace": ns}
    quiet = {"alertname": "KubeJobFailed", "namespace": ns}
    alertmanager.post_alerts([alert(loud), alert(quiet)])
    silence_id = alertmanager.create_silence({"namespace": ns, "alertname": "KubeJobFailed"})

    result = await AlertmanagerActivities(alertmanager.url, http).gather_related_alerts(request(ns))

    # The server still holds the silenced alert, suppressed by that silence.
    [silenced] = [a for a in alertmanager.alerts(silenced="true") if a["labels"] == quiet]
    assert silenced["status"]["state"] == "suppressed"
    assert silenced["status"]["silencedBy"] == [silence_id]
    assert names(result.alerts) == ["KubeHpaMaxedOut"]


async def test_inhibited_alerts_are_excluded(
    alertmanager: AlertmanagerServer, http: aiohttp.ClientSession, ns: str
) -> None:
    source = {"alertname": "KubeQuotaExceeded", "namespace": ns, "inhibitor": "yes", "severity": "critical"}
    target = {"alertname": "KubeQuotaAlmostFull", "namespace": ns, "inhibitable": "yes", "severity": "info"}
    alertmanager.post_alerts([alert(source), alert(target)])
    # The inhibitor learns of new alerts asynchronously: wait until the server reports the target inhibited.
    deadline = time.monotonic() + 10
    while not [a for a in alertmanager.alerts() if a["labels"] == target and a["status"]["inhibitedBy"]]:
        assert time.monotonic() < deadline, "Alertmanager never inhibited the target alert"
        await asyncio.sleep(0.1)

    result = await AlertmanagerActivities(alertmanager.url, http).gather_related_alerts(request(ns))

    assert names(result.alerts) == ["KubeQuotaExceeded"]


async def test_resolved_alerts_are_not_returned(
    alertmanager: AlertmanagerServer, http: aiohttp.ClientSession, ns: str
) -> None:
    firing = {"alertname": "KubeDeploymentReplicasMismatch", "namespace": ns}
    resolved_on_arrival = {"alertname": "KubeContainerWaiting", "namespace": ns}
    resolved_later = {"alertname": "KubePersistentVolumeFillingUp", "namespace": ns}
    alertmanager.post_alerts([alert(firing), alert(resolved_on_arrival, ends_in_s=-30), alert(resolved_later)])
    activities = AlertmanagerActivities(alertmanager.url, http)
    before = await activities.gather_related_alerts(request(ns))
    # Prometheus resolves an alert by sending it again with endsAt in the past.
    alertmanager.post_alerts([alert(resolved_later, ends_in_s=-1)])

    after = await activities.gather_related_alerts(request(ns))

    assert sorted(names(before.alerts)) == ["KubeDeploymentReplicasMismatch", "KubePersistentVolumeFillingUp"]
    assert names(after.alerts) == ["KubeDeploymentReplicasMismatch"]


async def test_most_severe_then_earliest_first_bounded_by_max_alerts(
    alertmanager: AlertmanagerServer, http: aiohttp.ClientSession, ns: str
) -> None:
    def labelled(name: str, severity: str) -> dict[str, str]:
        return {"alertname": name, "namespace": ns, "severity": severity}

    alertmanager.post_alerts(
        [
            alert(labelled("WarnOld", "warning"), starts_ago_s=3000),
            alert(labelled("CritNew", "critical"), starts_ago_s=60),
            alert(labelled("InfoOldest", "info"), starts_ago_s=9000),
            alert(labelled("CritOld", "critical"), starts_ago_s=600),
            alert(labelled("PageMid", "page"), starts_ago_s=300),  # "page" ranks as high
            alert({"alertname": "NoSeverity", "namespace": ns}, starts_ago_s=120),  # unknown ranks as medium
        ]
    )

    everything = await AlertmanagerActivities(alertmanager.url, http).gather_related_alerts(request(ns))
    bounded = await AlertmanagerActivities(alertmanager.url, http, max_alerts=3).gather_related_alerts(request(ns))

    expected = ["CritOld", "CritNew", "PageMid", "WarnOld", "NoSeverity", "InfoOldest"]
    assert names(everything.alerts) == expected
    assert names(bounded.alerts) == expected[:3]


@pytest.mark.parametrize(
    "tricky",
    [
        'quote"inside',
        "back\\slash",
        'escaped\\"quote',
        "ends-with-backslash\\",
        '",namespace!="',  # an injection attempt stays one literal value
        "comma, {braces}=~ and+plus&amp%20",
        "new\nline",
    ],
)
async def test_namespace_values_are_escaped_so_alertmanager_accepts_the_filter(
    alertmanager: AlertmanagerServer, http: aiohttp.ClientSession, ns: str, tricky: str
) -> None:
    namespace = f"{ns}-{tricky}"
    exact = {"alertname": "TrickyNamespace", "namespace": namespace}
    near_misses = [
        {"alertname": "TrickyNamespace", "namespace": value}
        for value in {namespace.replace("\\", ""), namespace.replace('"', ""), namespace + "\\", ns} - {namespace}
    ]
    alertmanager.post_alerts([alert(exact), *(alert(labels) for labels in near_misses)])

    result = await AlertmanagerActivities(alertmanager.url, http).gather_related_alerts(request(namespace))

    assert [a.labels for a in result.alerts] == [exact]


async def test_neither_namespace_nor_node_asks_nothing(http: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there: a request would fail

    result = await AlertmanagerActivities(url, http).gather_related_alerts(request(""))

    assert result.alerts == []


# --- errors -----------------------------------------------------------------------------------------


async def test_no_base_url_is_source_not_configured(http: aiohttp.ClientSession) -> None:
    with pytest.raises(ApplicationError) as caught:
        await AlertmanagerActivities(None, http).gather_related_alerts(request("food"))

    assert caught.value.type == SOURCE_NOT_CONFIGURED
    assert caught.value.non_retryable is True
    assert "ALERTMANAGER_URL" in caught.value.message


async def test_closed_port_is_a_retryable_source_unavailable(http: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    with pytest.raises(ApplicationError) as caught:
        await AlertmanagerActivities(url, http).gather_related_alerts(request("food", node="node-1"))

    assert caught.value.type == SOURCE_UNAVAILABLE
    assert caught.value.non_retryable is False
    assert url in caught.value.message
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectionError)


async def test_a_wrong_base_path_is_a_non_retryable_misconfiguration(
    alertmanager: AlertmanagerServer, http: aiohttp.ClientSession
) -> None:
    activities = AlertmanagerActivities(f"{alertmanager.url}/not-alertmanager", http)

    with pytest.raises(ApplicationError) as caught:
        await activities.gather_related_alerts(request("food"))

    assert caught.value.type == SOURCE_MISCONFIGURED
    assert caught.value.non_retryable is True
    assert "404" in caught.value.message


async def test_missing_credentials_are_a_non_retryable_source_forbidden(tmp_path: Path) -> None:
    _require()
    with AlertmanagerServer(tmp_path, basic_auth=True) as guarded:
        async with aiohttp.ClientSession() as anonymous:
            with pytest.raises(ApplicationError) as caught:
                await AlertmanagerActivities(guarded.url, anonymous).gather_related_alerts(request("food"))
        # The worker's session carries the credentials; the activity needs nothing else.
        token = base64.b64encode(f"{BASIC_AUTH_USER}:{BASIC_AUTH_PASSWORD}".encode()).decode()
        guarded.post_alerts([alert({"alertname": "Behind", "namespace": "food"})])
        async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as authenticated:
            result = await AlertmanagerActivities(guarded.url, authenticated).gather_related_alerts(request("food"))

    assert caught.value.type == SOURCE_FORBIDDEN
    assert caught.value.non_retryable is True
    assert "401" in caught.value.message
    assert names(result.alerts) == ["Behind"]


async def test_a_rejected_filter_is_a_non_retryable_bad_query(
    alertmanager: AlertmanagerServer, http: aiohttp.ClientSession
) -> None:
    # The activity's escaping never sends a filter Alertmanager rejects, so take the real server's answer to an
    # unescaped quote and replay it from a stand-in.
    async with http.get(f"{alertmanager.url}/api/v2/alerts", params={"filter": 'namespace="a"b"'}) as response:
        status, content_type, body = response.status, response.content_type, await response.text()
    assert status == 400
    assert "unescaped double quote" in body

    async def rejecting(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type=content_type)

    async with stand_in(rejecting) as url:
        with pytest.raises(ApplicationError) as caught:
            await AlertmanagerActivities(url, http).gather_related_alerts(request("food"))

    assert caught.value.type == BAD_QUERY
    assert caught.value.non_retryable is True
    assert 'matcher value contains unescaped double quote: "a"b' in caught.value.message


async def test_503_is_a_retryable_source_unavailable(http: aiohttp.ClientSession) -> None:
    # What a proxy in front of Alertmanager answers while Alertmanager restarts.
    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503, text="upstream connect error", content_type="text/plain")

    async with stand_in(unavailable) as url:
        with pytest.raises(ApplicationError) as caught:
            await AlertmanagerActivities(url, http).gather_related_alerts(request("food"))

    assert caught.value.type == SOURCE_UNAVAILABLE
    assert caught.value.non_retryable is False
    assert "503" in caught.value.message
    assert "upstream connect error" in caught.value.message


async def test_timeout_is_a_retryable_source_unavailable(http: aiohttp.ClientSession) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), timeout=10)
        return web.Response(status=200, text="[]", content_type="application/json")

    async with stand_in(hang) as url:
        started = time.monotonic()
        try:
            with pytest.raises(ApplicationError) as caught:
                await AlertmanagerActivities(url, http, timeout_s=0.2).gather_related_alerts(request("food"))
        finally:
            release.set()
        elapsed = time.monotonic() - started

    assert caught.value.type == SOURCE_UNAVAILABLE
    assert caught.value.non_retryable is False
    assert "Timeout" in caught.value.message
    assert elapsed < 5


async def test_a_200_that_is_not_alertmanager_is_a_misconfiguration(http: aiohttp.ClientSession) -> None:
    # A web UI or single-page app answering every path with its index page.
    async def index(request: web.Request) -> web.Response:
        return web.Response(status=200, text="<html>Grafana</html>", content_type="text/html")

    async with stand_in(index) as url:
        with pytest.raises(ApplicationError) as caught:
            await AlertmanagerActivities(url, http).gather_related_alerts(request("food"))

    assert caught.value.type == SOURCE_MISCONFIGURED
    assert caught.value.non_retryable is True
