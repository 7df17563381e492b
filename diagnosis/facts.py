"""The incident's evidence, indexed the way the scoring rules ask about it: per workload, per metric, per time.

Everything here is pure and deterministic (the workflow may replay it); no rule reads the raw evidence directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from models.evidence import Condition, KubeEvent, LogTemplate, NodeStatus, PodStatus, Rollout, SeriesChange
from models.incident import Alert, Evidence, PastIncident, TriageResult
from triage.labels import namespace_of, pod_of, workload_of

# Signs of a workload's own trouble (not of its demand): when the earliest of them began, the trouble began.
SYMPTOM_METRICS = frozenset(
    {
        "error_ratio",
        "latency_p99",
        "probe_success",
        "restarts",
        "replicas_available",
        "cpu_throttling",
        "memory_of_limit",
        "pool_pending",
    }
)
# Kubernetes' generated name suffixes use this alphabet (no vowels, no 0/1/3), so "cart-proxy-b7x2z" is no pod of
# "cart": "proxy" could never be a ReplicaSet hash.
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_GENERATED = re.compile(rf"{_SAFE}{{5,10}}-{_SAFE}{{5}}|{_SAFE}{{5}}|\d+")
# A finding must be this strong to count as a signal; weaker ones are context for a person.
SIGNIFICANT = 4.0
# A container that last died this long before the trouble began died of something else.
RECENT_TERMINATION = timedelta(hours=1)


@dataclass(frozen=True)
class Facts:
    alerts: Sequence[Alert]
    triage: TriageResult
    evidence: Evidence
    namespace: str
    lead: str  # the workload the incident is named after ("" for node and cluster alerts)
    alerting: tuple[str, ...]  # every workload a firing alert names, the lead first
    onset: datetime  # when the first alert began
    node: str = ""  # the node an alert names, if any
    volume: str = ""  # the PersistentVolumeClaim an alert names, if any
    pod: str = ""  # the pod the lead alert names, if any
    gaps: frozenset[str] = field(default_factory=frozenset)  # sources that did not answer
    seen_before: tuple[PastIncident, ...] = ()  # closed incidents of the same alert on the same workload

    # ---- metrics ------------------------------------------------------------------------------------------

    def findings(
        self, metric: str | None = None, workload: str | None = None, direction: str | None = None
    ) -> list[SeriesChange]:
        return [
            f
            for f in self.evidence.findings
            if (metric is None or f.metric == metric)
            and (workload is None or f.workload == workload)
            and (direction is None or f.direction == direction)
            and abs(f.score) >= SIGNIFICANT
        ]

    def finding(self, metric: str, workload: str, direction: str = "up") -> SeriesChange | None:
        found = self.findings(metric, workload, direction)
        return max(found, key=lambda f: abs(f.score)) if found else None

    def conditions(self, metric: str) -> list[Condition]:
        return [c for c in self.evidence.conditions if c.metric == metric]

    def symptom_onset(self, workload: str) -> datetime:
        """When the workload's trouble began: its earliest symptom change, else the alert's start."""
        starts = [
            f.onset
            for f in self.evidence.findings
            if f.workload == workload
            and f.metric in SYMPTOM_METRICS
            and f.onset is not None
            and abs(f.score) >= SIGNIFICANT
        ]
        return min([*starts, self.onset])

    # ---- Kubernetes ---------------------------------------------------------------------------------------

    def pods(self, workload: str) -> list[PodStatus]:
        # The owner Kubernetes reported wins; the name is only a clue when the owner is unknown.
        return [
            p
            for p in self.evidence.pods
            if p.workload == workload or (not p.workload and _pod_belongs(p.name, workload))
        ]

    def recent_terminations(self, workload: str, reasons: Iterable[str]) -> list[PodStatus]:
        """The workload's pods whose last termination (for one of ``reasons``) belongs to this incident's window."""
        wanted, since = set(reasons), self.symptom_onset(workload) - RECENT_TERMINATION
        return [
            p
            for p in self.pods(workload)
            if p.last_termination_reason in wanted and (p.last_terminated_at is None or p.last_terminated_at >= since)
        ]

    def rollouts(self, workload: str) -> list[Rollout]:
        return [r for r in self.evidence.rollouts if r.deployment == workload]

    def rollout_near(self, workload: str, before: timedelta, after: timedelta) -> Rollout | None:
        """A change to the workload's pod template shortly before (or just after) its trouble began."""
        began = self.symptom_onset(workload)
        for rollout in self.rollouts(workload):
            if rollout.at is None or not rollout.changed:
                continue
            if began - before <= rollout.at <= began + after:
                return rollout
        return None

    def events(self, workload: str) -> list[KubeEvent]:
        return [e for e in self.evidence.events if _pod_belongs(e.name, workload) or e.name == workload]

    def nodes_not_ready(self) -> list[NodeStatus]:
        return [n for n in self.evidence.nodes if not n.ready]

    def known_workloads(self) -> set[str]:
        """Every workload the evidence names in this namespace (deployments, pods' owners, services)."""
        names = {r.deployment for r in self.evidence.rollouts if r.namespace == self.namespace}
        names |= {p.workload for p in self.evidence.pods if p.workload and p.namespace == self.namespace}
        names |= {f.workload for f in self.evidence.findings if f.labels.get("namespace") == self.namespace}
        return {name for name in names if name}

    # ---- logs ---------------------------------------------------------------------------------------------

    def templates(self, pattern: re.Pattern[str], workloads: Iterable[str] | None = None) -> list[LogTemplate]:
        wanted = set(workloads) if workloads is not None else None
        return [
            t
            for t in self.evidence.log_templates
            if (wanted is None or wanted & set(t.workloads))
            and (pattern.search(t.template) or pattern.search(t.sample))
        ]

    # ---- the alert itself ---------------------------------------------------------------------------------

    def alert_expression_series(self) -> int | None:
        """How many series the alert's own expression returned when the incident looked (None: not asked)."""
        for item in self.evidence.items:
            if item.kind == "alert_expression":
                series = item.data.get("series")
                return len(series) if isinstance(series, list) else None
        return None


def facts_of(
    alerts: Sequence[Alert], triage: TriageResult, evidence: Evidence, seen_before: Sequence[PastIncident] = ()
) -> Facts:
    firing = [alert for alert in alerts if alert.status == "firing"] or list(alerts)
    lead_labels = next(
        (alert.labels for alert in firing if alert.alertname == triage.alertname and workload_of(alert.labels)),
        firing[0].labels if firing else {},
    )
    alerting = [triage.service] if triage.service else []
    alerting += [w for alert in firing if (w := workload_of(alert.labels)) and w not in alerting]
    return Facts(
        alerts=alerts,
        triage=triage,
        evidence=evidence,
        namespace=triage.namespace or namespace_of(lead_labels),
        lead=triage.service,
        alerting=tuple(alerting),
        onset=min(alert.starts_at for alert in firing),
        node=lead_labels.get("node") or lead_labels.get("kubernetes_node") or "",
        volume=lead_labels.get("persistentvolumeclaim", ""),
        pod=pod_of(lead_labels),
        gaps=frozenset(gap.source for gap in evidence.gaps),
        seen_before=tuple(seen_before),
    )


def _pod_belongs(pod: str, workload: str) -> bool:
    """``<workload>-<replicaset hash>-<suffix>`` or ``<workload>-<ordinal>`` (StatefulSet)."""
    if not workload or not pod.startswith(workload + "-"):
        return False
    return bool(_GENERATED.fullmatch(pod[len(workload) + 1 :]))
