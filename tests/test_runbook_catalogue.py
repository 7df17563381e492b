"""Properties of the shipped runbook catalogue (``runbooks/*.yaml``) as a whole.

Each runbook is validated on its own when it loads; these tests check what only the whole catalogue can get wrong:
coverage of the kube-prometheus workload alerts and of the root-cause taxonomy, ambiguous matches, priors, and
actions that could not fix the cause they claim to address. The alert names are listed literally: the tests must not
read the shared corpora or scenarios at run time.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import UTC, datetime

import pytest

from config.settings import PROJECT_ROOT
from models.incident import ActionType, Alert, Category, Evidence
from triage.planning import diagnose, triage
from triage.runbooks import Runbook, find_runbook, load_runbook, load_runbooks

RUNBOOKS_DIR = PROJECT_ROOT / "runbooks"

# kube-prometheus' default alerts about workloads, nodes and volumes (kubernetes-apps, -resources, -storage,
# -system-kubelet, node-exporter, general.rules), each with the one runbook that must handle it. Control-plane,
# Prometheus/Alertmanager self-monitoring, Watchdog/InfoInhibitor, kube-state-metrics and node housekeeping alerts
# (clock, textfile collector) are deliberately not here.
KUBE_PROMETHEUS_WORKLOAD_ALERTS: dict[str, str] = {
    # kubernetes-apps
    "KubePodCrashLooping": "kube-pod-crash-looping",
    "KubePodNotReady": "kube-pod-not-ready",
    "KubeDeploymentGenerationMismatch": "kube-deployment-generation-mismatch",
    "KubeDeploymentReplicasMismatch": "kube-deployment-replicas-mismatch",
    "KubeDeploymentRolloutStuck": "kube-deployment-replicas-mismatch",
    "KubeStatefulSetReplicasMismatch": "kube-statefulset-replicas-mismatch",
    "KubeStatefulSetGenerationMismatch": "kube-statefulset-replicas-mismatch",
    "KubeStatefulSetUpdateNotRolledOut": "kube-statefulset-replicas-mismatch",
    "KubeDaemonSetRolloutStuck": "kube-daemonset-rollout-stuck",
    "KubeDaemonSetNotScheduled": "kube-daemonset-rollout-stuck",
    "KubeDaemonSetMisScheduled": "kube-daemonset-rollout-stuck",
    "KubeContainerWaiting": "kube-container-waiting",
    "KubeJobNotCompleted": "kube-job-not-completed",
    "KubeJobFailed": "kube-job-failed",
    "KubeHpaReplicasMismatch": "kube-hpa-replicas-mismatch",
    "KubeHpaMaxedOut": "kube-hpa-maxed-out",
    "KubePdbNotEnoughHealthyPods": "kube-pdb-not-enough-healthy-pods",
    # kubernetes-resources
    "KubeCPUOvercommit": "kube-cluster-overcommit",
    "KubeMemoryOvercommit": "kube-cluster-overcommit",
    "KubeCPUQuotaOvercommit": "kube-cluster-overcommit",
    "KubeMemoryQuotaOvercommit": "kube-cluster-overcommit",
    "KubeQuotaAlmostFull": "kube-quota-exhausted",
    "KubeQuotaFullyUsed": "kube-quota-exhausted",
    "KubeQuotaExceeded": "kube-quota-exhausted",
    "CPUThrottlingHigh": "cpu-throttling-high",
    # kubernetes-storage
    "KubePersistentVolumeFillingUp": "kube-persistent-volume-filling-up",
    "KubePersistentVolumeInodesFillingUp": "kube-persistent-volume-filling-up",
    "KubePersistentVolumeErrors": "kube-persistent-volume-errors",
    # kubernetes-system-kubelet
    "KubeNodeNotReady": "kube-node-not-ready",
    "KubeNodeUnreachable": "kube-node-not-ready",
    "KubeletInstanceUnreachable": "kube-node-not-ready",
    "KubeNodeReadinessFlapping": "kube-node-readiness-flapping",
    "KubeNodePressure": "kube-node-pressure",
    "KubeNodeEviction": "kube-node-pressure",
    "KubeletTooManyPods": "kubelet-too-many-pods",
    "KubeletPlegDurationHigh": "kubelet-runtime-slow",
    "KubeletPodStartUpLatencyHigh": "kubelet-runtime-slow",
    "KubeletClientCertificateExpiration": "kubelet-certificate-expiration",
    "KubeletServerCertificateExpiration": "kubelet-certificate-expiration",
    "KubeletClientCertificateRenewalErrors": "kubelet-certificate-expiration",
    "KubeletServerCertificateRenewalErrors": "kubelet-certificate-expiration",
    # node-exporter
    "NodeFilesystemSpaceFillingUp": "node-filesystem-filling-up",
    "NodeFilesystemAlmostOutOfSpace": "node-filesystem-filling-up",
    "NodeFilesystemFilesFillingUp": "node-filesystem-filling-up",
    "NodeFilesystemAlmostOutOfFiles": "node-filesystem-filling-up",
    "NodeMemoryHighUtilization": "node-memory-pressure",
    "NodeMemoryMajorPagesFaults": "node-memory-pressure",
    "NodeCPUHighUsage": "node-cpu-saturation",
    "NodeSystemSaturation": "node-cpu-saturation",
    "NodeDiskIOSaturation": "node-cpu-saturation",
    "NodeNetworkReceiveErrs": "node-network-errors",
    "NodeNetworkTransmitErrs": "node-network-errors",
    "NodeNetworkInterfaceFlapping": "node-network-errors",
    "NodeBondingDegraded": "node-network-errors",
    "NodeFileDescriptorLimit": "node-kernel-limits",
    "NodeHighNumberConntrackEntriesUsed": "node-kernel-limits",
    "NodeRAIDDegraded": "node-hardware-degraded",
    "NodeRAIDDiskFailure": "node-hardware-degraded",
    "NodeSystemdServiceFailed": "node-hardware-degraded",
    "NodeSystemdServiceCrashlooping": "node-hardware-degraded",
    # general.rules
    "TargetDown": "target-down",
}

# Every alertname in the public scenarios' alert.json files (shared/scenarios/*/alert.json), copied literally.
SCENARIO_ALERTNAMES: dict[str, str] = {
    "BlackboxSslCertificateExpired": "tls-certificate-expiry",
    "CPUThrottlingHigh": "cpu-throttling-high",
    "CoreDNSErrorsHigh": "coredns-errors",
    "HighErrorRate": "high-error-rate",
    "HighLatency": "high-latency",
    "KubeContainerOOMKilled": "container-oom-killed",
    "KubeNodeNotReady": "kube-node-not-ready",
    "KubePersistentVolumeFillingUp": "kube-persistent-volume-filling-up",
    "KubePodCrashLooping": "kube-pod-crash-looping",
}

# The rule for mutating actions: each may only claim the causes it can actually fix.
# - rollback undoes a rollout: only bad_deploy.
# - raise_memory_limit helps only containers killed at their limit: only oom_kill.
# - cordon_node keeps pods off a bad node: only node_failure.
# - scale_up adds capacity: only demand beyond capacity (traffic_surge) or CPU-bound pods (cpu_saturation).
# - rollout_restart gives fresh processes: it releases leaked connections (connection_pool_exhaustion), resets a
#   leaking heap (oom_kill) and unwedges a hung process (application_error); aimed at the diagnosed root cause,
#   it unwedges a dependency whose pods stopped answering (dependency_failure). It does NOT fix a crash loop (the
#   new pods crash the same way) nor DNS (CoreDNS with a broken configuration would only crash on restart).
# - delete_pod does the same for one pod, and also lets a pod stranded on a lost node be recreated elsewhere
#   (node_failure).
RESTART_FIXES = {
    Category.application_error,
    Category.connection_pool_exhaustion,
    Category.oom_kill,
    Category.dependency_failure,
}
MUTATING_ACTION_FIXES: dict[ActionType, set[Category]] = {
    ActionType.rollback: {Category.bad_deploy},
    ActionType.raise_memory_limit: {Category.oom_kill},
    ActionType.cordon_node: {Category.node_failure},
    ActionType.scale_up: {Category.traffic_surge, Category.cpu_saturation},
    ActionType.rollout_restart: RESTART_FIXES,
    ActionType.delete_pod: RESTART_FIXES | {Category.node_failure},
}
# Where each mutating action is aimed (resolved from the alert's labels by the planner).
MUTATING_ACTION_TARGET: dict[ActionType, str] = {
    ActionType.rollback: "workload",
    ActionType.raise_memory_limit: "workload",
    ActionType.scale_up: "workload",
    ActionType.rollout_restart: "workload",
    ActionType.delete_pod: "pod",
    ActionType.cordon_node: "node",
}

UPSTREAM_RUNBOOK_URL = re.compile(r"^https://runbooks\.prometheus-operator\.dev/runbooks/(\w+)/(\w+)$")
EPSILON = 1e-9


@pytest.fixture(scope="module")
def catalogue() -> list[Runbook]:
    return load_runbooks(RUNBOOKS_DIR)


def matching(catalogue: list[Runbook], alertname: str) -> list[str]:
    return [runbook.id for runbook in catalogue if runbook.matches(alertname, {})]


def test_every_file_loads_and_ids_are_unique_and_named_after_the_file(catalogue: list[Runbook]) -> None:
    files = sorted(RUNBOOKS_DIR.glob("*.yaml"))
    assert len(files) == len(catalogue)
    for path in files:
        assert load_runbook(path).id == path.stem, f"{path.name}: the file must be named after its id"
    ids = Counter(runbook.id for runbook in catalogue)
    assert [runbook_id for runbook_id, count in ids.items() if count > 1] == []


def test_every_category_but_unknown_is_a_hypothesis_somewhere(catalogue: list[Runbook]) -> None:
    covered = {hypothesis.category for runbook in catalogue for hypothesis in runbook.hypotheses}
    assert set(Category) - {Category.unknown} - covered == set()
    assert Category.unknown not in covered, "unknown is the agent abstaining, not a hypothesis"


@pytest.mark.parametrize("alertname", sorted(KUBE_PROMETHEUS_WORKLOAD_ALERTS))
def test_kube_prometheus_workload_alert_has_exactly_one_runbook(catalogue: list[Runbook], alertname: str) -> None:
    assert matching(catalogue, alertname) == [KUBE_PROMETHEUS_WORKLOAD_ALERTS[alertname]]
    found = find_runbook(catalogue, alertname, {"namespace": "shop", "severity": "warning"})
    assert found is not None and found.id == KUBE_PROMETHEUS_WORKLOAD_ALERTS[alertname]


@pytest.mark.parametrize("alertname", sorted(SCENARIO_ALERTNAMES))
def test_every_scenario_alertname_has_a_runbook(catalogue: list[Runbook], alertname: str) -> None:
    found = find_runbook(catalogue, alertname, {"namespace": "shop"})
    assert found is not None, f"no runbook for {alertname}"
    assert found.id == SCENARIO_ALERTNAMES[alertname]


def test_no_alertname_is_claimed_twice_with_the_same_label_matchers(catalogue: list[Runbook]) -> None:
    claims: dict[tuple[str, frozenset[tuple[str, str]]], list[str]] = {}
    for runbook in catalogue:
        matchers = frozenset(runbook.match.labels.items())
        for alertname in runbook.match.alertnames:
            claims.setdefault((alertname, matchers), []).append(runbook.id)
    ambiguous = {key: ids for key, ids in claims.items() if len(ids) > 1}
    assert ambiguous == {}


def test_alertnames_are_not_repeated_within_a_runbook(catalogue: list[Runbook]) -> None:
    for runbook in catalogue:
        names = runbook.match.alertnames
        assert len(set(names)) == len(names), runbook.id


def test_priors_sum_to_at_most_one_and_the_most_likely_cause_is_unambiguous(catalogue: list[Runbook]) -> None:
    for runbook in catalogue:
        priors = sorted((hypothesis.prior for hypothesis in runbook.hypotheses), reverse=True)
        assert math.fsum(priors) <= 1.0 + EPSILON, f"{runbook.id}: priors sum to {math.fsum(priors)}"
        # Without evidence the planner acts on the top prior; a tie would make the plan depend on list order.
        if len(priors) > 1:
            assert priors[0] - priors[1] > EPSILON, f"{runbook.id}: two causes share the top prior"


def test_noise_is_a_minor_hypothesis_answered_by_doing_nothing(catalogue: list[Runbook]) -> None:
    with_noise = [runbook for runbook in catalogue if Category.noise in {h.category for h in runbook.hypotheses}]
    assert with_noise, "no runbook considers that an alert may recover by itself"
    for runbook in with_noise:
        noise = next(h for h in runbook.hypotheses if h.category is Category.noise)
        top = max(h.prior for h in runbook.hypotheses)
        assert noise.prior <= 0.25 and noise.prior < top, f"{runbook.id}: noise must stay a low prior"
        answers = [action.type for action in runbook.actions if Category.noise in action.addresses]
        assert answers == [ActionType.none], f"{runbook.id}: noise is answered by 'none' and nothing else"


def test_mutating_actions_only_address_causes_they_can_fix(catalogue: list[Runbook]) -> None:
    for runbook in catalogue:
        for action in runbook.actions:
            if not action.type.mutating:
                assert action.target == "none", f"{runbook.id}: {action.type} needs no target"
                continue
            wrong = set(action.addresses) - MUTATING_ACTION_FIXES[action.type]
            assert wrong == set(), f"{runbook.id}: {action.type} cannot fix {sorted(c.value for c in wrong)}"
            assert action.target == MUTATING_ACTION_TARGET[action.type], f"{runbook.id}: {action.type} target"


def test_every_hypothesis_has_a_planned_answer(catalogue: list[Runbook]) -> None:
    for runbook in catalogue:
        addressed = {category for action in runbook.actions for category in action.addresses}
        unanswered = {h.category for h in runbook.hypotheses} - addressed
        assert unanswered == set(), f"{runbook.id}: no action for {sorted(c.value for c in unanswered)}"


def test_upstream_runbook_urls_name_an_alert_of_the_runbook(catalogue: list[Runbook]) -> None:
    for runbook in catalogue:
        if runbook.url is None or "runbooks.prometheus-operator.dev" not in runbook.url:
            continue
        match = UPSTREAM_RUNBOOK_URL.match(runbook.url)
        assert match is not None, f"{runbook.id}: malformed upstream url {runbook.url}"
        assert match.group(2) in {name.lower() for name in runbook.match.alertnames}, runbook.id


def test_query_placeholders_are_left_for_quoting(catalogue: list[Runbook]) -> None:
    for runbook in catalogue:
        for query in runbook.queries:
            # The placeholders become quoted PromQL strings; quoting them again would produce ""value"".
            assert not re.search(r"[\"']\$\{?(namespace|workload|pod)", query.promql), f"{runbook.id}/{query.metric}"
        metrics = [query.metric for query in runbook.queries]
        assert len(set(metrics)) == len(metrics), f"{runbook.id}: query metric names repeat"


# ---- how each runbook behaves in the diagnosis ---------------------------------------------------------------

ALL_ALERTNAMES = sorted(
    {(runbook.id, alertname) for runbook in load_runbooks(RUNBOOKS_DIR) for alertname in runbook.match.alertnames}
)


@pytest.mark.parametrize(("runbook_id", "alertname"), ALL_ALERTNAMES, ids=[f"{r}:{a}" for r, a in ALL_ALERTNAMES])
def test_every_runbook_abstains_and_mutates_nothing_without_evidence(
    catalogue: list[Runbook], runbook_id: str, alertname: str
) -> None:
    # An alert of each runbook, with the labels real rules carry, and nothing found anywhere: its priors alone must
    # never name a cause, and so never plan a change.
    labels = {
        "alertname": alertname,
        "severity": "critical",
        "namespace": "shop",
        "pod": "cart-7d9fb-x2k4p",
        "node": "node-a",
        "service": "cart",
    }
    alert = Alert(fingerprint="f", status="firing", labels=labels, starts_at=datetime(2026, 1, 1, tzinfo=UTC))
    triaged = triage([alert], catalogue)
    assert triaged.runbook_id == runbook_id
    outcome = diagnose([alert], triaged, Evidence(), catalogue)
    assert outcome.diagnosis.category is Category.unknown, outcome.diagnosis
    assert outcome.diagnosis.confidence < 0.4
    assert [action.type for action in outcome.actions] == [ActionType.escalate]
