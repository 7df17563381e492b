"""Replay the kept histories of representative incidents against today's workflow code.

A change that alters the commands a workflow issues for an existing history fails here instead of breaking the
incidents that are running when the change is deployed. Regenerate with
``CAPTURE_HISTORIES=1 pytest tests/test_incident_workflow.py`` only for a deliberate, patched change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.incident import IncidentWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_representative_paths_are_kept() -> None:
    names = {path.stem for path in HISTORIES}
    assert {
        "approve_resolved",
        "reject_escalated_resolved",
        "approval_timeout",
        "resolved_before_approval",
        "verification_failed",
        "validator_rejections",
        # Incidents since incident memory and the LLM step (patched: the older histories above have neither).
        "memory_and_llm_accepted",
        "memory_and_llm_fallback",
        "noise_watched_then_escalated",
        # Since the policy, the governor and the executor (patch remediation-v1).
        "remediation_applied_resolved",
        "remediation_made_worse_undone",
        "remediation_next_plan",
        # Slack at every phase, PagerDuty, the report and its LLM summary (patches humans-v1, llm-report-summary-v1).
        "llm_report_summary",
        # Open for a verdict on the diagnosis after the close: given, or the window ends (patch feedback-v1).
        "feedback_recorded",
        "feedback_window_closed",
    } <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_history_replays_deterministically(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[IncidentWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
