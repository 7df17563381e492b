"""What a person sees first in the Temporal UI: a one-line summary and a Markdown status."""

from __future__ import annotations

from models.incident import IncidentState, Phase

# The one-liner names the incident in the Temporal UI, Slack and PagerDuty; labels are the sender's and unbounded.
SUMMARY_CHARS = 300


def one_line_summary(state: IncidentState) -> str:
    place = "/".join(part for part in (state.namespace, state.service) if part)
    head = f"[{state.severity.value}] {state.alertname or 'alert'}"
    if place:
        head += f" {place}"
    line = f"{head}: {state.title}" if state.title else head
    return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "…"


EVIDENCE_SHOWN = 3


def evidence_lines(state: IncidentState) -> list[str]:
    """The strongest of each kind of evidence, one Markdown bullet each (the state has the rest)."""
    evidence = state.evidence
    lines = [f"- changed: {finding.summary}" for finding in evidence.findings[:EVIDENCE_SHOWN]]
    lines += [f"- now: {condition.summary}" for condition in evidence.conditions[:EVIDENCE_SHOWN]]
    lines += [f"- rollout: {rollout.summary}" for rollout in evidence.rollouts[:EVIDENCE_SHOWN]]
    troubled = [pod for pod in evidence.pods if pod.waiting_reason or pod.last_termination_reason]
    lines += [
        f"- pod {pod.name}: {pod.waiting_reason or pod.last_termination_reason}, {pod.restarts} restart(s)"
        for pod in troubled[:EVIDENCE_SHOWN]
    ]
    lines += [
        f"- node {node.name}: {'NotReady' if not node.ready else ', '.join(node.pressure)}"
        for node in evidence.nodes
        if not node.ready or node.pressure
    ][:EVIDENCE_SHOWN]
    new_templates = [template for template in evidence.log_templates if template.new]
    lines += [
        f"- new in logs (x{template.count}): `{template.template[:120]}`" for template in new_templates[:EVIDENCE_SHOWN]
    ]
    if evidence.related_alerts:
        names = sorted({alert.alertname for alert in evidence.related_alerts})
        lines.append(f"- also firing: {', '.join(names[:5])}")
    return lines


def details_markdown(state: IncidentState) -> str:
    firing = len(state.firing_alerts)
    lines = [
        f"**{one_line_summary(state)}**",
        "",
        f"- phase: `{state.phase.value}`" + (f" (outcome: {state.outcome})" if state.outcome else ""),
        f"- alerts: {firing} firing, {len(state.alerts) - firing} resolved, {state.notifications} notification(s)",
    ]
    diagnosis = state.diagnosis
    if state.phase not in (Phase.received, Phase.triaging, Phase.investigating):
        lines.append(
            f"- diagnosis: `{diagnosis.category.value}` at {diagnosis.confidence:.0%}"
            + (f" (runbook `{diagnosis.runbook}`)" if diagnosis.runbook else "")
            + (f": {diagnosis.summary}" if diagnosis.summary else "")
        )
    if state.plan is not None:
        actions = ", ".join(
            f"{action.type.value} {action.namespace}/{action.target}".rstrip("/ ") for action in state.plan.actions
        )
        lines.append(f"- plan `{state.plan.id}`: {actions}")
    if state.phase == Phase.awaiting_approval and state.approval_deadline is not None:
        lines.append(f"- awaiting approval until {state.approval_deadline:%Y-%m-%d %H:%M:%S}Z")
    if state.decision is not None:
        verdict = "approved" if state.decision.approve else "rejected"
        lines.append(
            f"- {verdict} by {state.decision.by}" + (f": {state.decision.reason}" if state.decision.reason else "")
        )
    lines += evidence_lines(state)
    for gap in state.evidence.gaps:
        lines.append(f"- could not see {gap.source}: {gap.reason}")
    if state.verification:
        last = state.verification[-1]
        lines.append(f"- verification: {last.outcome} ({last.detail})")
    if state.escalation_reason:
        lines.append(f"- escalated: {state.escalation_reason}")
    return "\n".join(lines)
