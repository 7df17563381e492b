"""Team figures: diagnosis accuracy from people's verdicts, auto-resolved vs escalated share, MTTA and MTTR, over a
window, computed from Temporal visibility (the closed runs' memos) and served at ``GET /stats`` and by
``starter.py stats``; verdicts given over ``POST /incidents/{id}/feedback`` and ``starter.py feedback``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from frontdoor.app import create_app
from frontdoor.gateway import IncidentGateway
from models.incident import (
    Category,
    Decision,
    DecisionRecord,
    FeedbackRecord,
    IncidentSettings,
    IncidentState,
    Phase,
    VerificationRecord,
)
from models.stats import IncidentSummary
from reports.stats import incident_stats, incident_summary, resolution_of
from tests.harness import FakePrometheus, RecordingNotifier, alert, incident_worker, notification, resolved, wait_for
from triage.identity import incident_workflow_id
from workflows.incident import IncidentWorkflow

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def summary(
    minute: int,
    resolution: str,
    *,
    ack_s: float | None = None,
    resolve_s: float | None = None,
    category: Category = Category.bad_deploy,
    verdict: str | None = None,
) -> IncidentSummary:
    opened = T0 + timedelta(minutes=minute)
    feedback = (
        FeedbackRecord(verdict=verdict, by="alice", at=opened, diagnosed=category)  # type: ignore[arg-type]
        if verdict
        else None
    )
    return IncidentSummary(
        workflow_id=f"incident-{minute}",
        opened_at=opened,
        acknowledged_at=opened + timedelta(seconds=ack_s) if ack_s is not None else None,
        resolved_at=opened + timedelta(seconds=resolve_s) if resolve_s is not None else None,
        resolution=resolution,  # type: ignore[arg-type]
        category=category,
        feedback=feedback,
    )


def test_figures_over_the_window_shares_means_and_accuracy() -> None:
    summaries = [
        summary(0, "auto_resolved", resolve_s=300, verdict="correct"),
        summary(10, "approved", ack_s=60, resolve_s=900, verdict="correct"),
        summary(20, "approved", ack_s=180, resolve_s=1500, category=Category.oom_kill, verdict="wrong"),
        summary(30, "escalated", ack_s=600, category=Category.oom_kill),
        summary(-10, "escalated", ack_s=5, resolve_s=5, verdict="wrong"),  # opened before the window: left out
        summary(60, "escalated"),  # opened at the window's end: left out
    ]
    stats = incident_stats(summaries, window_start=T0, window_end=T0 + timedelta(hours=1), open_incidents=2)

    assert (stats.closed, stats.open, stats.unreadable) == (4, 2, 0)
    assert stats.resolutions == {"auto_resolved": 1, "approved": 2, "escalated": 1, "other": 0}
    assert stats.shares == {"auto_resolved": 0.25, "approved": 0.5, "escalated": 0.25, "other": 0.0}
    assert stats.time_to_acknowledge.model_dump() == {"count": 3, "mean_s": 280.0, "median_s": 180.0, "p90_s": 600.0}
    assert stats.time_to_resolve.model_dump() == {"count": 3, "mean_s": 900.0, "median_s": 900.0, "p90_s": 1500.0}
    assert stats.diagnosis.model_dump() == {"judged": 3, "correct": 2, "wrong": 1, "unjudged": 1, "accuracy": 0.6667}
    assert stats.diagnosis_by_category["oom_kill"].model_dump() == {
        "judged": 1,
        "correct": 0,
        "wrong": 1,
        "unjudged": 1,
        "accuracy": 0.0,
    }
    assert stats.diagnosis_by_category["bad_deploy"].accuracy == 1.0


def test_no_incidents_gives_empty_figures_not_errors() -> None:
    stats = incident_stats([], window_start=T0, window_end=T0 + timedelta(days=7))
    assert stats.closed == 0 and stats.shares["escalated"] == 0.0
    assert stats.time_to_resolve.mean_s is None and stats.diagnosis.accuracy is None


@pytest.mark.parametrize(
    ("escalated", "resolved_at", "approve", "expected"),
    [
        (False, T0, None, "auto_resolved"),
        (False, T0, True, "approved"),
        (True, T0, True, "escalated"),  # escalated after approval (say, the change made it worse), then resolved
        (True, None, False, "escalated"),
        (False, None, None, "other"),
    ],
)
def test_how_an_incident_ended(escalated: bool, resolved_at: datetime | None, approve: bool | None, expected: str):
    state = IncidentState(escalation_reason="why" if escalated else None, resolved_at=resolved_at)
    if approve is not None:
        state.decision = DecisionRecord(approve=approve, by="alice", at=T0)
    assert resolution_of(state) == expected


def test_the_summary_carries_what_stats_and_memory_need() -> None:
    state = IncidentState(workflow_id="incident-x", opened_at=T0, acknowledged_at=T0, resolved_at=T0, closed_at=T0)
    state.decision = DecisionRecord(approve=True, by="alice", at=T0)
    state.verification = [VerificationRecord(at=T0, method="prometheus", outcome="recovered", detail="")]
    state.diagnosis.category, state.phase, state.outcome = Category.oom_kill, Phase.closed, "resolved"
    made = incident_summary(state)
    assert (made.resolution, made.recovered_after_approval, made.category, made.outcome) == (
        "approved",
        True,
        Category.oom_kill,
        "resolved",
    )
    assert IncidentSummary.model_validate(json.loads(made.model_dump_json())) == made  # it survives the memo


async def cli(env: WorkflowEnvironment, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "starter.py",
        *args,
        cwd=ROOT,
        env={**os.environ, "TEMPORAL_ADDRESS": env.client.service_client.config.target_host, "LOG_FORMAT": "json"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_verdicts_over_http_and_the_cli_make_the_teams_figures(
    dev_server: WorkflowEnvironment, task_queue: str
) -> None:
    settings = Settings(_env_file=None, temporal_task_queue=task_queue)  # type: ignore[call-arg]
    gateway = IncidentGateway(dev_server.client, settings, IncidentSettings(verify_after_s=1, feedback_window_s=3600))
    prometheus, notifier = FakePrometheus(), RecordingNotifier()
    service = f"stats-{task_queue}"
    client = TestClient(TestServer(create_app(gateway, settings)))
    await client.start_server()

    async def incident(tag: str) -> tuple[str, object]:
        group = notification(alert(service=service), group_key=f"{{}}:{{{tag}={task_queue}}}")
        delivery = await gateway.deliver(group)
        handle = dev_server.client.get_workflow_handle_for(IncidentWorkflow.run, delivery.workflow_id)
        await wait_for(handle, lambda s: s.phase == Phase.awaiting_approval, timeout_s=30)
        return delivery.workflow_id, group

    async def closed(workflow_id: str) -> None:
        handle = dev_server.client.get_workflow_handle_for(IncidentWorkflow.run, workflow_id)
        await wait_for(handle, lambda s: s.phase == Phase.closed and s.feedback_until is not None, timeout_s=30)

    try:
        async with incident_worker(dev_server.client, task_queue, prometheus, notifier):
            approved, _ = await incident("approved")
            escalated, escalated_group = await incident("escalated")
            still_open, _ = await incident("open")

            prometheus.series = []  # the approved fix works
            await gateway.decide(approved, _decision(True))
            await closed(approved)
            await gateway.decide(escalated, _decision(False))
            await gateway.deliver(resolved(escalated_group))  # type: ignore[arg-type]
            await closed(escalated)

            # Verdicts: over HTTP for one, with the CLI for the other.
            bad = await client.post(f"/incidents/{approved}/feedback", json={"verdict": "maybe", "by": "alice"})
            assert bad.status == 400 and "verdict" in (await bad.json())["error"]
            ok = await client.post(f"/incidents/{approved}/feedback", json={"verdict": "correct", "by": "alice"})
            assert ok.status == 200 and (await ok.json())["diagnosed"] == "bad_deploy"
            code, out, err = await cli(dev_server, "feedback", escalated, "wrong", "--by", "bob", "--cause", "oom_kill")
            assert code == 0 and json.loads(out)["cause"] == "oom_kill", err
            again = await client.post(f"/incidents/{escalated}/feedback", json={"verdict": "correct", "by": "carol"})
            # Either still open and refusing a second verdict, or already completed on the first one.
            assert again.status in (404, 409)
            nobody = await client.post(
                f"/incidents/{incident_workflow_id('nobody')}/feedback", json={"verdict": "correct", "by": "alice"}
            )
            assert nobody.status == 404 and "feedback window" in (await nobody.json())["error"]
            code, _, err = await cli(dev_server, "feedback", still_open, "wrong", "--by", "bob", "--cause", "nonsense")
            assert code == 2 and "--cause" in err  # argparse names the bad choice

            async def figures() -> dict:
                response = await client.get("/stats", params={"window": "1h", "service": service})
                assert response.status == 200
                return await response.json()

            for _ in range(100):
                stats = await figures()
                if stats["closed"] == 2 and stats["diagnosis"]["judged"] == 2 and stats["open"] == 1:
                    break
                await asyncio.sleep(0.1)
            assert stats["resolutions"] == {"auto_resolved": 0, "approved": 1, "escalated": 1, "other": 0}
            assert stats["shares"]["escalated"] == 0.5 and stats["open"] == 1
            assert stats["time_to_acknowledge"]["count"] == 2  # both were decided by a person
            assert stats["time_to_resolve"]["count"] == 2
            assert stats["diagnosis"] == {"judged": 2, "correct": 1, "wrong": 1, "unjudged": 0, "accuracy": 0.5}
            window = datetime.fromisoformat(stats["window_end"]) - datetime.fromisoformat(stats["window_start"])
            assert window == timedelta(hours=1)

            code, out, err = await cli(dev_server, "stats", "--window", "1h", "--service", service)
            assert code == 0 and json.loads(out)["resolutions"] == stats["resolutions"], err
            elsewhere = await client.get("/stats", params={"window": "1h", "service": f"{service}-other"})
            assert (await elsewhere.json())["closed"] == 0

            for bad_window in ("soon", "0", "400d"):
                refused = await client.get("/stats", params={"window": bad_window})
                assert refused.status == 400 and "window" in (await refused.json())["error"]
            code, _, err = await cli(dev_server, "stats", "--window", "soon")
            assert code == 1 and "--window" in err
    finally:
        await client.close()


def _decision(approve: bool) -> Decision:
    return Decision(approve=approve, by="alice", reason="test")
