"""What the evidence sources report: typed, bounded, and honest about what they could not see.

Every source answers the same ``EvidenceRequest`` with its own result type; the workflow folds the results into
one ``Evidence`` (ranked, within a size budget) and records a gap for every source that could not answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class EvidenceRequest(BaseModel):
    """What every source is asked about. Times come from the workflow, so every source sees the same window."""

    workflow_id: str
    alertname: str
    namespace: str
    workload: str  # the Deployment (or service) the alert points at
    pod: str = ""
    node: str = ""
    alert_labels: list[dict[str, str]] = Field(default_factory=list)
    onset: datetime  # earliest startsAt of the firing alerts
    at: datetime  # "now", as the workflow saw it when it asked
    baseline_s: float = 3600.0  # how far before the onset the baseline window reaches
    runbook: str | None = None  # whose diagnostic queries to run besides the standard ones


class EvidenceItem(BaseModel):
    source: str
    kind: str
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)


class EvidenceGap(BaseModel):
    source: str
    reason: str


# ---- Prometheus ---------------------------------------------------------------------------------------------


class SeriesChange(BaseModel):
    """One series that changed around the onset: what, how much, since when, how sure."""

    metric: str  # e.g. error_ratio, latency_p99, cpu_throttling, memory_of_limit, restarts
    workload: str
    labels: dict[str, str] = Field(default_factory=dict)
    query: str
    baseline: float  # median of the baseline window
    recent: float  # median of the recent window
    change: float  # recent - baseline
    ratio: float | None = None  # recent / baseline, when the baseline is not zero
    score: float  # robust z-score of the change (MAD-scaled), capped; the ranking key
    direction: Literal["up", "down"]
    onset: datetime | None = None  # when the change began
    # The value over the last scrape interval, for a measure smoothed over minutes (None: not measured). Back
    # near the baseline while ``recent`` is not means the change is already over.
    now: float | None = None
    summary: str


class Condition(BaseModel):
    """A state that matters now, changed lately or not: a certificate about to expire, a full volume."""

    metric: str
    workload: str
    labels: dict[str, str] = Field(default_factory=dict)
    value: float
    summary: str


class MetricEvidence(BaseModel):
    red_convention: Literal["classic", "otel"] | None = None
    findings: list[SeriesChange] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    pod_owners: dict[str, str] = Field(default_factory=dict)  # pod -> Deployment
    queries: int = 0
    notes: list[str] = Field(default_factory=list)


# ---- Kubernetes ---------------------------------------------------------------------------------------------


class Rollout(BaseModel):
    namespace: str
    deployment: str
    revision: int
    replicaset: str
    at: datetime | None = None  # when this revision's ReplicaSet was created
    images: list[str] = Field(default_factory=list)
    previous_images: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)  # e.g. image, env, args, resources, config
    change_cause: str | None = None
    current: bool = False
    summary: str


class PodStatus(BaseModel):
    namespace: str
    name: str
    workload: str = ""
    node: str = ""
    phase: str = ""
    ready: bool = False
    restarts: int = 0
    last_termination_reason: str | None = None
    last_exit_code: int | None = None
    last_terminated_at: datetime | None = None
    waiting_reason: str | None = None


class NodeStatus(BaseModel):
    name: str
    ready: bool
    pressure: list[str] = Field(default_factory=list)  # conditions such as MemoryPressure that are True
    unschedulable: bool = False


class KubeEvent(BaseModel):
    namespace: str
    kind: str  # involved object's kind
    name: str  # involved object's name
    reason: str
    message: str
    count: int = 1
    last_seen: datetime | None = None


class KubernetesEvidence(BaseModel):
    rollouts: list[Rollout] = Field(default_factory=list)
    pods: list[PodStatus] = Field(default_factory=list)
    nodes: list[NodeStatus] = Field(default_factory=list)
    events: list[KubeEvent] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


# ---- Loki ---------------------------------------------------------------------------------------------------


class LogTemplate(BaseModel):
    template: str  # the mined pattern, variable parts as <*>
    count: int  # lines of the recent window that match it
    baseline_count: int = 0  # lines of the baseline window that match it
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    new: bool  # absent from the baseline window
    sample: str  # one real line, truncated
    workloads: list[str] = Field(default_factory=list)


class LogEvidence(BaseModel):
    query: str
    lines: int = 0  # lines read (after the caps)
    templates: list[LogTemplate] = Field(default_factory=list)
    truncated: bool = False  # a cap (lines or bytes) was hit
    notes: list[str] = Field(default_factory=list)


# ---- Alertmanager -------------------------------------------------------------------------------------------


class RelatedAlert(BaseModel):
    alertname: str
    labels: dict[str, str]
    state: str
    starts_at: datetime | None = None
    summary: str = ""
    fingerprint: str = ""


class RelatedAlerts(BaseModel):
    alerts: list[RelatedAlert] = Field(default_factory=list)


# ---- all of it ----------------------------------------------------------------------------------------------


class Evidence(BaseModel):
    items: list[EvidenceItem] = Field(default_factory=list)
    findings: list[SeriesChange] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    red_convention: str | None = None
    rollouts: list[Rollout] = Field(default_factory=list)
    pods: list[PodStatus] = Field(default_factory=list)
    nodes: list[NodeStatus] = Field(default_factory=list)
    events: list[KubeEvent] = Field(default_factory=list)
    log_templates: list[LogTemplate] = Field(default_factory=list)
    related_alerts: list[RelatedAlert] = Field(default_factory=list)
    gaps: list[EvidenceGap] = Field(default_factory=list)
    dropped: dict[str, int] = Field(default_factory=dict)  # entries cut by the size budget, per list
