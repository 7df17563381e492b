"""The post-incident report: rendered from hand-built states (every section, durations, bounds, hostile text),
and served by the front door for a real incident on a Temporal dev server."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta

from models.incident import (
    Action,
    ActionRecord,
    ActionType,
    Alert,
    Category,
    DecisionRecord,
    Diagnosis,
    Evidence,
    EvidenceGap,
    EvidenceItem,
    Hypothesis,
    IncidentState,
    Phase,
    Plan,
    Severity,
    TimelineEvent,
    VerificationRecord,
    Workload,
)
from reports import render_report
from reports.markdown import TIMELINE_HEAD, TIMELINE_ROWS, escape
from tests.conftest import load_payload
from tests.harness import wait_http_phase
from triage.identity import incident_workflow_id

T0 = datetime(2025, 6, 17, 14, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(seconds: float, kind: str, message: str, **data: object) -> TimelineEvent:
    return TimelineEvent(at=at(seconds), kind=kind, message=message, data=data)


def rollback() -> Action:
    return Action(
        type=ActionType.rollback,
        namespace="shop",
        target="checkout",
        params={"to_revision": 7},
        risk="medium",
        requires_approval=True,
        reason="the regression began with revision 8",
    )


def diagnosis() -> Diagnosis:
    return Diagnosis(
        category=Category.bad_deploy,
        confidence=0.82,
        root_cause=Workload(namespace="shop", workload="checkout"),
        summary="checkout's rollout to revision 8 at 13:58 preceded the 5xx rise",
        runbook="bad-deploy",
        hypotheses=[
            Hypothesis(
                category=Category.bad_deploy,
                confidence=0.82,
                evidence=[
                    "rollout: checkout revision 7 -> 8 at 13:58:10Z",
                    "error_ratio of checkout up from 0.001 to 0.21",
                    "new log template: NullPointerException in PaymentClient",
                    "restarts of checkout up by 4",
                ],
                root_cause=Workload(namespace="shop", workload="checkout"),
            ),
            Hypothesis(category=Category.dependency_failure, confidence=0.11, evidence=["payments latency normal"]),
        ],
    )


def resolved_state() -> IncidentState:
    """Opened 14:00:00, approved 14:04:12, resolved 14:20:05, closed 14:20:06."""
    plan = Plan(id="plan-0123456789ab", actions=[rollback()], rationale="roll checkout back to revision 7")
    return IncidentState(
        workflow_id="incident-0123456789abcdef",
        group_key='{}:{alertname="HighErrorRate"}',
        phase=Phase.closed,
        severity=Severity.critical,
        alertname="HighErrorRate",
        namespace="shop",
        service="checkout",
        title="checkout in shop returns more than 5% HTTP 5xx responses",
        alerts={
            "fp1": Alert(
                fingerprint="fp1",
                status="resolved",
                labels={"alertname": "HighErrorRate", "namespace": "shop", "service": "checkout"},
                starts_at=at(-120),
                ends_at=at(1200),
            )
        },
        alert_expr='sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m])) > 0.05',
        diagnosis=diagnosis(),
        plan=plan,
        policy=[
            {
                "allowed": True,
                "requires_approval": True,
                "risk": "medium",
                "action": rollback().model_dump(mode="json"),
                "reasons": ["critical severity needs approval"],
            }
        ],
        dry_run=False,
        decision=DecisionRecord(approve=True, by="alice", reason="matches the deploy", plan_id=plan.id, at=at(252)),
        actions_taken=[
            ActionRecord(
                action=rollback(),
                plan_id=plan.id,
                at=at(255),
                mode="applied",
                result="rolled back to revision 7",
                action_id="incident-0123456789abcdef/plan-0123456789ab/0",
            )
        ],
        verification=[
            VerificationRecord(
                at=at(1200),
                method="prometheus",
                outcome="recovered",
                detail="the alert expression returns no series of this incident",
                expr='sum(rate(http_requests_total{code=~"5.."}[5m])) > 0.05',
            )
        ],
        timeline=[
            event(0, "opened", "incident opened"),
            event(1, "phase", "received -> triaging: triaging", **{"from": "received", "to": "triaging"}),
            event(2, "triaged", "severity critical; runbook bad-deploy"),
            event(3, "evidence", "prometheus: error_ratio of checkout up 210x", source="prometheus"),
            event(4, "evidence_gap", "loki: Loki is not configured (set LOKI_URL)"),
            event(
                5,
                "diagnosed",
                "bad_deploy at 0.82: checkout's rollout to revision 8 preceded the 5xx rise",
                **diagnosis().model_dump(mode="json"),
            ),
            event(5, "plan_proposed", "roll checkout back to revision 7"),
            event(6, "policy", "changes are applied; rollback: critical severity needs approval"),
            event(6, "phase", "diagnosing -> awaiting_approval: plan needs a human decision", to="awaiting_approval"),
            event(252, "decision", "plan plan-0123456789ab approved by alice", reason="matches the deploy"),
            event(255, "action", "rollback shop/checkout: applied: rolled back to revision 7"),
            event(1200, "verification", "recovered: the alert expression returns no series of this incident"),
            event(1205, "phase", "verifying -> resolved: recovered", to="resolved"),
            event(1206, "phase", "resolved -> closed: resolved", to="closed"),
        ],
        evidence=_evidence(),
        opened_at=at(0),
        acknowledged_at=at(252),
        resolved_at=at(1205),
        closed_at=at(1206),
        outcome="resolved",
    )


def _evidence() -> Evidence:
    return Evidence(
        items=[EvidenceItem(source="prometheus", kind="finding", summary="error_ratio of checkout up 210x")],
        gaps=[EvidenceGap(source="loki", reason="Loki is not configured (set LOKI_URL)")],
    )


def escalated_state() -> IncidentState:
    state = resolved_state()
    reason = "plan plan-0123456789ab rejected by bob: not during the sale"
    state.decision = DecisionRecord(approve=False, by="bob", reason="not during the sale", at=at(90))
    state.acknowledged_at = at(90)
    state.actions_taken, state.verification = [], []
    state.phase = Phase.escalated
    state.escalation_reason = reason
    state.resolved_at = state.closed_at = state.outcome = None
    state.timeline = [
        *state.timeline[:9],
        event(90, "phase", f"awaiting_approval -> escalated: {reason}", to="escalated"),
    ]
    return state


def section(report: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", report, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no section {title!r} in:\n{report}"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table row in ``text``, split the way GFM does (an escaped pipe does not split)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            rows.append([cell.strip() for cell in cells])
    return rows


# ---- rendering ------------------------------------------------------------------------------------------------


def test_a_closed_resolved_incident_renders_every_section_with_its_durations() -> None:
    report = render_report(resolved_state())

    assert report.splitlines()[0] == "# Incident report: HighErrorRate (critical) on shop/checkout"
    headings = re.findall(r"^## (.+)$", report, flags=re.MULTILINE)
    assert headings == ["Summary", "What happened", "Diagnosis", "Actions", "Follow-ups"]

    summary = dict((row[0], row[1]) for row in table_rows(section(report, "Summary")) if len(row) == 2)
    assert summary["Opened"] == "2025-06-17 14:00:00Z"
    assert summary["Acknowledged"] == "2025-06-17 14:04:12Z (plan approved by alice)"
    assert summary["Resolved"] == "2025-06-17 14:20:05Z"
    assert summary["Closed"] == "2025-06-17 14:20:06Z"
    assert summary["Outcome"] == "resolved"
    assert summary["Time to acknowledge"] == "4m 12s"
    assert summary["Time to resolve"] == "20m 5s"
    assert summary["Root cause"] == "bad_deploy (0.82) at shop/checkout"
    assert summary["Changes"] == "applied to the cluster"

    happened = section(report, "What happened")
    rows = table_rows(happened)
    assert rows[0] == ["time", "since open", "event", "detail"]
    assert rows[1][:3] == ["14:00:00Z", "+0s", "alert received"]
    kinds = [row[2] for row in rows[1:]]
    for kind in ("alert received", "evidence", "evidence gap", "diagnosis", "policy", "decision", "action"):
        assert kind in kinds
    assert kinds[-3:] == ["verification", "resolved", "closed"]
    decision_row = next(row for row in rows if row[2] == "decision")
    assert decision_row[:2] == ["14:04:12Z", "+4m 12s"] and "alice" in decision_row[3]
    assert "matches the deploy" in decision_row[3]
    diagnosis_row = next(row for row in rows if row[2] == "diagnosis")
    assert "hypotheses: bad_deploy 0.82, dependency_failure 0.11" in diagnosis_row[3]

    diag = section(report, "Diagnosis")
    assert "| Category | bad_deploy |" in diag and "| Confidence | 0.82 |" in diag
    assert "| Root cause | shop/checkout |" in diag
    assert "checkout's rollout to revision 8" in diag
    hypotheses = [row for row in table_rows(diag) if row and row[0] in ("1", "2")]
    assert hypotheses[0][:4] == ["1", "bad_deploy", "0.82", "shop/checkout"]
    top = hypotheses[0][4].split("<br>")
    assert len(top) == 4 and top[-1] == "(+1 more)"  # the top three cited lines, and how many more
    assert top[0] == "rollout: checkout revision 7 -> 8 at 13:58:10Z"
    assert "loki: Loki is not configured (set LOKI_URL)" in diag

    actions = section(report, "Actions")
    assert "Plan `plan-0123456789ab`: roll checkout back to revision 7" in actions
    assert "Policy: changes are applied." in actions
    assert 'Decision: plan approved by alice at 2025-06-17 14:04:12Z: "matches the deploy"' in actions
    taken = [row for row in table_rows(actions) if row[0] == "1" and len(row) == 6]
    assert taken == [["1", "14:04:15Z", "rollback", "shop/checkout", "applied", "rolled back to revision 7"]]
    assert "| 14:20:00Z | prometheus | recovered |" in actions

    follow = section(report, "Follow-ups")
    assert "Review the agent's change (rollback shop/checkout)" in follow
    assert "Configure the missing evidence sources (loki)" in follow
    assert "provisional" not in follow

    assert render_report(resolved_state()) == report  # deterministic


def test_an_escalated_incident_has_its_reason_and_follow_ups() -> None:
    report = render_report(escalated_state())
    reason = "plan plan-0123456789ab rejected by bob: not during the sale"

    summary = dict((row[0], row[1]) for row in table_rows(section(report, "Summary")) if len(row) == 2)
    assert summary["Escalated"] == reason
    assert summary["Resolved"] == "not resolved" and summary["Closed"] == "still open"
    assert summary["Time to acknowledge"] == "1m 30s" and summary["Time to resolve"] == "—"
    assert summary["Changes"] == "none"

    rows = table_rows(section(report, "What happened"))
    assert rows[-1][2] == "escalated" and reason in rows[-1][3]

    actions = section(report, "Actions")
    assert 'Decision: plan rejected by bob at 2025-06-17 14:01:30Z: "not during the sale"' in actions
    assert "No action was taken." in actions and "No verification ran." in actions

    follow = section(report, "Follow-ups")
    assert "The incident is still escalated: this report is provisional." in follow
    assert f"The agent escalated to a person ({reason}): a responder must own it." in follow
    assert "Find and fix the cause by hand" in follow
    assert "Consider the proposed rollback of shop/checkout: it was not applied." in follow


def test_a_huge_timeline_is_bounded_with_a_note() -> None:
    state = resolved_state()
    state.timeline = [event(i, "alerts_firing", f"event number {i} " + "x" * 5000) for i in range(5000)]
    state.timeline_dropped = 1234
    report = render_report(state)

    rows = table_rows(section(report, "What happened"))[1:]
    assert len(rows) == TIMELINE_ROWS + 1  # the kept rows and the "left out" row
    assert rows[TIMELINE_HEAD] == ["…", "", "…", f"{5000 - TIMELINE_ROWS} events left out of this report"]
    assert "event number 0 " in rows[0][3] and "event number 4999 " in rows[-1][3]
    assert "event number 20 " not in report and "event number 4920 " in report
    assert all(len(row[3]) <= 310 for row in rows)
    assert "1234 event(s)" in report
    assert f"the first {TIMELINE_HEAD} and the latest {TIMELINE_ROWS - TIMELINE_HEAD} are shown" in report
    assert len(report) < 100_000


def test_hostile_label_text_does_not_break_the_tables() -> None:
    state = resolved_state()
    hostile = "evil | injected | cells\n\n## Fake heading\n| a | b |\n<script>alert(1)</script> [x](http://e) *b*"
    state.alertname = hostile
    state.namespace = "ns|x\ny"
    state.service = "# svc"
    state.outcome = "done\n| Outcome | forged |"
    state.decision = DecisionRecord(approve=True, by="mallory|\nadmin", reason="a | b\nc", at=at(252))
    state.diagnosis.hypotheses[0].evidence = ["line one | two\nthree", "`code` ``x``"]
    state.actions_taken[0].result = "ok\n| 2 | 00:00:00Z | delete_pod | forged | applied | x |"
    state.timeline.append(event(1300, "alerts_firing", hostile))
    state.verification[0].expr = 'rate(x{code=~"5..|4.."}[5m]) `'
    report = render_report(state)

    headings = re.findall(r"^#+ .*$", report, flags=re.MULTILINE)
    assert all("Fake" not in heading for heading in headings[1:])
    assert report.splitlines()[0].startswith("# Incident report: evil \\| injected \\| cells ## Fake heading")
    assert not re.search(r"(?<!\\)<script", report) and "\\<script>" in report
    assert "[x](http://e)" not in report and "*b*" not in report

    for title in ("Summary", "What happened", "Diagnosis", "Actions"):
        text = section(report, title)
        for block in re.split(r"\n\s*\n", text):
            lines = [line for line in block.splitlines() if line.startswith("|")]
            if not lines:
                continue
            assert all(not line or line.startswith("|") for line in block.splitlines()), block
            widths = {len(row) for row in table_rows("\n".join(lines))} | {lines[1].count("---")}
            assert len(widths) == 1, f"a table with rows of different widths in {title}:\n{block}"

    summary = dict((row[0], row[1]) for row in table_rows(section(report, "Summary")) if len(row) == 2)
    assert summary["Outcome"] == "done \\| Outcome \\| forged \\|"
    assert summary["Where"] == "ns\\|x y/# svc"  # a # inside a line is no heading
    taken = [row for row in table_rows(section(report, "Actions")) if len(row) == 6 and row[0] in ("1", "2")]
    assert len(taken) == 1 and taken[0][5].startswith("ok \\| 2 \\|")


def test_escape_neutralises_markdown() -> None:
    assert escape("a|b\nc\r\nd\te") == "a\\|b c d e"
    assert escape("# heading") == "\\# heading"
    assert escape("- item") == "\\- item" and escape("-0.5") == "-0.5"
    assert escape("1. first") == "1\\. first" and escape("1.5 per second") == "1.5 per second"
    assert escape("x\x00\x1by") == "xy"
    assert escape("error_ratio of __init__ _x_") == "error_ratio of \\_\\_init\\_\\_ \\_x\\_"
    assert escape("a -> b") == "a -> b" and escape("> quote") == "\\> quote"
    assert escape("<b>*x*</b> [l](u) ~~s~~ `c`") == "\\<b>\\*x\\*\\</b> \\[l\\](u) \\~\\~s\\~\\~ \\`c\\`"
    assert escape("y" * 1000, 10) == "y" * 9 + "…"


def test_the_summary_seam_puts_a_labelled_paragraph_on_top() -> None:
    report = render_report(resolved_state(), summary="Checkout broke after a deploy.\n\n| A rollback fixed it.")
    summary = section(report, "Summary")
    assert summary.startswith("\nCheckout broke after a deploy.\n\n\\| A rollback fixed it.\n")
    assert "written from the record below" in summary
    assert render_report(resolved_state(), summary=None) == render_report(resolved_state())


def test_an_empty_timeline_is_reconstructed_from_the_fields() -> None:
    state = resolved_state()
    state.timeline = []
    rows = table_rows(section(render_report(state), "What happened"))
    assert [row[2] for row in rows[1:]] == [
        "alert received",
        "decision",
        "action",
        "verification",
        "resolved",
        "closed",
    ]
    assert "reconstructed" in render_report(state)
    assert "Nothing was recorded." in render_report(IncidentState())


# ---- the HTTP route -----------------------------------------------------------------------------------------------


async def test_the_report_route_serves_markdown_for_a_real_incident(front) -> None:
    client = await front()
    payload = copy.deepcopy(load_payload("alertmanager_firing.json"))
    payload["groupKey"] = '{}:{alertname="HighErrorRate", test="report-route"}'
    started = await client.post("/alerts/alertmanager", json=payload)
    workflow_id = (await started.json())["incidents"][0]["workflow_id"]
    await wait_http_phase(client, workflow_id, "awaiting_approval")

    response = await client.get(f"/incidents/{workflow_id}/report")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/markdown; charset=utf-8"
    report = await response.text()
    assert report.startswith("# Incident report: HighErrorRate (critical) on food/search")
    assert f"`{workflow_id}`" in report and "| Phase | awaiting_approval |" in report

    resolved = copy.deepcopy(payload)
    resolved["status"] = "resolved"
    resolved["alerts"][0].update(status="resolved", endsAt="2026-01-01T12:30:00Z")
    await client.post("/alerts/alertmanager", json=resolved)
    await wait_http_phase(client, workflow_id, "closed")
    report = await (await client.get(f"/incidents/{workflow_id}/report")).text()
    assert "| Outcome | resolved |" in report and "| Closed | still open |" not in report
    rows = table_rows(section(report, "What happened"))
    assert rows[1][2] == "alert received" and rows[-1][2] == "closed"


async def test_the_report_route_is_404_for_an_unknown_incident(front) -> None:
    client = await front()
    unknown = await client.get(f"/incidents/{incident_workflow_id('nobody-report')}/report")
    assert unknown.status == 404 and "no incident" in (await unknown.json())["error"]
    assert (await client.get("/incidents/not-an-incident/report")).status == 404
