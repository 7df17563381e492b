"""The incident: what the IncidentWorkflow knows and what its ``state`` query returns."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from models.evidence import Evidence, EvidenceGap, EvidenceItem

__all__ = ["Evidence", "EvidenceGap", "EvidenceItem"]  # re-exported: the incident's vocabulary includes them


class Phase(StrEnum):
    received = "received"
    triaging = "triaging"
    investigating = "investigating"
    diagnosing = "diagnosing"
    awaiting_approval = "awaiting_approval"
    remediating = "remediating"
    verifying = "verifying"
    resolved = "resolved"
    escalated = "escalated"
    closed = "closed"


class Severity(StrEnum):
    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"


class Category(StrEnum):
    bad_deploy = "bad_deploy"
    oom_kill = "oom_kill"
    crash_loop = "crash_loop"
    cpu_saturation = "cpu_saturation"
    traffic_surge = "traffic_surge"
    dependency_failure = "dependency_failure"
    connection_pool_exhaustion = "connection_pool_exhaustion"
    application_error = "application_error"
    network_latency = "network_latency"
    disk_pressure = "disk_pressure"
    certificate_expiry = "certificate_expiry"
    dns_failure = "dns_failure"
    node_failure = "node_failure"
    noise = "noise"
    unknown = "unknown"


class ActionType(StrEnum):
    rollback = "rollback"
    rollout_restart = "rollout_restart"
    scale_up = "scale_up"
    raise_memory_limit = "raise_memory_limit"
    delete_pod = "delete_pod"
    cordon_node = "cordon_node"
    escalate = "escalate"
    none = "none"

    @property
    def mutating(self) -> bool:
        return self not in (ActionType.escalate, ActionType.none)


Risk = Literal["low", "medium", "high"]


class Alert(BaseModel):
    """One alert of the incident's group, as last reported by Alertmanager."""

    fingerprint: str
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime
    ends_at: datetime | None = None
    generator_url: str = ""

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")


class AlertNotification(BaseModel):
    """One notification for one alert group: the payload of the ``alerts`` signal."""

    source: str = "alertmanager"
    group_key: str
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict)
    common_labels: dict[str, str] = Field(default_factory=dict)
    common_annotations: dict[str, str] = Field(default_factory=dict)
    external_url: str = ""
    truncated_alerts: int = 0
    alerts: list[Alert]
    received_at: datetime


class TimelineEvent(BaseModel):
    at: datetime
    kind: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class Workload(BaseModel):
    namespace: str = ""
    workload: str = ""


class Hypothesis(BaseModel):
    category: Category
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: list[str] = Field(default_factory=list)
    root_cause: Workload = Field(default_factory=Workload)


class PastIncident(BaseModel):
    workflow_id: str
    run_id: str
    closed_at: datetime | None = None
    category: Category
    confidence: float = 0.0
    root_cause: Workload = Field(default_factory=Workload)
    outcome: str = ""
    # A person approved the plan for this cause and the alert's own expression then showed recovery, or a person
    # said after the incident that this was the cause (the category is then theirs, not the agent's).
    confirmed: bool = False
    judged_by: str | None = None  # who gave feedback on the diagnosis, when someone did

    @property
    def line(self) -> str:
        seen = f"{self.closed_at:%Y-%m-%d %H:%M}Z" if self.closed_at else "earlier"
        verdict = "confirmed" if self.confirmed else "not confirmed"
        if self.judged_by:
            verdict += f" by {self.judged_by}"
        where = f"{self.root_cause.namespace}/{self.root_cause.workload}".strip("/")
        return f"{seen}: {self.category.value} ({verdict}) at {where}, {self.outcome or 'closed'} [{self.workflow_id}]"


class Diagnosis(BaseModel):
    category: Category = Category.unknown
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    root_cause: Workload = Field(default_factory=Workload)
    summary: str = ""
    hypotheses: list[Hypothesis] = Field(default_factory=list)
    runbook: str | None = None


class Action(BaseModel):
    type: ActionType
    namespace: str = ""
    target: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    risk: Risk = "low"
    requires_approval: bool = True
    reason: str = ""


class Plan(BaseModel):
    id: str
    actions: list[Action]
    rationale: str = ""

    @property
    def mutating(self) -> bool:
        return any(action.type.mutating for action in self.actions)


class Decision(BaseModel):
    """A human's answer to the pending plan (the ``decide`` update's argument)."""

    approve: bool
    by: str = Field(min_length=1)
    reason: str = ""
    plan_id: str | None = None


