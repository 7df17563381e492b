"""What a run prints and writes: one row per scenario, the totals, and (with ``--out``) the JSON behind them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evals.runner import ScenarioResult
from evals.score import OUTCOMES

COLUMNS = ("scenario", "expected", "got", "conf", "root cause", "action", "agent s", "wall s")


def _percent(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f}%)" if whole else "0/0 (-)"


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def row(result: ScenarioResult) -> tuple[str, ...]:
    expected = result.expected.category if result.expected else "?"
    wall = f"{result.wall_s:.1f}"
    if result.score is None:
        return (result.name, expected, result.status, "", "", "", "", wall)
    score = result.score
    got = score.category or "-"
    if result.status == "timeout":
        got += " (timeout)"
    elif score.category and not score.category_ok:
        got += " *"
    # A node has no namespace: it shows as its bare name.
    cause = "/".join(part for part in (score.root_namespace, score.root_workload) if part) or "-"
    return (
        result.name,
        expected,
        got,
        f"{score.confidence:.2f}" if score.category else "",
        ("ok " if score.root_cause_ok else "no ") + cause,
        score.outcome.replace("_", " "),
        f"{result.agent_s:.1f}" if result.agent_s is not None else "",
        wall,
    )


def totals(results: Sequence[ScenarioResult]) -> dict[str, Any]:
    """Accuracy over the scenarios that ran (a timeout counts, as a failure); errors are counted apart."""
    scored = [result.score for result in results if result.ran and result.score is not None]
    outcomes = {outcome: sum(score.outcome == outcome for score in scored) for outcome in OUTCOMES}
    return {
        "scenarios": len(results),
        "scored": len(scored),
        "errors": sum(not result.ran for result in results),
        "timeouts": sum(result.status == "timeout" for result in results),
        "category_correct": sum(score.category_ok for score in scored),
        "root_cause_correct": sum(score.root_cause_ok for score in scored),
        "confident_and_wrong": sum(score.confident_and_wrong for score in scored),
        "outcomes": outcomes,
        "category_accuracy": _ratio(sum(score.category_ok for score in scored), len(scored)),
        "root_cause_accuracy": _ratio(sum(score.root_cause_ok for score in scored), len(scored)),
        "confident_and_wrong_rate": _ratio(sum(score.confident_and_wrong for score in scored), len(scored)),
        "wall_s": round(sum(result.wall_s for result in results), 1),
    }


def render(results: Sequence[ScenarioResult], elapsed_s: float | None = None) -> str:
    rows = [COLUMNS, *(row(result) for result in results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    numeric = {"conf", "agent s", "wall s"}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if COLUMNS[i] in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(rows[0]), line(["-" * width for width in widths]), *(line(r) for r in rows[1:])]
    t = totals(results)
    n = t["scored"]
    outcomes = "  ".join(f"{name.replace('_', ' ')} {count}" for name, count in t["outcomes"].items())
    out += [
        "",
        f"category accuracy     {_percent(t['category_correct'], n)}",
        f"root-cause accuracy   {_percent(t['root_cause_correct'], n)}",
        f"action outcomes       {outcomes}",
        f"confident-and-wrong   {_percent(t['confident_and_wrong'], n)}",
    ]
    if t["timeouts"]:
        out.append(f"timeouts              {t['timeouts']} (scored as they stood)")
    if elapsed_s is not None:
        out.append(f"wall time             {elapsed_s:.1f}s")
    errors = [result for result in results if not result.ran]
    if errors:
        out += ["", f"{len(errors)} scenario(s) could not run:"]
        out += [f"  {result.name}: {result.error}" for result in errors]
    return "\n".join(out)


def summary(results: Sequence[ScenarioResult], meta: Mapping[str, Any]) -> dict[str, Any]:
    scenarios = []
    for result in results:
        entry: dict[str, Any] = {
            "name": result.name,
            "directory": str(result.directory),
            "status": result.status,
            "error": result.error,
            "phase": result.phase,
            "workflow_id": result.workflow_id,
            "agent_s": None if result.agent_s is None else round(result.agent_s, 2),
            "wall_s": round(result.wall_s, 2),
        }
        if result.expected is not None:
            expected = asdict(result.expected)
            expected["notified_at"] = result.expected.notified_at.isoformat()
            entry["expected"] = expected
        if result.score is not None:
            entry["score"] = asdict(result.score)
        scenarios.append(entry)
    return {**meta, "totals": totals(results), "scenarios": scenarios}


def write_out(out: Path, results: Sequence[ScenarioResult], meta: Mapping[str, Any]) -> None:
    """``<name>.json`` (the final ``state``) for each scenario that ran, and ``summary.json``."""
    out.mkdir(parents=True, exist_ok=True)
    for result in results:
        if result.ran:
            (out / f"{result.name}.json").write_text(json.dumps(result.state, indent=2, sort_keys=True) + "\n")
    (out / "summary.json").write_text(json.dumps(summary(results, meta), indent=2) + "\n")
