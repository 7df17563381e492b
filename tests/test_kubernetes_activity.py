"""KubernetesActivities through the official client, over HTTP, against kmock's Kubernetes emulator.

The emulator (tests/fixtures/kube.py) holds objects from ``tests/payloads/kube_*.json``: excerpts of the
generated incident scenarios (bad_deploy-1, crash_loop-3, oom_kill-2, node_failure-13) as the API returns
them, with small documented additions so that one file shows one behaviour:

* ``kube_bad_deploy.json`` (food): Deployments search (4 revisions, revision 4 rolled out 13:53Z, 3.5 min
  before the alert), cart (rolled out 12:56:58Z, inside the hour before the onset) and gateway, StatefulSet
  pg-main, their pods, 3 Ready nodes, Normal events. Added: a change-cause on search's revision 4.
* ``kube_config_changes.json`` (pay): hand-built on the shape of search: Deployment checkout (selector with
  ``tier in (web, api)``) with 6 revisions that change env only, a ConfigMap ref, a memory limit, a
  ``rollout restart``, args plus a probe; and a checkout-worker Deployment its selector must not catch.
* ``kube_crash_loop.json`` (events-apac): search pods in CrashLoopBackOff (last termination Error, exit 1),
  Warning BackOff events and Normal ones. Added: an older BackOff event of the same pod (dedup), a reports
  Deployment whose pod waits in CreateContainerConfigError with its Warning "Failed" event.
* ``kube_oom_kill.json`` (learning-live): inventory pods whose last termination is OOMKilled (exit 137).
* ``kube_node_failure.json`` (events-prod): node ip-10-0-28-175 NotReady (CNI). Added: DiskPressure on
  ip-10-0-60-192, ip-10-0-48-46 cordoned, a Ready node ip-10-0-71-15 hosting no pod of the namespace.

The payload files were cut from the scenarios once, with a throwaway script; nothing here reads outside
``tests/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.errors import SOURCE_FORBIDDEN, SOURCE_NOT_CONFIGURED, SOURCE_UNAVAILABLE
from activities.kubernetes import KubernetesActivities, load_kubernetes_client
from models.evidence import EvidenceRequest, KubernetesEvidence
from tests.fixtures.kube import KubeAPI, kube_api, load_document, write_kubeconfig
from tests.fixtures.prometheus import free_port

PAYLOADS = Path(__file__).parent / "payloads"
NOT_READY_NODE = "ip-10-0-28-175.eu-west-1.compute.internal"


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _request(namespace: str, workload: str, onset: str, at: str, **extra: Any) -> EvidenceRequest:
    return EvidenceRequest(
        workflow_id="incident-test",
        alertname="HighErrorRate",
        namespace=namespace,
        workload=workload,
        onset=_t(onset),
        at=_t(at),
        **extra,
    )


BAD_DEPLOY = _request("food", "search", "2025-06-17T13:56:40.613Z", "2025-06-17T13:57:52.982Z")
CONFIG_CHANGES = _request("pay", "checkout", "2025-06-17T13:50:00Z", "2025-06-17T13:57:00Z")
CRASH_LOOP = _request("events-apac", "search", "2025-05-20T11:03:12.103Z", "2025-05-20T11:03:53.561Z")
OOM_KILL = _request("learning-live", "inventory", "2025-08-13T19:57:48.406Z", "2025-08-13T20:01:54.316Z")
NODE_FAILURE = _request("events-prod", "search", "2025-05-07T18:38:49.766Z", "2025-05-07T18:39:21.094Z")


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, payload: str) -> AsyncIterator[KubeAPI]:
    async with kube_api(tmp_path, load_document(PAYLOADS / payload)) as api:
        yield api


@contextlib.contextmanager
def activities(api: KubeAPI, **options: Any) -> Iterator[KubernetesActivities]:
    client = api.client()
    try:
        yield KubernetesActivities(client, **options)
    finally:
        client.close()


async def gather(acts: KubernetesActivities, request: EvidenceRequest) -> KubernetesEvidence:
    result: KubernetesEvidence = await ActivityEnvironment().run(acts.gather_kubernetes_evidence, request)
    return result


async def evidence_of(tmp_path: Path, payload: str, request: EvidenceRequest, **options: Any) -> KubernetesEvidence:
    async with serving(tmp_path, payload) as api:
        with activities(api, **options) as acts:
            return await gather(acts, request)


def _queries(api: KubeAPI, path: str) -> list[dict[str, str]]:
    return [dict(r.params) for r in api.emulator._requests if r.url.path == path]


# --- rollouts ---------------------------------------------------------------------------------------------


async def test_rollout_history_is_newest_first_with_the_image_change_cause_and_current_revision(
    tmp_path: Path,
) -> None:
    evidence = await evidence_of(tmp_path, "kube_bad_deploy.json", BAD_DEPLOY)

    search = [r for r in evidence.rollouts if r.deployment == "search"]
    assert [r.revision for r in search] == [4, 3, 2, 1]
    latest = search[0]
    assert latest.namespace == "food"
    assert latest.replicaset == "search-894587957d"
    assert latest.at == datetime(2025, 6, 17, 13, 53, tzinfo=UTC)
    assert latest.images == ["registry.example.com/search:v2.23.1"]
    assert latest.previous_images == ["registry.example.com/search:v2.22.15"]
    assert latest.changed == ["image"]
    assert latest.change_cause == "deploy search v2.23.1 (pipeline 8812)"
    assert latest.current is True
    assert [r.current for r in search[1:]] == [False, False, False]
    assert latest.summary == (
        "revision 4 (search-894587957d, current) at 13:53Z: image search:v2.22.15 -> search:v2.23.1"
        ' [change-cause: "deploy search v2.23.1 (pipeline 8812)"]'
    )
    assert search[1].summary.startswith("revision 3 (search-c7f8794bd6) at 2025-06-05 13:42Z: image search:v2.22.12")
    assert search[-1].changed == []
    assert search[-1].previous_images == []
    assert "first revision" in search[-1].summary


async def test_a_recent_rollout_of_another_deployment_in_the_namespace_is_included(tmp_path: Path) -> None:
    evidence = await evidence_of(tmp_path, "kube_bad_deploy.json", BAD_DEPLOY)

    others = [r for r in evidence.rollouts if r.deployment != "search"]
    # cart rolled out 12:56:58Z, inside [onset - 1 h, at]; gateway's last rollout (June 3rd) is not.
    assert [(r.namespace, r.deployment, r.revision) for r in others] == [("food", "cart", 3)]
    assert others[0].summary.startswith("food/cart revision 3 (cart-55f4d76cd9, current) at 12:56Z: image cart:v1.0.5")
    assert others[0].changed == ["image"]


async def test_a_short_baseline_leaves_the_older_neighbour_rollout_out(tmp_path: Path) -> None:
    request = BAD_DEPLOY.model_copy(update={"baseline_s": 600.0})
    evidence = await evidence_of(tmp_path, "kube_bad_deploy.json", request)

    assert {r.deployment for r in evidence.rollouts} == {"search"}


async def test_each_kind_of_template_change_is_named_and_history_is_bounded(tmp_path: Path) -> None:
    async with serving(tmp_path, "kube_config_changes.json") as api:
        with activities(api, max_rollouts=5) as acts:
            evidence = await gather(acts, CONFIG_CHANGES)
        selectors = [q.get("labelSelector") for q in _queries(api, "/api/v1/namespaces/pay/pods")]

    checkout = [r for r in evidence.rollouts if r.deployment == "checkout"]
    assert [(r.revision, r.changed) for r in checkout] == [
        (6, ["args", "template"]),
        (5, ["restart"]),
        (4, ["resources"]),
        (3, ["config"]),
        (2, ["env"]),
    ]
    env_only = checkout[-1]
    assert env_only.images == env_only.previous_images == ["registry.example.com/checkout:v3.4.0"]
    assert "env LOG_LEVEL changed" in env_only.summary
    assert env_only.change_cause == "kubectl set env deployment/checkout LOG_LEVEL=debug"
    assert "limits.memory 512Mi -> 1Gi" in checkout[2].summary
    assert "+configMap/checkout-config-v2 -configMap/checkout-config" in checkout[3].summary
    assert "readinessProbe" in checkout[0].summary
    assert [r.current for r in checkout] == [True, False, False, False, False]
    assert "Deployment checkout: 1 older revisions not shown" in evidence.notes
    # The workload's pods were read with the Deployment's own (set-based) selector.
    assert "app=checkout,tier in (web,api)" in selectors
    assert [p.workload for p in evidence.pods] == ["checkout", "checkout", "checkout-worker"]


async def test_a_workload_that_is_not_a_deployment_is_a_note_not_an_error(tmp_path: Path) -> None:
    request = BAD_DEPLOY.model_copy(update={"workload": "pg-main"})
    evidence = await evidence_of(tmp_path, "kube_bad_deploy.json", request)

    assert any("food/pg-main is not a Deployment" in note for note in evidence.notes)
    # Neighbours' rollouts in the window are still reported (search's and cart's).
    assert [(r.deployment, r.revision) for r in evidence.rollouts] == [("search", 4), ("cart", 3)]
    assert evidence.pods[0].name == "pg-main-0"
    assert evidence.pods[0].workload == "pg-main"
    assert evidence.nodes


# --- pods -------------------------------------------------------------------------------------------------


async def test_crash_looping_pods_show_the_waiting_reason_and_the_last_termination(tmp_path: Path) -> None:
    evidence = await evidence_of(tmp_path, "kube_crash_loop.json", CRASH_LOOP)

    names = [p.name for p in evidence.pods]
    # The workload's pods first, then the least healthy of the rest.
    assert names[:3] == ["search-b798787564-plpkt", "search-b798787564-fglvf", "reports-6c9d8b7f5d-q7w2x"]
    pod = evidence.pods[0]
    assert pod.namespace == "events-apac"
    assert pod.workload == "search"
    assert pod.node == "ip-10-0-22-88.ap-southeast-2.compute.internal"
    assert pod.phase == "Running"
    assert pod.ready is False
    assert pod.restarts == 7
    assert pod.waiting_reason == "CrashLoopBackOff"
    assert pod.last_termination_reason == "Error"
    assert pod.last_exit_code == 1
    assert pod.last_terminated_at == datetime(2025, 5, 20, 11, 3, 38, tzinfo=UTC)
    stuck = evidence.pods[2]
    assert (stuck.workload, stuck.waiting_reason, stuck.restarts) == ("reports", "CreateContainerConfigError", 0)
    healthy = next(p for p in evidence.pods if p.name == "catalog-77547bf4bf-5h8rs")
    assert (healthy.ready, healthy.waiting_reason, healthy.last_termination_reason) == (True, None, "Completed")


async def test_oom_killed_pods_show_the_reason_and_exit_code(tmp_path: Path) -> None:
    evidence = await evidence_of(tmp_path, "kube_oom_kill.json", OOM_KILL)

    inventory = [p for p in evidence.pods if p.workload == "inventory"]
    assert [p.name for p in inventory] == ["inventory-d74bcddf8b-lln6v", "inventory-d74bcddf8b-mxdf4"]
    assert [p.name for p in evidence.pods[:2]] == [p.name for p in inventory]
    for pod in inventory:
        assert pod.last_termination_reason == "OOMKilled"
        assert pod.last_exit_code == 137
        assert pod.restarts == 2
        assert pod.ready is True  # restarted and running again: the restarts are the signal
    assert inventory[1].last_terminated_at == datetime(2025, 8, 13, 20, 0, 26, tzinfo=UTC)
    # No rollout of inventory near the alert: the newest revision is weeks old.
    assert evidence.rollouts[0].revision == 3
    assert evidence.rollouts[0].at == datetime(2025, 7, 26, 23, 0, 15, tzinfo=UTC)
    assert all(r.deployment == "inventory" for r in evidence.rollouts)


async def test_pods_are_bounded_with_the_workloads_first(tmp_path: Path) -> None:
    evidence = await evidence_of(tmp_path, "kube_bad_deploy.json", BAD_DEPLOY, max_pods=4)

    assert [p.workload for p in evidence.pods] == ["search", "search", "search", "cart"]
    assert any(note.startswith("5 more pods not shown") for note in evidence.notes)


async def test_the_alerts_own_pod_comes_first(tmp_path: Path) -> None:
    request = BAD_DEPLOY.model_copy(update={"pod": "search-894587957d-llt6d"})
    evidence = await evidence_of(tmp_path, "kube_bad_deploy.json", request)

    assert evidence.pods[0].name == "search-894587957d-llt6d"


# --- nodes ------------------------------------------------------------------------------------------------


async def test_not_ready_and_pressured_nodes_come_first_and_idle_healthy_nodes_are_left_out(tmp_path: Path) -> None:
    evidence = await evidence_of(tmp_path, "kube_node_failure.json", NODE_FAILURE)

    nodes = {n.name: n for n in evidence.nodes}
    assert evidence.nodes[0].name == NOT_READY_NODE
    assert nodes[NOT_READY_NODE].ready is False
    assert nodes["ip-10-0-60-192.eu-west-1.compute.internal"].pressure == ["DiskPressure"]
    assert nodes["ip-10-0-48-46.eu-west-1.compute.internal"].unschedulable is True
    assert nodes["ip-10-0-26-69.eu-west-1.compute.internal"].ready is True
    assert nodes["ip-10-0-26-69.eu-west-1.compute.internal"].pressure == []
    # Ready, unpressured, and hosting no pod of events-prod.
    assert "ip-10-0-71-15.eu-west-1.compute.internal" not in nodes
    assert len(evidence.nodes) == 4


async def test_a_node_alert_without_a_namespace_reads_nodes_and_the_pods_on_the_node(tmp_path: Path) -> None:
    request = _request("", "", "2025-05-07T18:38:49.766Z", "2025-05-07T18:39:21.094Z", node=NOT_READY_NODE).model_copy(
        update={"alertname": "KubeNodeNotReady"}
    )
    evidence = await evidence_of(tmp_path, "kube_node_failure.json", request)

    assert [(n.name, n.ready) for n in evidence.nodes] == [(NOT_READY_NODE, False)]
    assert [(p.namespace, p.name, p.node) for p in evidence.pods] == [
        ("events-prod", "search-4ffb946cf9-j6z6s", NOT_READY_NODE)
    ]
    assert evidence.rollouts == []
    assert evidence.notes
    # The node controller's Warning events, from every namespace: the pods it found on a node that is not ready.
    assert {e.reason for e in evidence.events} == {"NodeNotReady"}
    assert {e.namespace for e in evidence.events} == {"events-prod", "kube-system"}
    assert ("Pod", "gateway-66ff899ddc-drtfx") in {(e.kind, e.name) for e in evidence.events}


async def test_a_node_alert_without_permission_to_list_nodes_fails(tmp_path: Path) -> None:
    request = _request("", "", "2025-05-07T18:38:49.766Z", "2025-05-07T18:39:21.094Z", node=NOT_READY_NODE)
    async with serving(tmp_path, "kube_node_failure.json") as api:
        api.emulator.forbid("/api/v1/nodes")
        with activities(api) as acts, pytest.raises(ApplicationError) as caught:
            await gather(acts, request)

    assert caught.value.type == SOURCE_FORBIDDEN
    assert caught.value.non_retryable is True
    assert caught.value.message.startswith("forbidden: list nodes: nodes is forbidden")


# --- events -----------------------------------------------------------------------------------------------


async def test_only_warning_events_deduplicated_and_newest_first(tmp_path: Path) -> None:
    async with serving(tmp_path, "kube_crash_loop.json") as api:
        with activities(api) as acts:
            evidence = await gather(acts, CRASH_LOOP)
        queries = _queries(api, "/api/v1/namespaces/events-apac/events")

    assert queries == [{"fieldSelector": "type=Warning"}]
    assert [(e.name, e.reason) for e in evidence.events] == [
        ("search-b798787564-plpkt", "BackOff"),
        ("reports-6c9d8b7f5d-q7w2x", "Failed"),
        ("search-b798787564-fglvf", "BackOff"),
    ]
    plpkt = evidence.events[0]
    assert plpkt.count == 121 + 5  # two Event objects for the same pod and reason
    assert plpkt.last_seen == datetime(2025, 5, 20, 11, 3, 43, tzinfo=UTC)
    assert plpkt.kind == "Pod"
    assert plpkt.namespace == "events-apac"
    assert plpkt.message.startswith("Back-off restarting failed container search in pod search-b798787564-plpkt")
    assert evidence.events[1].message == 'Error: secret "reports-db" not found'
    assert evidence.events[1].count == 98


async def test_warning_events_are_bounded(tmp_path: Path) -> None:
    evidence = await evidence_of(tmp_path, "kube_crash_loop.json", CRASH_LOOP, max_events=2)

    assert [e.name for e in evidence.events] == ["search-b798787564-plpkt", "reports-6c9d8b7f5d-q7w2x"]
    assert "1 more Warning events (older) not shown" in evidence.notes


async def test_a_namespace_with_only_normal_events_has_no_events(tmp_path: Path) -> None:
    evidence = await evidence_of(tmp_path, "kube_bad_deploy.json", BAD_DEPLOY)

    assert evidence.events == []
    assert evidence.notes == []


# --- errors -----------------------------------------------------------------------------------------------


async def test_forbidden_pods_fail_the_activity_naming_what_was_refused(tmp_path: Path) -> None:
    async with serving(tmp_path, "kube_bad_deploy.json") as api:
        api.emulator.forbid("/api/v1/namespaces/food/pods")
        with activities(api) as acts, pytest.raises(ApplicationError) as caught:
            await gather(acts, BAD_DEPLOY)

    assert caught.value.type == SOURCE_FORBIDDEN
    assert caught.value.non_retryable is True
    assert caught.value.message.startswith("forbidden: list pods in namespace food: ")
    assert 'cannot list resource "pods"' in caught.value.message


async def test_unauthorized_replicasets_fail_the_activity(tmp_path: Path) -> None:
    async with serving(tmp_path, "kube_bad_deploy.json") as api:
        api.emulator.forbid("/apis/apps/v1/namespaces/food/replicasets", status=401)
        with activities(api) as acts, pytest.raises(ApplicationError) as caught:
            await gather(acts, BAD_DEPLOY)

    assert caught.value.type == SOURCE_FORBIDDEN
    assert caught.value.non_retryable is True
    assert "unauthorized: list replicasets in namespace food" in caught.value.message


async def test_forbidden_nodes_and_events_are_notes_and_the_rest_is_kept(tmp_path: Path) -> None:
    async with serving(tmp_path, "kube_crash_loop.json") as api:
        api.emulator.forbid("/api/v1/nodes")
        api.emulator.forbid("/api/v1/namespaces/events-apac/events")
        with activities(api) as acts:
            evidence = await gather(acts, CRASH_LOOP)

    assert evidence.nodes == []
    assert evidence.events == []
    assert any(n.startswith("nodes not gathered: forbidden: list nodes: nodes is forbidden") for n in evidence.notes)
    assert any(
        n.startswith("events not gathered: forbidden: list events in namespace events-apac") for n in evidence.notes
    )
    assert evidence.pods[0].waiting_reason == "CrashLoopBackOff"
    assert [r.revision for r in evidence.rollouts if r.deployment == "search"] == [3, 2, 1]


async def test_a_server_error_is_a_retryable_source_unavailable(tmp_path: Path) -> None:
    async with serving(tmp_path, "kube_bad_deploy.json") as api:
        status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503, "message": "etcd timeout"}
        api.emulator["get /apis/apps/v1/namespaces/food/deployments"] << 503 << status
        with activities(api) as acts, pytest.raises(ApplicationError) as caught:
            await gather(acts, BAD_DEPLOY)

    assert caught.value.type == SOURCE_UNAVAILABLE
    assert caught.value.non_retryable is False
    assert "503" in caught.value.message
    assert "list deployments in namespace food" in caught.value.message


async def test_connection_refused_is_a_retryable_source_unavailable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
    api = KubeAPI(emulator=None, url=url, kubeconfig=kubeconfig)  # type: ignore[arg-type]

    with activities(api, timeout_s=2.0) as acts, pytest.raises(ApplicationError) as caught:
        await gather(acts, BAD_DEPLOY)

    assert caught.value.type == SOURCE_UNAVAILABLE
    assert caught.value.non_retryable is False
    assert url in caught.value.message
    assert "unreachable" in caught.value.message


async def test_a_hung_api_past_the_timeout_is_a_retryable_source_unavailable(tmp_path: Path) -> None:
    async with serving(tmp_path, "kube_bad_deploy.json") as api:
        api.emulator.hang("/api/v1/namespaces/food/pods")
        with activities(api, timeout_s=0.3) as acts:
            started = time.monotonic()
            with pytest.raises(ApplicationError) as caught:
                await gather(acts, BAD_DEPLOY)
            elapsed = time.monotonic() - started

    assert caught.value.type == SOURCE_UNAVAILABLE
    assert caught.value.non_retryable is False
    assert "timed out for list pods in namespace food" in caught.value.message
    assert elapsed < 3.0  # the client's timeout (or the per-call deadline of 1.45 s), not the server's 60 s hold


async def test_no_client_is_source_not_configured() -> None:
    with pytest.raises(ApplicationError) as caught:
        await gather(KubernetesActivities(None), BAD_DEPLOY)

    assert caught.value.type == SOURCE_NOT_CONFIGURED
    assert caught.value.non_retryable is True
    assert "KUBECONFIG" in caught.value.message


# --- load_kubernetes_client -------------------------------------------------------------------------------


@pytest.fixture
def no_cluster_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    return home


def test_nothing_configured_is_no_client(no_cluster_env: Path) -> None:
    assert load_kubernetes_client() is None


def test_a_service_host_without_a_service_account_is_no_client(
    no_cluster_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")

    assert load_kubernetes_client() is None  # no token mounted here: not configured, not an exception


def test_a_kubeconfig_variable_pointing_nowhere_is_no_client(
    no_cluster_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(no_cluster_env / "missing"))

    assert load_kubernetes_client() is None


async def test_kubeconfig_variable_gives_a_working_client(
    no_cluster_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with serving(tmp_path, "kube_oom_kill.json") as api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig))
        client = load_kubernetes_client()
        assert isinstance(client, k8s_client.ApiClient)
        try:
            assert client.configuration.host == api.url
            evidence = await gather(KubernetesActivities(client), OOM_KILL)
        finally:
            client.close()

    assert evidence.pods[0].last_termination_reason == "OOMKilled"


async def test_home_kube_config_gives_a_client(no_cluster_env: Path, tmp_path: Path) -> None:
    (no_cluster_env / ".kube").mkdir()
    write_kubeconfig(no_cluster_env / ".kube" / "config", "http://127.0.0.1:6443")

    client = load_kubernetes_client()

    assert isinstance(client, k8s_client.ApiClient)
    assert client.configuration.host == "http://127.0.0.1:6443"
    client.close()


# --- the emulator's own extras (used by other readers of the cluster) ----------------------------------------


async def test_emulator_serves_pod_logs_as_text_and_dry_runs_change_nothing(tmp_path: Path) -> None:
    pod = "search-b798787564-plpkt"

    def use_the_official_client(api: KubeAPI) -> tuple[str, Any, Any, Any]:
        # Synchronous: runs in a thread, the emulator answers on the test's event loop.
        client = api.client()
        try:
            core, apps = k8s_client.CoreV1Api(client), k8s_client.AppsV1Api(client)
            tail = core.read_namespaced_pod_log(pod, "events-apac", tail_lines=1)
            patched = apps.patch_namespaced_deployment(
                "search", "events-apac", {"spec": {"replicas": 0}}, dry_run="All"
            )
            core.delete_namespaced_pod(pod, "events-apac", dry_run="All")
            still = apps.read_namespaced_deployment("search", "events-apac")
            pods = core.list_namespaced_pod("events-apac", label_selector="app in (search)")
            return tail, patched, still, pods
        finally:
            client.close()

    async with serving(tmp_path, "kube_crash_loop.json") as api:
        api.emulator.logs["events-apac", pod] = "starting search\nFATAL: SEARCH_INDEX_URL is not set\n"
        tail, patched, still, pods = await asyncio.to_thread(use_the_official_client, api)

    assert tail == "FATAL: SEARCH_INDEX_URL is not set\n"
    assert patched.spec.replicas == 0
    assert still.spec.replicas == 2
    assert sorted(p.metadata.name for p in pods.items) == ["search-b798787564-fglvf", pod]
