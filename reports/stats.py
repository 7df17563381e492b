"""A closed incident's summary, and the team's figures over many of them (pure: no I/O, no clock)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from datetime import datetime

from models.incident import IncidentState
from models.stats import Accuracy, IncidentStats, IncidentSummary, Mean, Resolution

RESOLUTIONS: tuple[Resolution, ...] = ("auto_resolved", "approved", "escalated", "other")


def resolution_of(state: IncidentState) -> Resolution:
    if state.escalation_reason:
        return "escalated"  # a person was handed the incident, whatever happened afterwards
    if state.resolved_at is not None:
        return "approved" if state.decision is not None and state.decision.approve else "auto_resolved"
    return "other"


def incident_summary(state: IncidentState) -> IncidentSummary:
    last = state.verification[-1].outcome if state.verification else None
    approved = state.decision is not None and state.decision.approve
    return IncidentSummary(
        workflow_id=state.workflow_id,
        alertname=state.alertname,
        namespace=state.namespace,
        service=state.service,
        severity=state.severity,
        opened_at=state.opened_at,
        acknowledged_at=state.acknowledged_at,
        resolved_at=state.resolved_at,
        closed_at=state.closed_at,
        outcome=state.outcome or "",
        resolution=resolution_of(state),
        category=state.diagnosis.category,
        confidence=state.diagnosis.confidence,
        root_cause=state.diagnosis.root_cause,
        recovered_after_approval=approved and last == "recovered",
        feedback=state.feedback,
    )


def incident_stats(
    summaries: Iterable[IncidentSummary],
    *,
    window_start: datetime,
    window_end: datetime,
    open_incidents: int = 0,
    unreadable: int = 0,
) -> IncidentStats:
    """Figures over the incidents opened in [window_start, window_end) (others are left out)."""
    chosen = [s for s in summaries if s.opened_at is not None and window_start <= s.opened_at < window_end]
    counts = {resolution: 0 for resolution in RESOLUTIONS}
    for summary in chosen:
        counts[summary.resolution] += 1
    closed = len(chosen)
    by_category: dict[str, list[IncidentSummary]] = {}
    for summary in chosen:
        by_category.setdefault(summary.category.value, []).append(summary)
    return IncidentStats(
        window_start=window_start,
        window_end=window_end,
        closed=closed,
        open=open_incidents,
        resolutions=counts,
        shares={resolution: round(count / closed, 4) if closed else 0.0 for resolution, count in counts.items()},
        time_to_acknowledge=_durations(
            (s.acknowledged_at - s.opened_at).total_seconds()
            for s in chosen
            if s.acknowledged_at is not None and s.opened_at is not None
        ),
        time_to_resolve=_durations(
            (s.resolved_at - s.opened_at).total_seconds()
            for s in chosen
            if s.resolved_at is not None and s.opened_at is not None
        ),
        diagnosis=_accuracy(chosen),
        diagnosis_by_category={category: _accuracy(group) for category, group in sorted(by_category.items())},
        unreadable=unreadable,
    )


def _durations(values: Iterable[float]) -> Mean:
    seconds = sorted(max(0.0, value) for value in values)
    if not seconds:
        return Mean()
    return Mean(
        count=len(seconds),
        mean_s=round(statistics.fmean(seconds), 3),
        median_s=round(statistics.median(seconds), 3),
        p90_s=round(_nearest_rank(seconds, 0.9), 3),
    )


def _nearest_rank(ordered: Sequence[float], quantile: float) -> float:
    return ordered[max(0, math.ceil(quantile * len(ordered)) - 1)]


def _accuracy(summaries: Sequence[IncidentSummary]) -> Accuracy:
    correct = sum(1 for s in summaries if s.feedback is not None and s.feedback.verdict == "correct")
    wrong = sum(1 for s in summaries if s.feedback is not None and s.feedback.verdict == "wrong")
    judged = correct + wrong
    return Accuracy(
        judged=judged,
        correct=correct,
        wrong=wrong,
        unjudged=len(summaries) - judged,
        accuracy=round(correct / judged, 4) if judged else None,
    )
