"""What a closed incident amounts to (kept in its memo) and what many of them add up to (``GET /stats``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from models.incident import Category, FeedbackRecord, Severity, Workload

# The memo key under which a closed incident keeps its summary (visibility returns memos with every listed run).
SUMMARY_MEMO_KEY = "incident"

# How the incident ended, for the auto-resolved vs escalated share:
# - auto_resolved: recovered with no person involved (an automatic fix, or it went away while the agent watched);
# - approved: recovered after a person approved the agent's plan;
# - escalated: the agent handed the incident to a person (rejected plan, timeout, no safe fix, made worse...);
# - other: closed without a diagnosis to act on (no alerts arrived).
Resolution = Literal["auto_resolved", "approved", "escalated", "other"]


class IncidentSummary(BaseModel):
    """A closed incident in a few fields: enough for memory and for stats, without reading its history."""

    workflow_id: str
    alertname: str = ""
    namespace: str = ""
    service: str = ""
    severity: Severity = Severity.medium
    opened_at: datetime | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    outcome: str = ""
    resolution: Resolution = "other"
    category: Category = Category.unknown
    confidence: float = 0.0
    root_cause: Workload = Field(default_factory=Workload)
    # A person approved the plan and the alert's own expression then showed recovery.
    recovered_after_approval: bool = False
    feedback: FeedbackRecord | None = None


class Mean(BaseModel):
    """A duration over the incidents that have one (None when none has)."""

    count: int = 0
    mean_s: float | None = None
    median_s: float | None = None
    p90_s: float | None = None


class Accuracy(BaseModel):
    """People's verdicts on the diagnoses: correct / (correct + wrong) over the incidents someone judged."""

    judged: int = 0
    correct: int = 0
    wrong: int = 0
    unjudged: int = 0
    accuracy: float | None = None


class IncidentStats(BaseModel):
    window_start: datetime
    window_end: datetime
    closed: int = 0
    # Running incidents that have not closed yet (they are not in the shares below).
    open: int = 0
    resolutions: dict[str, int] = Field(default_factory=dict)
    # Shares of the closed incidents: auto_resolved, approved, escalated, other (0..1).
    shares: dict[str, float] = Field(default_factory=dict)
    time_to_acknowledge: Mean = Field(default_factory=Mean)
    time_to_resolve: Mean = Field(default_factory=Mean)
    diagnosis: Accuracy = Field(default_factory=Accuracy)
    diagnosis_by_category: dict[str, Accuracy] = Field(default_factory=dict)
    # Closed runs listed without a readable summary (closed by an older version of the agent): not counted.
    unreadable: int = 0
