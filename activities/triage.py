"""Runbook-based triage and diagnosis: the pure functions of ``triage/``, run where the runbooks are loaded."""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from temporalio import activity

from models.incident import DiagnoseRequest, DiagnoseResult, TriageRequest, TriageResult
from triage.planning import diagnose, triage
from triage.runbooks import Runbook

log = structlog.get_logger(__name__)


class TriageActivities:
    def __init__(self, runbooks: Sequence[Runbook]) -> None:
        self._runbooks = list(runbooks)

    @activity.defn
    async def triage_alerts(self, request: TriageRequest) -> TriageResult:
        result = triage(request.alerts, self._runbooks)
        log.info("triaged", alertname=result.alertname, severity=result.severity, runbook=result.runbook_id)
        return result

    @activity.defn
    async def diagnose_incident(self, request: DiagnoseRequest) -> DiagnoseResult:
        result = diagnose(request.alerts, request.triage, request.evidence, self._runbooks, request.seen_before)
        log.info(
            "diagnosed",
            category=result.diagnosis.category,
            confidence=result.diagnosis.confidence,
            actions=[action.type for action in result.actions],
        )
        return result
