"""The evidence budget: caps per list, a byte budget for the whole, and an honest count of what was cut."""

from __future__ import annotations

from datetime import UTC, datetime

from analysis.budget import CAPS, bound_evidence
from models.evidence import Evidence, EvidenceGap, KubeEvent, LogTemplate, PodStatus, SeriesChange


def big_evidence(pods: int = 500, templates: int = 300, line: int = 300) -> Evidence:
    now = datetime.now(UTC)
    return Evidence(
        findings=[
            SeriesChange(
                metric="error_ratio",
                workload=f"svc{i}",
                query="q" * 200,
                baseline=0.0,
                recent=1.0,
                change=1.0,
                score=100 - i * 0.1,
                direction="up",
                onset=now,
                summary="s" * 200,
            )
            for i in range(200)
        ],
        pods=[PodStatus(namespace="ns", name=f"pod-{i}", restarts=i) for i in range(pods)],
        events=[
            KubeEvent(namespace="ns", kind="Pod", name=f"p{i}", reason="BackOff", message="m" * line)
            for i in range(400)
        ],
        log_templates=[
            LogTemplate(template="t" * line, count=templates - i, new=True, sample="x" * line) for i in range(templates)
        ],
        gaps=[EvidenceGap(source="loki", reason="not configured")],
    )


def test_caps_keep_the_best_entries_and_count_the_rest() -> None:
    bounded = bound_evidence(big_evidence(), budget_bytes=10**9)
    assert len(bounded.findings) == CAPS["findings"]
    assert bounded.findings[0].workload == "svc0"  # sources rank; the budget keeps the head
    assert bounded.dropped["findings"] == 200 - CAPS["findings"]
    assert bounded.dropped["pods"] == 500 - CAPS["pods"]
    assert bounded.gaps == [EvidenceGap(source="loki", reason="not configured")]


def test_the_whole_stays_under_the_byte_budget_and_gaps_survive() -> None:
    evidence = big_evidence(line=2000)
    assert len(evidence.model_dump_json()) > 1_000_000
    bounded = bound_evidence(evidence, budget_bytes=16 * 1024)
    assert len(bounded.model_dump_json()) <= 16 * 1024
    assert bounded.gaps and bounded.findings  # the strongest findings are still there
    assert bounded.dropped["log_templates"] > 0


def test_small_evidence_is_untouched() -> None:
    evidence = big_evidence(pods=3, templates=2)
    evidence.findings, evidence.events = evidence.findings[:2], []
    assert bound_evidence(evidence) == evidence.model_copy(update={"dropped": {}})
    assert bound_evidence(evidence).dropped == {}