class DecisionRecord(Decision):
    plan_id: str | None = None
    at: datetime


class DecisionResult(BaseModel):
    accepted: bool
    phase: Phase
    plan_id: str
    by: str


FeedbackVerdict = Literal["correct", "wrong"]


class Feedback(BaseModel):
    """A person's verdict on the diagnosis (the ``feedback`` update's argument)."""

    verdict: FeedbackVerdict
    by: str = Field(min_length=1)
    # For "wrong": what the root cause actually was, when the person knows (a taxonomy category).
    cause: Category | None = None
    note: str = Field(default="", max_length=2_000)


class FeedbackRecord(Feedback):
    at: datetime
    diagnosed: Category  # what the agent had said, kept beside the verdict on it


ActionMode = Literal["dry_run", "applied", "already_applied", "undone", "refused", "failed", "skipped"]


class ActionRecord(BaseModel):
    action: Action
    plan_id: str
    at: datetime
    # dry_run: only the server-side dry run ran (DRY_RUN); applied / already_applied: the change is in the cluster
    # (already_applied: an earlier attempt made it, as its annotation shows); undone: the agent reverted its own
    # change; refused: the governor refused it; failed: the cluster refused it; skipped: nothing to act on.
    mode: ActionMode
    result: str
    action_id: str = ""
    before: dict[str, Any] = Field(default_factory=dict)  # what the target was: enough to undo the change


VerificationOutcome = Literal["recovered", "still_failing", "inconclusive"]


class VerificationRecord(BaseModel):
    at: datetime
    method: str
    outcome: VerificationOutcome
    detail: str
    expr: str | None = None


class IncidentSettings(BaseModel):
    """Per-incident knobs fixed when the incident starts, so that a replay never sees different values."""

    approval_timeout_s: float = 15 * 60
    verify_after_s: float = 5 * 60
    resolve_wait_s: float = 24 * 3600
    approvers: list[str] = Field(default_factory=list)
    # Ask the configured LLM for a second look at the diagnosis (OPENAI_API_KEY or OPENAI_BASE_URL is set).
    llm: bool = False
    # Continue-as-new past this many history events (Temporal also suggests it on its own).
    max_history_events: int = 10_000
    # How long a closed incident stays open for feedback on its diagnosis (FEEDBACK_WINDOW; 0: it ends at close).
    feedback_window_s: float = 0.0


class IncidentState(BaseModel):
    workflow_id: str = ""
    group_key: str = ""
    source: str = "alertmanager"
    phase: Phase = Phase.received
    severity: Severity = Severity.medium
    alertname: str = ""
    namespace: str = ""
    service: str = ""
    title: str = ""
    alerts: dict[str, Alert] = Field(default_factory=dict)
    notifications: int = 0
    alert_expr: str | None = None
    evidence: Evidence = Field(default_factory=Evidence)
    # Closed incidents of the same alert on the same workload, most recent first ("seen before").
    seen_before: list[PastIncident] = Field(default_factory=list)
    diagnosis: Diagnosis = Field(default_factory=Diagnosis)
    plan: Plan | None = None
    # The policy's word on each action of the current plan (allowed, approval, bounds) and why.
    policy: list[dict[str, Any]] = Field(default_factory=list)
    # Plans for the next most likely causes, tried in turn when a plan changed nothing (up to a bound).
    fallback_plans: list[list[Action]] = Field(default_factory=list)
    plans_tried: int = 0
    # From the policy's verdict: whether actions stop at the server-side dry run, and the governor's rate limits.
    dry_run: bool = True
    action_limits: dict[str, int] = Field(default_factory=dict)
    second_opinion: bool = False  # an automatic change needs the LLM's agreement (policy, when an LLM is configured)
    verify_query: str | None = None  # the runbook's check that the cause is gone, besides the alert's expression
    decision: DecisionRecord | None = None
    actions_taken: list[ActionRecord] = Field(default_factory=list)
    verification: list[VerificationRecord] = Field(default_factory=list)
    timeline: list[TimelineEvent] = Field(default_factory=list)
    timeline_dropped: int = 0
    opened_at: datetime | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    outcome: str | None = None
    # Absolute deadlines of the durable waits, kept in the state so continue-as-new resumes them exactly.
    approval_deadline: datetime | None = None
    verify_at: datetime | None = None
    resolve_deadline: datetime | None = None
    escalation_reason: str | None = None
    runs: int = 1
    # The incident's Slack message (from the notifier's receipts) and how much of the timeline its thread has.
    slack_channel: str | None = None
    slack_ts: str | None = None
    timeline_notified: int = 0
    notified_phase: Phase | None = None
    paged: bool = False  # PagerDuty has an open incident for this one (dedup_key = the workflow id)
    report: str | None = None  # the post-incident report, Markdown, written when the incident closes
    feedback: FeedbackRecord | None = None  # a person's verdict on the diagnosis ("Diagnosis correct?")
    feedback_until: datetime | None = None  # the closed incident takes feedback until then

    @property
    def firing_alerts(self) -> list[Alert]:
        return [alert for alert in self.alerts.values() if alert.status == "firing"]

    @property
    def all_resolved(self) -> bool:
        return bool(self.alerts) and not self.firing_alerts


