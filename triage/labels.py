"""What an alert's labels say about where it is: severity, namespace, workload."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from models.incident import Severity

_SEVERITY_WORDS: dict[str, Severity] = {}
for _severity, _words in {
    Severity.critical: ("critical", "crit", "fatal", "emergency", "emerg", "alert", "disaster", "p1", "sev1"),
    Severity.high: ("high", "error", "err", "major", "severe", "page", "p2", "sev2"),
    Severity.medium: ("warning", "warn", "medium", "moderate", "average", "p3", "sev3"),
    Severity.low: ("info", "informational", "low", "minor", "notice", "none", "debug", "p4", "p5", "sev4"),
}.items():
    for _word in _words:
        _SEVERITY_WORDS[_word] = _severity

_RANK = {Severity.low: 0, Severity.medium: 1, Severity.high: 2, Severity.critical: 3}

# An unknown or missing severity label is treated as medium: worth a look, never silently dropped.
DEFAULT_SEVERITY = Severity.medium


def severity_of(labels: Mapping[str, str]) -> Severity:
    raw = labels.get("severity", labels.get("priority", "")).strip().lower()
    return _SEVERITY_WORDS.get(raw, DEFAULT_SEVERITY)


def highest_severity(label_sets: Iterable[Mapping[str, str]]) -> Severity:
    severities = [severity_of(labels) for labels in label_sets]
    return max(severities, key=_RANK.__getitem__, default=DEFAULT_SEVERITY)


_NAMESPACE_KEYS = ("namespace", "exported_namespace", "kubernetes_namespace", "k8s_namespace_name")
# Kubernetes draws generated name parts (ReplicaSet hashes, pod suffixes) from an alphabet without vowels,
# so "kube-proxy-x7k2p" cannot be Deployment "kube" with ReplicaSet hash "proxy".
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_NAME = r"(?P<workload>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
# Pods of a Deployment are named <deployment>-<replicaset hash>-<5 char suffix>.
_DEPLOYMENT_POD = re.compile(rf"^{_NAME}-{_SAFE}{{5,10}}-{_SAFE}{{5}}$")
# DaemonSet and Job pods: <owner>-<5 char suffix>; StatefulSet pods: <owner>-<ordinal>.
_SUFFIXED_POD = re.compile(rf"^{_NAME}-{_SAFE}{{5}}$")
_STATEFUL_POD = re.compile(rf"^{_NAME}-\d+$")


_EXPORTER_JOBS = frozenset(
    {"kube-state-metrics", "kubelet", "cadvisor", "node-exporter", "node_exporter", "blackbox", "blackbox-exporter"}
)


def namespace_of(labels: Mapping[str, str]) -> str:
    for key in _NAMESPACE_KEYS:
        if labels.get(key):
            return labels[key]
    return ""


def pod_of(labels: Mapping[str, str]) -> str:
    return labels.get("pod") or labels.get("kubernetes_pod_name") or labels.get("pod_name") or ""


def workload_of(labels: Mapping[str, str]) -> str:
    """The Deployment (or other workload) an alert points at, from the labels real rules carry."""
    for key in ("deployment", "statefulset", "daemonset", "workload"):
        if labels.get(key):
            return labels[key]
    pod = pod_of(labels)
    if pod:
        match = _DEPLOYMENT_POD.match(pod) or _SUFFIXED_POD.match(pod) or _STATEFUL_POD.match(pod)
        return match.group("workload") if match else pod
    for key in ("service", "app", "app_kubernetes_io_name", "container"):
        if labels.get(key):
            return labels[key]
    job = labels.get("job", "")
    # These jobs name the exporter that reports on something else (a node, a volume, any pod), not a workload.
    return "" if job in _EXPORTER_JOBS else job
