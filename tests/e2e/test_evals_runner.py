"""End to end: ``python -m evals`` on the hand-written scenario in tests/scenarios, exactly as ``make eval`` runs.

The runner loads the world into a real Prometheus and Alertmanager, the Loki stand-in and the Kubernetes
emulator, starts ``python -m devstack``, posts the notification to the real webhook and scores the incident.
What is checked is the mechanics (every source answered, the incident got past diagnosis, the row agrees with the
state), not which category the diagnosis engine picks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from evals.contract import PAST_DIAGNOSIS

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "tests" / "scenarios"


def test_the_runner_scores_a_scenario_through_the_real_product(tmp_path: Path) -> None:
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "evals", str(SCENARIOS), "--out", str(out), "--timeout", "90", "--no-llm"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "checkout_bad_deploy" in completed.stdout and "category accuracy" in completed.stdout

    summary = json.loads((out / "summary.json").read_text())
    [row] = summary["scenarios"]
    assert (row["name"], row["status"]) == ("checkout_bad_deploy", "ok")
    state = json.loads((out / "checkout_bad_deploy.json").read_text())
    assert state["phase"] in PAST_DIAGNOSIS and state["phase"] == row["phase"]
    assert state["workflow_id"] == row["workflow_id"]

    # The world was there: every source answered, and the shifted data was "the last hour".
    assert state["evidence"]["gaps"] == []
    sources = {event["data"].get("source") for event in state["timeline"] if event["kind"] == "evidence"}
    assert {"prometheus", "loki", "kubernetes", "alertmanager"} <= sources

    # The row is what the state says, scored against expected.json.
    diagnosis, score = state["diagnosis"], row["score"]
    assert (score["category"], score["confidence"]) == (diagnosis["category"], diagnosis["confidence"])
    assert score["category_ok"] == (diagnosis["category"] == "bad_deploy")
    cause = diagnosis["root_cause"]
    assert score["root_cause_ok"] == ((cause["namespace"], cause["workload"]) == ("shop", "checkout"))
    planned = [
        {"type": a["type"], "namespace": a["namespace"], "target": a["target"]} for a in state["plan"]["actions"]
    ]
    assert score["actions"] == planned
    assert score["outcome"] in ("good", "conservative", "unsafe", "ineffective")
    assert summary["totals"]["scored"] == 1 and summary["totals"]["errors"] == 0