class IncidentInput(BaseModel):
    """The workflow's argument: settings, and what a continue-as-new carries to the next run."""

    settings: IncidentSettings = Field(default_factory=IncidentSettings)
    # The same incident, continued (history too long): its whole state.
    state: IncidentState | None = None
    # Notifications the new run must still take in: re-fires that arrived while the previous run was closing
    # (they open the group's next incident run) or that a continued run had set aside.
    notifications: list[AlertNotification] = Field(default_factory=list)


class TriageRequest(BaseModel):
    alerts: list[Alert]


class TriageResult(BaseModel):
    severity: Severity
    alertname: str
    namespace: str
    service: str
    title: str
    alert_expr: str | None = None
    runbook_id: str | None = None
    runbook_title: str | None = None


class DiagnoseRequest(BaseModel):
    alerts: list[Alert]
    triage: TriageResult
    evidence: Evidence
    seen_before: list[PastIncident] = Field(default_factory=list)


class DiagnoseResult(BaseModel):
    diagnosis: Diagnosis
    actions: list[Action]
    # Every action some hypothesis would take (plus escalate and none): all a second opinion may choose from.
    allowed_actions: list[Action] = Field(default_factory=list)
    # The mutating plans of the next most likely causes, best first: what to try when the first plan changes nothing.
    fallback_plans: list[list[Action]] = Field(default_factory=list)
    # The runbook's check that the diagnosed cause is gone (series while it is not), filled in for the root cause.
    verify_query: str | None = None
    rationale: str = ""


class PromQueryRequest(BaseModel):
    expr: str
    # Only series that belong to these alerts count (the alert expression covers every namespace).
    alert_labels: list[dict[str, str]] = Field(default_factory=list)


class PromSeries(BaseModel):
    labels: dict[str, str]
    value: float


class PromQueryResult(BaseModel):
    expr: str
    evaluated_at: datetime
    series: list[PromSeries]
    total_series: int


class Notification(BaseModel):
    """A message for the humans on call: a log line always, and the incident's Slack message when configured."""

    workflow_id: str
    event: str
    phase: Phase
    severity: Severity
    title: str
    text: str
    plan: Plan | None = None
    diagnosis: Diagnosis | None = None
    decided_by: str | None = None  # who approved or rejected the plan, once someone did
    approved: bool | None = None  # what they decided
    outcome: str | None = None
    feedback: FeedbackRecord | None = None  # the verdict on the diagnosis, once someone gave it
    feedback_open: bool = False  # the closed incident asks "Diagnosis correct?" (Slack shows the controls)
    # The incident's Slack message once posted (from an earlier receipt): updated in place (chat.update).
    slack_channel: str | None = None
    slack_ts: str | None = None
    thread_lines: list[str] = Field(default_factory=list)  # timeline entries to add to the message's thread


class NotificationReceipt(BaseModel):
    """Where the incident's message lives (so the next notification updates it) and anything that went wrong."""

    slack_channel: str | None = None
    slack_ts: str | None = None
    problems: list[str] = Field(default_factory=list)  # e.g. "channel_not_found": recorded, never fatal


class PageRequest(BaseModel):
    """PagerDuty Events API v2: trigger when the incident escalates, resolve when it resolves."""

    workflow_id: str  # the dedup_key: one PagerDuty incident per incident
    action: Literal["trigger", "resolve"]
    summary: str = ""
    severity: Severity = Severity.critical
    source: str = ""  # the alerting service or namespace
    links: list[dict[str, str]] = Field(default_factory=list)  # [{"href": ..., "text": ...}]
    details: dict[str, Any] = Field(default_factory=dict)


class PageResult(BaseModel):
    sent: bool
    detail: str = ""  # PagerDuty's answer, or why nothing was sent (not configured, 400 and its errors)
