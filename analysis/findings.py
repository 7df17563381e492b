"""From raw range-query series to ranked findings: which series changed, when, by how much."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from analysis.changes import detect_change
from analysis.queries import ConditionQuery, MetricQuery
from models.evidence import Condition, SeriesChange
from triage.labels import workload_of

# Labels that identify what a series is about; everything else (job, instance, huge label sets) is dropped.
_IDENTITY_LABELS = ("namespace", "service", "pod", "deployment", "persistentvolumeclaim", "node", "pool_name")
# A change that began long before the alert is context, not cause: keep changes from this long before onset on.
RELEVANT_BEFORE_ONSET = timedelta(minutes=45)
# The baseline ends this long before the alert's onset: an alert fires after its `for:` duration and its rate
# windows, so the change it reports began earlier than its startsAt.
BASELINE_GUARD = timedelta(minutes=15)


@dataclass(frozen=True)
class Series:
    labels: Mapping[str, str]
    timestamps: Sequence[float]  # unix seconds, ascending
    values: Sequence[float]


def finite_points(series: Series) -> tuple[list[float], list[float]]:
    """Drop NaN/Inf samples (0/0 when a service has no traffic, a histogram with no observations)."""
    pairs = [(t, v) for t, v in zip(series.timestamps, series.values, strict=True) if math.isfinite(v)]
    return [t for t, _ in pairs], [v for _, v in pairs]


def conditions_of(query: ConditionQuery, series: Iterable[tuple[Mapping[str, str], float]]) -> list[Condition]:
    """Each offending series of a condition query, worded for a person."""
    found = []
    for labels, value in series:
        if not math.isfinite(value):
            continue
        subject = labels.get(query.subject, "") if query.subject else ""
        shown = value / query.scale
        description = query.description
        if shown < 0 and query.past_description:
            description, shown = query.past_description, -shown
        found.append(
            Condition(
                metric=query.metric,
                workload=subject,
                labels={key: labels[key] for key in _IDENTITY_LABELS if key in labels},
                value=value,
                summary=f"{subject or 'cluster'}: {description} {shown:.3g}{query.unit}",
            )
        )
    return found


def workload_for(query: MetricQuery, labels: Mapping[str, str], pod_owners: Mapping[str, str]) -> str:
    if query.subject == "pod":
        pod = labels.get("pod", "")
        return pod_owners.get(pod) or workload_of({"pod": pod})
    if query.subject:
        return labels.get(query.subject, "")
    return query.metric


def find_changes(
    query: MetricQuery,
    series: Iterable[Series],
    *,
    onset: datetime,
    pod_owners: Mapping[str, str],
) -> list[SeriesChange]:
    """The changes of one query's series, at most one per workload (its strongest)."""
    strongest: dict[str, SeriesChange] = {}
    earliest = onset - RELEVANT_BEFORE_ONSET
    baseline_until = (onset - BASELINE_GUARD).timestamp()
    for item in series:
        timestamps, values = finite_points(item)
        baseline_end = sum(1 for t in timestamps if t < baseline_until)
        change = detect_change(values, baseline_end, absolute_floor=query.absolute_floor)
        if change is None:
            continue
        began = datetime.fromtimestamp(timestamps[change.index], tz=UTC)
        if began < earliest:
            continue
        workload = workload_for(query, item.labels, pod_owners)
        finding = SeriesChange(
            metric=query.metric,
            workload=workload,
            labels={key: item.labels[key] for key in _IDENTITY_LABELS if key in item.labels},
            query=query.expr,
            baseline=change.baseline,
            recent=change.recent,
            change=change.recent - change.baseline,
            ratio=change.ratio,
            score=change.score,
            direction="up" if change.direction == "up" else "down",
            onset=began,
            summary=_summary(query, workload, change.baseline, change.recent, change.ratio, began, change.score),
        )
        previous = strongest.get(workload)
        if previous is None or abs(finding.score) > abs(previous.score):
            strongest[workload] = finding
    return list(strongest.values())


def set_latest(
    findings: Iterable[SeriesChange],
    query: MetricQuery,
    latest: Iterable[tuple[Mapping[str, str], float]],
    pod_owners: Mapping[str, str],
) -> None:
    """Give each finding of ``query`` its value over the last scrape interval (``query.now_expr``'s answer)."""
    now_of = {workload_for(query, labels, pod_owners): value for labels, value in latest if math.isfinite(value)}
    for finding in findings:
        if finding.metric == query.metric and finding.workload in now_of:
            finding.now = now_of[finding.workload]
            finding.summary += f"; now {_fmt(finding.now, query.unit)}"


def rank_findings(findings: Iterable[SeriesChange], limit: int) -> list[SeriesChange]:
    """Strongest first; among equally strong changes the earliest, because a cause precedes its symptoms."""

    def key(finding: SeriesChange) -> tuple[float, float]:
        began = finding.onset.timestamp() if finding.onset else math.inf
        return (-abs(finding.score), began)

    return sorted(findings, key=key)[:limit]


def _fmt(value: float, unit: str) -> str:
    return f"{value:.3g}{unit}"


def _summary(
    query: MetricQuery,
    workload: str,
    baseline: float,
    recent: float,
    ratio: float | None,
    began: datetime,
    score: float,
) -> str:
    verb = "rose" if recent >= baseline else "fell"
    times = f" (x{ratio:.3g})" if ratio is not None and ratio > 0 else ""
    return (
        f"{query.description} of {workload or 'the cluster'} {verb} from {_fmt(baseline, query.unit)} "
        f"to {_fmt(recent, query.unit)}{times} at {began:%H:%M:%S}Z (robust z {score:+.1f})"
    )
