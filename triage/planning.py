"""Triage, a runbook-only diagnosis, and the typed actions that address it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from models.evidence import EvidenceRequest
from models.incident import (
    Action,
    ActionType,
    Alert,
    Category,
    DiagnoseResult,
    Diagnosis,
    Evidence,
    Hypothesis,
    IncidentState,
    TriageResult,
    Workload,
)
from triage.labels import highest_severity, namespace_of, pod_of, workload_of
from triage.promql import expr_from_generator_url
from triage.runbooks import Runbook, RunbookAction, find_runbook


def triage(alerts: Sequence[Alert], runbooks: Sequence[Runbook]) -> TriageResult:
    """Severity, place and runbook of an incident, from the alerts that are firing (or all, once resolved)."""
    considered = [alert for alert in alerts if alert.status == "firing"] or list(alerts)
    if not considered:
        raise ValueError("an incident needs at least one alert to triage")
    lead = lead_alert(considered)
    runbook = find_runbook(runbooks, lead.alertname, lead.labels)
    title = lead.annotations.get("summary") or lead.annotations.get("description") or lead.alertname
    return TriageResult(
        severity=highest_severity(alert.labels for alert in considered),
        alertname=lead.alertname,
        namespace=namespace_of(lead.labels),
        service=workload_of(lead.labels),
        title=title.strip().splitlines()[0].strip()[:200] if title.strip() else lead.alertname,
        alert_expr=next((expr for alert in considered if (expr := expr_from_generator_url(alert.generator_url))), None),
        runbook_id=runbook.id if runbook else None,
        runbook_title=runbook.title if runbook else None,
    )


def lead_alert(alerts: Sequence[Alert]) -> Alert:
    """The alert that names the incident: the most severe, then the earliest."""
    rank = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    return min(
        alerts,
        key=lambda alert: (rank[highest_severity([alert.labels]).value], alert.starts_at, alert.fingerprint),
    )


def evidence_request(state: IncidentState, at: datetime) -> EvidenceRequest:
    """What the evidence sources are asked about, from what the incident knows now."""
    alerts = state.firing_alerts or list(state.alerts.values())
    lead = lead_alert(alerts)
    return EvidenceRequest(
        workflow_id=state.workflow_id,
        alertname=state.alertname,
        namespace=state.namespace,
        workload=state.service,
        pod=pod_of(lead.labels),
        node=lead.labels.get("node", ""),
        alert_labels=[dict(alert.labels) for alert in alerts],
        onset=min(alert.starts_at for alert in alerts),
        at=at,
        runbook=state.diagnosis.runbook,
    )


def diagnose(
    alerts: Sequence[Alert], result: TriageResult, evidence: Evidence, runbooks: Sequence[Runbook]
) -> DiagnoseResult:
    """Rank the runbook's hypotheses by their priors and propose the actions that address the best one.

    Without evidence scoring (a later stage) a prior is all we have, so confidence stays at the prior and
    every mutating action waits for a human.
    """
    runbook = next((runbook for runbook in runbooks if runbook.id == result.runbook_id), None)
    place = Workload(namespace=result.namespace, workload=result.service)
    if runbook is None:
        return DiagnoseResult(
            diagnosis=Diagnosis(
                category=Category.unknown,
                confidence=0.0,
                root_cause=place,
                summary=f"No runbook covers {result.alertname or 'this alert'}; a person must diagnose it.",
            ),
            actions=[Action(type=ActionType.escalate, reason="no runbook for this alert", risk="low")],
            rationale="no runbook matched",
        )
    cited = [f"runbook {runbook.id} matches alertname {result.alertname}", *cited_evidence(evidence)]
    hypotheses = sorted(
        (
            Hypothesis(category=h.category, confidence=h.prior, evidence=list(cited), root_cause=place)
            for h in runbook.hypotheses
        ),
        key=lambda hypothesis: hypothesis.confidence,
        reverse=True,
    )
    best = hypotheses[0]
    best_summary = next(h.summary for h in runbook.hypotheses if h.category == best.category)
    # Aim at the alert the triage named the incident after, so the plan targets the diagnosed workload.
    firing = [alert for alert in alerts if alert.status == "firing"] or list(alerts)
    actions = _actions_for(best.category, runbook.actions, lead_alert(firing).labels)
    return DiagnoseResult(
        diagnosis=Diagnosis(
            category=best.category,
            confidence=best.confidence,
            root_cause=place,
            summary=best_summary,
            hypotheses=hypotheses,
            runbook=runbook.id,
        ),
        actions=actions,
        rationale=f"runbook {runbook.id}: most likely {best.category.value} (prior {best.confidence:.2f})",
    )


def cited_evidence(evidence: Evidence, per_kind: int = 3) -> list[str]:
    """The evidence a person would quote first: the alert probe, the strongest changes, what is wrong now, the
    rollouts, and log lines that are new. (Scoring hypotheses against it is the diagnosis stage's work.)"""
    cited = [f"{item.source}: {item.summary}" for item in evidence.items]
    cited += [f"prometheus: {finding.summary}" for finding in evidence.findings[:per_kind]]
    cited += [f"prometheus: {condition.summary}" for condition in evidence.conditions[:per_kind]]
    cited += [f"kubernetes: {rollout.summary}" for rollout in evidence.rollouts[:per_kind]]
    new_templates = [template for template in evidence.log_templates if template.new]
    cited += [f"loki: new (x{t.count}) {t.template[:160]}" for t in new_templates[:per_kind]]
    return cited


def _actions_for(category: Category, candidates: Sequence[RunbookAction], labels: dict[str, str]) -> list[Action]:
    actions: list[Action] = []
    for candidate in candidates:
        if category not in candidate.addresses:
            continue
        namespace, target = namespace_of(labels), _target_of(candidate, labels)
        if candidate.type.mutating and not (namespace and target):
            # A mutation we cannot aim precisely is no mutation at all: hand it to a person.
            actions.append(
                Action(
                    type=ActionType.escalate,
                    risk="low",
                    requires_approval=False,
                    reason=f"{candidate.type.value} needs a namespace and a target the alert does not name",
                )
            )
            continue
        actions.append(
            Action(
                type=candidate.type,
                namespace=namespace if candidate.type.mutating else "",
                target=target if candidate.type.mutating else "",
                params=dict(candidate.params),
                risk=candidate.risk,
                requires_approval=candidate.type.mutating,
                reason=candidate.reason,
            )
        )
    unique: list[Action] = []
    for action in actions:
        if action not in unique:
            unique.append(action)
    return unique or [
        Action(
            type=ActionType.escalate,
            risk="low",
            requires_approval=False,
            reason="the runbook has no action for this cause",
        )
    ]


def _target_of(candidate: RunbookAction, labels: dict[str, str]) -> str:
    if candidate.target == "workload":
        return workload_of(labels)
    if candidate.target == "pod":
        return pod_of(labels)
    if candidate.target == "node":
        return labels.get("node") or labels.get("kubernetes_node") or ""
    return ""
