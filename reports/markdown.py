"""The post-incident report: Markdown rendered from the incident's own state, and from nothing else.

``render_report(state)`` is pure and deterministic: the same state renders the same bytes (no clock, no I/O), so
a report can be re-rendered at any time from the ``state`` query, archived, diffed, or attached to a ticket.

Layout: a title line (severity, alert, place); a summary table (times, durations, outcome); "What happened" (the
workflow's timeline, one row per event, bounded); "Diagnosis" (category, confidence, root cause, hypotheses with
their top cited evidence, evidence gaps); "Actions" (the plan, the policy's word on each action, the decision,
what was done in which mode, verification); "Follow-ups" (what a person must still do).

Everything that comes from alerts, logs, the cluster or a model is escaped (``escape``) so that it cannot break
the layout: newlines are collapsed, ``|`` cannot split a table cell, emphasis, links, HTML and headings stay
literal text. Every list is bounded, every cell is cut, so a huge incident still makes a readable report.

The summary paragraph is a seam for a later step: ``render_report(state, summary=...)`` puts a prose summary
(e.g. written by an LLM from this same state) at the top, labelled as such; without it the report is complete.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from config.durations import format_duration
from models.incident import ActionRecord, Category, Hypothesis, IncidentState, Phase, TimelineEvent

TIMELINE_ROWS = 100  # at most this many timeline rows: the first TIMELINE_HEAD and the latest others
TIMELINE_HEAD = 20
CELL_CHARS = 300
HYPOTHESES_SHOWN = 8
EVIDENCE_PER_HYPOTHESIS = 3
EVIDENCE_LINE_CHARS = 160
EVIDENCE_ITEMS_SHOWN = 10
GAPS_SHOWN = 20
SEEN_BEFORE_SHOWN = 5
PLAN_ACTIONS_SHOWN = 20
ACTIONS_SHOWN = 50
VERIFICATIONS_SHOWN = 20
SUMMARY_CHARS = 4000
NONE = "—"

# Characters that mean something to Markdown (GFM) anywhere in a line: escaped with a backslash. An underscore
# between two letters or digits (error_ratio) can neither open nor close emphasis and stays as it is.
_INLINE_SPECIAL = re.compile(r"[\\`*\[\]<|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
# What makes a block of a line's start: heading, quote, list item, setext underline.
_LEADING_BLOCK = re.compile(r"^(?:#|>|=|[+-](?=\s|$)|\d+(?=[.)](?:\s|$)))")

_EVENT_LABELS = {
    "opened": "alert received",
    "reopening": "alerts fired again",
    "triaged": "triaged",
    "phase": "phase",
    "alert_expression": "alert expression",
    "evidence": "evidence",
    "evidence_gap": "evidence gap",
    "evidence_bounded": "evidence bounded",
    "memory": "seen before",
    "llm": "LLM",
    "diagnosed": "diagnosis",
    "plan_proposed": "plan proposed",
    "next_plan": "next plan",
    "policy": "policy",
    "second_opinion": "second opinion",
    "decision": "decision",
    "action": "action",
    "governor": "governor",
    "verification": "verification",
    "alerts_firing": "alerts firing",
    "alerts_resolved": "alerts resolved",
    "alerts_fired_again": "alerts fired again",
    "severity_raised": "severity raised",
    "notified": "notified",
    "notify_failed": "notification failed",
    "continued_as_new": "continued as new",
}


# ---- escaping and formatting --------------------------------------------------------------------------------


def escape(text: object, limit: int = CELL_CHARS) -> str:
    """``text`` as one line of literal Markdown: whitespace collapsed, cut to ``limit``, specials escaped."""
    flat = " ".join(_CONTROL.sub("", str(text)).split())
    flat = _cut(flat, limit)
    out = _INLINE_SPECIAL.sub(lambda match: "\\" + match.group(), flat)
    # A value that starts a line (a bullet's text) must not turn into a heading, a list or a setext underline.
    match = _LEADING_BLOCK.match(out)
    if match:
        end = match.end()
        out = out[:end] + "\\" + out[end:] if match.group().isdigit() else "\\" + out
    return out


def code(text: object, limit: int = CELL_CHARS) -> str:
    """``text`` as an inline code span that is safe in a table cell."""
    flat = _cut(" ".join(_CONTROL.sub("", str(text)).split()), limit).replace("|", "\\|")
    if not flat:
        return NONE
    fence = "`" * (max((len(run) for run in re.findall(r"`+", flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def duration(seconds: float) -> str:
    """A human duration such as ``4m 12s`` or ``1h 0m 5s``."""
    return re.sub(r"(?<=[a-z])(?=\d)", " ", format_duration(max(0.0, seconds)))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


def _when(at: datetime | None) -> str:
    return f"{_utc(at):%Y-%m-%d %H:%M:%S}Z" if at else NONE


def _clock(at: datetime) -> str:
    return f"{_utc(at):%H:%M:%S}Z"


def _between(start: datetime | None, end: datetime | None) -> str | None:
    if start is None or end is None:
        return None
    return duration((_utc(end) - _utc(start)).total_seconds())


def _place(namespace: str, workload: str) -> str:
    return "/".join(part for part in (namespace, workload) if part)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
    return lines


def _more(shown: int, total: int, what: str) -> list[str]:
    return [f"_{total - shown} more {what} not shown; the `state` query has all of them._"] if total > shown else []


# ---- the report ---------------------------------------------------------------------------------------------


def render_report(state: IncidentState, summary: str | None = None) -> str:
    """The incident's post-incident report as Markdown; ``summary``: an optional prose summary for the top."""
    sections = [
        _title(state),
        _summary(state, summary),
        _what_happened(state),
        _diagnosis(state),
        _actions(state),
        _follow_ups(state),
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


def _title(state: IncidentState) -> list[str]:
    head = f"# Incident report: {escape(state.alertname or 'alert', 200)} ({state.severity.value})"
    place = _place(state.namespace, state.service)
    if place:
        head += f" on {escape(place, 200)}"
    lines = [head]
    if state.title:
        lines += ["", f"_{escape(state.title, 500)}_"]
    return lines


def _summary(state: IncidentState, summary: str | None) -> list[str]:
    lines = ["## Summary", ""]
    if summary and summary.strip():
        paragraphs = [p for p in re.split(r"\n\s*\n", _cut(summary.strip(), SUMMARY_CHARS)) if p.strip()]
        for paragraph in paragraphs:
            lines += [escape(paragraph, SUMMARY_CHARS), ""]
        lines += ["_This summary was written from the record below, which is authoritative._", ""]
    decision = state.decision
    acknowledged = _when(state.acknowledged_at)
    if state.acknowledged_at and decision is not None:
        verdict = "approved" if decision.approve else "rejected"
        acknowledged += f" (plan {verdict} by {escape(decision.by, 100)})"
    elif state.acknowledged_at is None:
        acknowledged = "not acknowledged (no decision)"
    rows = [
        ("Incident", code(state.workflow_id) + (f" (run {state.runs})" if state.runs > 1 else "")),
        ("Severity", state.severity.value),
        ("Alert", escape(state.alertname or NONE) + _alert_counts(state)),
        ("Where", escape(_place(state.namespace, state.service) or NONE)),
        ("Phase", state.phase.value),
        ("Opened", _when(state.opened_at)),
        ("Acknowledged", acknowledged),
        ("Resolved", _when(state.resolved_at) if state.resolved_at else "not resolved"),
        ("Closed", _when(state.closed_at) if state.closed_at else "still open"),
        ("Outcome", escape(state.outcome) if state.outcome else NONE),
        ("Time to acknowledge", _between(state.opened_at, state.acknowledged_at) or NONE),
        ("Time to resolve", _between(state.opened_at, state.resolved_at) or NONE),
        ("Root cause", _root_cause_line(state)),
        ("Changes", _changes_line(state)),
    ]
    if state.escalation_reason:
        rows.append(("Escalated", escape(state.escalation_reason)))
    return lines + _table(("", ""), rows)


def _alert_counts(state: IncidentState) -> str:
    if not state.alerts:
        return ""
    return f" ({len(state.alerts)} alert(s), {len(state.firing_alerts)} firing)"


def _root_cause_line(state: IncidentState) -> str:
    diagnosis = state.diagnosis
    where = _place(diagnosis.root_cause.namespace, diagnosis.root_cause.workload)
    text = f"{diagnosis.category.value} ({diagnosis.confidence:.2f})"
    return text + (f" at {escape(where)}" if where else "")


def _changes_line(state: IncidentState) -> str:
    modes = {record.mode for record in state.actions_taken}
    if modes & {"applied", "already_applied"}:
        return "applied to the cluster" + (" (and undone)" if "undone" in modes else "")
    if "dry_run" in modes:
        return "dry run only (DRY_RUN): nothing was changed"
    if state.actions_taken:
        return "none: no action went through"
    return "none"


# ---- what happened ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    at: datetime
    kind: str
    detail: str  # already escaped


def _what_happened(state: IncidentState) -> list[str]:
    lines = ["## What happened", ""]
    rows = [_row(event) for event in state.timeline]
    if not rows:
        rows = _reconstructed(state)
        if rows:
            lines += ["_The timeline is empty; these events are reconstructed from the state's fields._", ""]
    if not rows:
        return [*lines, "Nothing was recorded."]
    if state.timeline_dropped:
        lines += [
            f"_The workflow bounded its timeline: {state.timeline_dropped} event(s) after the first ones were "
            "dropped before this report was made._",
            "",
        ]
    origin = state.opened_at or rows[0].at
    table_rows: list[tuple[str, str, str, str]] = []
    omitted = len(rows) - TIMELINE_ROWS
    for index, row in enumerate(rows):
        if omitted > 0 and TIMELINE_HEAD <= index < TIMELINE_HEAD + omitted:
            if index == TIMELINE_HEAD:
                table_rows.append(("…", "", "…", f"{omitted} events left out of this report"))
            continue
        since = (_utc(row.at) - _utc(origin)).total_seconds()
        elapsed = ("+" + duration(since)) if since >= 0 else "-" + duration(-since)
        table_rows.append((_clock(row.at), elapsed, row.kind, row.detail))
    lines += _table(("time", "since open", "event", "detail"), table_rows)
    if omitted > 0:
        lines += [
            "",
            f"_The timeline has {len(rows)} events: the first {TIMELINE_HEAD} and the latest "
            f"{TIMELINE_ROWS - TIMELINE_HEAD} are shown; `GET /incidents/{{workflow_id}}` has every one._",
        ]
    return lines


def _row(event: TimelineEvent) -> _Row:
    label = _EVENT_LABELS.get(event.kind, event.kind.replace("_", " "))
    detail = event.message
    data = event.data
    if event.kind == "diagnosed":
        ranked = _hypotheses_of(data.get("hypotheses"))
        if ranked:
            detail += "; hypotheses: " + ", ".join(ranked)
    elif event.kind == "decision" and data.get("reason"):
        detail += f' ("{data["reason"]}")'
    elif event.kind == "phase" and data.get("to") in (Phase.escalated.value, Phase.resolved.value, Phase.closed.value):
        label = str(data["to"])
    return _Row(event.at, escape(label, 40), escape(detail))


def _hypotheses_of(raw: Any, shown: int = 3) -> list[str]:
    if not isinstance(raw, list):
        return []
    named = []
    for item in raw[:shown]:
        if isinstance(item, Mapping) and "category" in item:
            try:
                named.append(f"{item['category']} {float(item.get('confidence', 0.0)):.2f}")
            except (TypeError, ValueError):
                named.append(str(item["category"]))
    return named


def _reconstructed(state: IncidentState) -> list[_Row]:
    """A timeline from the structured fields, for a state whose timeline is empty."""
    rows: list[_Row] = []
    if state.opened_at:
        rows.append(_Row(state.opened_at, "alert received", escape(f"incident opened: {state.alertname}")))
    if state.decision is not None:
        verdict = "approved" if state.decision.approve else "rejected"
        rows.append(_Row(state.decision.at, "decision", escape(f"plan {verdict} by {state.decision.by}")))
    for record in state.actions_taken:
        rows.append(_Row(record.at, "action", escape(f"{_action_name(record)}: {record.mode}: {record.result}")))
    for check in state.verification:
        rows.append(_Row(check.at, "verification", escape(f"{check.outcome}: {check.detail}")))
    if state.resolved_at:
        rows.append(_Row(state.resolved_at, "resolved", escape(state.outcome or "resolved")))
    if state.closed_at:
        rows.append(_Row(state.closed_at, "closed", escape(state.outcome or "closed")))
    return sorted(rows, key=lambda row: _utc(row.at))


# ---- diagnosis ----------------------------------------------------------------------------------------------


def _diagnosis(state: IncidentState) -> list[str]:
    diagnosis = state.diagnosis
    where = _place(diagnosis.root_cause.namespace, diagnosis.root_cause.workload)
    lines = ["## Diagnosis", ""]
    rows = [
        ("Category", diagnosis.category.value),
        ("Confidence", f"{diagnosis.confidence:.2f}"),
        ("Root cause", escape(where) if where else NONE),
        ("Runbook", escape(diagnosis.runbook) if diagnosis.runbook else NONE),
    ]
    if state.alert_expr:
        rows.append(("Alert expression", code(state.alert_expr, 500)))
    lines += _table(("", ""), rows)
    if diagnosis.summary:
        lines += ["", escape(diagnosis.summary, 1000)]

    lines += ["", "### Hypotheses", ""]
    if diagnosis.hypotheses:
        ranked = sorted(diagnosis.hypotheses, key=lambda h: -h.confidence)
        lines += _table(
            ("#", "category", "confidence", "root cause", "top cited evidence"),
            (_hypothesis_row(index, h) for index, h in enumerate(ranked[:HYPOTHESES_SHOWN], start=1)),
        )
        lines += _more(HYPOTHESES_SHOWN, len(ranked), "hypotheses")
    else:
        lines.append("No hypothesis was recorded.")

    evidence = state.evidence
    lines += ["", "### Evidence", ""]
    items = [f"- {escape(item.source, 40)}: {escape(item.summary)}" for item in evidence.items[:EVIDENCE_ITEMS_SHOWN]]
    lines += items or ["No evidence item was recorded."]
    lines += _more(EVIDENCE_ITEMS_SHOWN, len(evidence.items), "evidence items")
    if evidence.gaps:
        lines += ["", "Gaps (sources that could not answer):", ""]
        lines += [f"- {escape(gap.source, 40)}: {escape(gap.reason)}" for gap in evidence.gaps[:GAPS_SHOWN]]
        lines += _more(GAPS_SHOWN, len(evidence.gaps), "gaps")
    if evidence.dropped:
        cut = ", ".join(f"{escape(name, 40)} {count}" for name, count in sorted(evidence.dropped.items()))
        lines += ["", f"_Cut to the evidence budget: {cut}._"]

    if state.seen_before:
        lines += ["", "### Seen before", ""]
        lines += [f"- {escape(past.line)}" for past in state.seen_before[:SEEN_BEFORE_SHOWN]]
        lines += _more(SEEN_BEFORE_SHOWN, len(state.seen_before), "past incidents")
    return lines


def _hypothesis_row(index: int, hypothesis: Hypothesis) -> tuple[str, str, str, str, str]:
    where = _place(hypothesis.root_cause.namespace, hypothesis.root_cause.workload)
    cited = [escape(line, EVIDENCE_LINE_CHARS) for line in hypothesis.evidence[:EVIDENCE_PER_HYPOTHESIS]]
    extra = len(hypothesis.evidence) - EVIDENCE_PER_HYPOTHESIS
    if extra > 0:
        cited.append(f"(+{extra} more)")
    return (
        str(index),
        hypothesis.category.value,
        f"{hypothesis.confidence:.2f}",
        escape(where) if where else NONE,
        "<br>".join(cited) or NONE,
    )


# ---- actions ------------------------------------------------------------------------------------------------


def _action_name(record: ActionRecord) -> str:
    action = record.action
    return f"{action.type.value} {_place(action.namespace, action.target)}".strip()


def _params(params: Mapping[str, Any]) -> str:
    return escape(", ".join(f"{key}={value}" for key, value in sorted(params.items())), 200) if params else NONE


def _actions(state: IncidentState) -> list[str]:
    lines = ["## Actions", ""]
    plan = state.plan
    if plan is None:
        lines.append("No plan was made.")
    else:
        lines.append(f"Plan {code(plan.id)}" + (f": {escape(plan.rationale, 600)}" if plan.rationale else ""))
        if state.plans_tried:
            lines += ["", f"Plans tried after the first changed nothing: {state.plans_tried}."]
        if plan.mutating:
            mode = "dry run only (DRY_RUN)" if state.dry_run else "changes are applied"
            lines += ["", f"Policy: {mode}."]
        lines.append("")
        policy = [entry for entry in state.policy if isinstance(entry, Mapping)]
        lines += _table(
            ("#", "action", "target", "params", "risk", "approval", "policy"),
            (
                (
                    str(index),
                    action.type.value,
                    escape(_place(action.namespace, action.target) or NONE),
                    _params(action.params),
                    action.risk,
                    "required" if action.requires_approval else "not required",
                    _policy_cell(policy[index - 1] if index - 1 < len(policy) else None),
                )
                for index, action in enumerate(plan.actions[:PLAN_ACTIONS_SHOWN], start=1)
            ),
        )
        lines += _more(PLAN_ACTIONS_SHOWN, len(plan.actions), "planned actions")

    lines += ["", _decision_line(state)]

    lines += ["", "### Taken", ""]
    if state.actions_taken:
        lines += _table(
            ("#", "at", "action", "target", "mode", "result"),
            (
                (
                    str(index),
                    _clock(record.at),
                    record.action.type.value,
                    escape(_place(record.action.namespace, record.action.target) or NONE),
                    record.mode,
                    escape(record.result),
                )
                for index, record in enumerate(state.actions_taken[:ACTIONS_SHOWN], start=1)
            ),
        )
        lines += _more(ACTIONS_SHOWN, len(state.actions_taken), "actions")
    else:
        lines.append("No action was taken.")

    lines += ["", "### Verification", ""]
    if state.verification:
        lines += _table(
            ("at", "method", "outcome", "detail", "expression"),
            (
                (
                    _clock(check.at),
                    escape(check.method, 40),
                    check.outcome,
                    escape(check.detail),
                    code(check.expr or ""),
                )
                for check in state.verification[:VERIFICATIONS_SHOWN]
            ),
        )
        lines += _more(VERIFICATIONS_SHOWN, len(state.verification), "verifications")
    else:
        lines.append("No verification ran.")
    return lines


def _policy_cell(entry: Mapping[str, Any] | None) -> str:
    if entry is None:
        return NONE
    verdict = "allowed" if entry.get("allowed") else "refused"
    if entry.get("allowed") and entry.get("requires_approval"):
        verdict += ", needs approval"
    reasons = entry.get("reasons")
    if isinstance(reasons, list) and reasons:
        verdict += ": " + "; ".join(str(reason) for reason in reasons)
    return escape(verdict)


def _decision_line(state: IncidentState) -> str:
    decision = state.decision
    if decision is None:
        if state.plan is not None and any(action.requires_approval for action in state.plan.actions):
            return "Decision: none was recorded."
        return "Decision: none was needed."
    verdict = "approved" if decision.approve else "rejected"
    line = f"Decision: plan {verdict} by {escape(decision.by, 100)} at {_when(decision.at)}"
    return line + (f': "{escape(decision.reason, 500)}"' if decision.reason else ".")


# ---- follow-ups ---------------------------------------------------------------------------------------------


def _follow_ups(state: IncidentState) -> list[str]:
    items = follow_ups(state)
    return ["## Follow-ups", "", *[f"- {item}" for item in items]] if items else ["## Follow-ups", "", "None."]


def follow_ups(state: IncidentState) -> list[str]:
    """What a person must still do, each already escaped Markdown text."""
    items: list[str] = []
    diagnosis = state.diagnosis
    if state.phase != Phase.closed:
        items.append(f"The incident is still {state.phase.value}: this report is provisional.")
    if state.escalation_reason:
        items.append(f"The agent escalated to a person ({escape(state.escalation_reason)}): a responder must own it.")
        if state.resolved_at is None:
            items.append("Find and fix the cause by hand; the agent did not resolve it.")
        pending = [
            a for a in (state.plan.actions if state.plan else []) if a.type.mutating and not _was_done(state, a.target)
        ]
        for action in pending[:5]:
            where = escape(_place(action.namespace, action.target))
            items.append(f"Consider the proposed {action.type.value} of {where}: it was not applied.")
    applied = [r for r in state.actions_taken if r.mode in ("applied", "already_applied")]
    for record in applied[:5]:
        items.append(
            f"Review the agent's change ({escape(_action_name(record))}) and carry it into the workload's source "
            "(manifests, Helm values) or revert it, so the next deploy does not undo or repeat it."
        )
    for record in [r for r in state.actions_taken if r.mode in ("failed", "refused")][:5]:
        items.append(f"{escape(_action_name(record))} was {record.mode}: {escape(record.result, 200)}.")
    dry = [r for r in state.actions_taken if r.mode == "dry_run"]
    if dry:
        names = ", ".join(escape(_action_name(r)) for r in dry[:5])
        items.append(f"Only dry runs were made ({names}): nothing was changed in the cluster; apply by hand if needed.")
    last = state.verification[-1] if state.verification else None
    if last is not None and last.outcome != "recovered":
        items.append(f"The last verification was {last.outcome}: confirm recovery by hand.")
    if diagnosis.category == Category.unknown or (diagnosis.confidence < 0.5 and diagnosis.category != Category.noise):
        items.append(
            f"Establish the root cause: the agent's diagnosis is {diagnosis.category.value} at "
            f"{diagnosis.confidence:.2f} confidence."
        )
    if diagnosis.category == Category.noise:
        items.append("Review the alert's rule and thresholds: the agent found no corroborating evidence.")
    unconfigured = [gap.source for gap in state.evidence.gaps if "not configured" in gap.reason]
    if unconfigured:
        sources = ", ".join(escape(source, 40) for source in dict.fromkeys(unconfigured))
        items.append(f"Configure the missing evidence sources ({sources}) so the next diagnosis sees more.")
    if state.phase == Phase.closed and state.resolved_at is not None and not state.escalation_reason:
        items.append("Confirm the diagnosed cause and record how to prevent it from recurring.")
    return items


def _was_done(state: IncidentState, target: str) -> bool:
    return any(r.action.target == target and r.mode in ("applied", "already_applied") for r in state.actions_taken)
