"""Fold what each source returned into the incident's evidence, and say in a line what each one found."""

from __future__ import annotations

from models.evidence import (
    Evidence,
    KubernetesEvidence,
    LogEvidence,
    MetricEvidence,
    RelatedAlerts,
)


def fold_evidence(
    evidence: Evidence,
    metrics: MetricEvidence | None,
    logs: LogEvidence | None,
    kubernetes: KubernetesEvidence | None,
    related: RelatedAlerts | None,
) -> Evidence:
    folded = evidence.model_copy(deep=True)
    if metrics is not None:
        folded.findings, folded.conditions = list(metrics.findings), list(metrics.conditions)
        folded.red_convention = metrics.red_convention
    if logs is not None:
        folded.log_templates = list(logs.templates)
    if kubernetes is not None:
        folded.rollouts, folded.pods = list(kubernetes.rollouts), list(kubernetes.pods)
        folded.nodes, folded.events = list(kubernetes.nodes), list(kubernetes.events)
    if related is not None:
        folded.related_alerts = list(related.alerts)
    return folded


def describe_metrics(metrics: MetricEvidence) -> str:
    head = f"{metrics.queries} queries, {len(metrics.findings)} change(s), {len(metrics.conditions)} condition(s)"
    if metrics.findings:
        head += f"; strongest: {metrics.findings[0].summary}"
    return head


def describe_logs(logs: LogEvidence) -> str:
    new = [template for template in logs.templates if template.new]
    head = f"{logs.lines} error line(s), {len(logs.templates)} template(s), {len(new)} new since the baseline"
    if new:
        head += f"; top new: {new[0].template[:160]} (x{new[0].count})"
    return head + (" [truncated]" if logs.truncated else "")


def describe_kubernetes(kubernetes: KubernetesEvidence) -> str:
    restarting = [pod for pod in kubernetes.pods if pod.restarts or pod.waiting_reason]
    not_ready = [node for node in kubernetes.nodes if not node.ready or node.pressure]
    head = (
        f"{len(kubernetes.rollouts)} rollout(s), {len(restarting)} pod(s) restarting or waiting, "
        f"{len(not_ready)} node(s) unhealthy, {len(kubernetes.events)} warning event(s)"
    )
    latest = next((rollout for rollout in kubernetes.rollouts if rollout.current), None)
    return head + (f"; latest: {latest.summary}" if latest else "")


def describe_related(related: RelatedAlerts) -> str:
    names = sorted({alert.alertname for alert in related.alerts})
    return f"{len(related.alerts)} other alert(s) firing" + (f": {', '.join(names[:5])}" if names else "")
