"""Triage, a runbook-only diagnosis, and the typed actions that address it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from analysis.queries import fill
from diagnosis.actions import actions_for, allowed_actions
from diagnosis.engine import diagnosis_of, weigh
from diagnosis.facts import facts_of
from models.evidence import EvidenceRequest
from models.incident import (
    Action,
    Alert,
    Category,
    DiagnoseResult,
    Diagnosis,
    Evidence,
    IncidentState,
    PastIncident,
    TriageResult,
)
from triage.labels import highest_severity, namespace_of, pod_of, workload_of
from triage.promql import expr_from_generator_url
from triage.runbooks import Runbook, find_runbook

# When a plan changed nothing, the next causes' plans are tried: at most this many, only for causes this likely (the
# softmax leaves little to a runner-up when the first cause is well supported) and with evidence of their own.
MAX_FALLBACK_PLANS = 2
FALLBACK_MIN_CONFIDENCE = 0.03


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
    alerts: Sequence[Alert],
    result: TriageResult,
    evidence: Evidence,
    runbooks: Sequence[Runbook],
    seen_before: Sequence[PastIncident] = (),
) -> DiagnoseResult:
    """Weigh every cause against the evidence, name the best (or abstain), and plan the actions that address it."""
    runbook = next((runbook for runbook in runbooks if runbook.id == result.runbook_id), None)
    facts = facts_of(alerts, result, evidence, seen_before)
    weighed = weigh(facts, runbook)
    diagnosis = diagnosis_of(facts, weighed, runbook)
    actions = actions_for(diagnosis, runbook, facts)
    fallbacks: list[list[Action]] = []
    for hypothesis in diagnosis.hypotheses[1:]:
        if hypothesis.confidence < FALLBACK_MIN_CONFIDENCE or len(fallbacks) == MAX_FALLBACK_PLANS:
            break
        if not any(line.startswith("for ") for line in hypothesis.evidence):
            continue  # a cause with nothing for it in the evidence is no plan B
        candidate = [a for a in actions_for(hypothesis, runbook, facts) if a.type.mutating]
        if candidate and candidate != [a for a in actions if a.type.mutating] and candidate not in fallbacks:
            fallbacks.append(candidate)
    top = ", ".join(f"{tally.category.value} {p:.2f}" for tally, p in weighed[:3])
    source = f"runbook {runbook.id}" if runbook else "no runbook matched"
    return DiagnoseResult(
        diagnosis=diagnosis,
        actions=actions,
        allowed_actions=allowed_actions(diagnosis, runbook, facts),
        fallback_plans=fallbacks if diagnosis.category is not Category.unknown else [],
        verify_query=_verify_query(runbook, diagnosis, facts.pod),
        rationale=f"{source}; evidence scoring: {top}",
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


def _verify_query(runbook: Runbook | None, diagnosis: Diagnosis, pod: str) -> str | None:
    if runbook is None or runbook.verify is None or diagnosis.category is Category.unknown:
        return None
    root = diagnosis.root_cause
    return fill(runbook.verify, root.namespace, root.workload, pod)
