"""The optional LLM step of the diagnosing phase, in workflow context: ask, then keep or fall back.

The model sees the bounded evidence, the scored hypotheses and the allowed actions; the activity validates its
answer (taxonomy, allowed actions only) and never fails for LLM trouble, so a fallback is an ordinary result.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.llm import LLMActivities
    from models.incident import DiagnoseResult, IncidentState
    from models.llm import LLMDiagnoseRequest, LLMDiagnoseResult, LLMSummaryRequest, LLMSummaryResult
    from workflows.failures import failure_reason

LLM_PATCH = "llm-diagnosis-v1"
LLM_SUMMARY_PATCH = "llm-report-summary-v1"
# The activity bounds its own retries and waits (about 150 s at worst); a crashed worker is retried.
_LLM_TIMEOUT = timedelta(seconds=180)
_LLM_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=3)


async def ask_llm(state: IncidentState, runbook_result: DiagnoseResult) -> LLMDiagnoseResult:
    request = LLMDiagnoseRequest(
        workflow_id=state.workflow_id,
        alertname=state.alertname,
        severity=state.severity,
        namespace=state.namespace,
        service=state.service,
        title=state.title,
        evidence=state.evidence,
        candidates=runbook_result.diagnosis.hypotheses,
        allowed_actions=runbook_result.allowed_actions,
        seen_before=[past.line for past in state.seen_before],
    )
    try:
        return await workflow.execute_activity_method(
            LLMActivities.diagnose_with_llm, request, start_to_close_timeout=_LLM_TIMEOUT, retry_policy=_LLM_RETRY
        )
    except ActivityError as err:
        return LLMDiagnoseResult(used=False, fallback_reason=f"the LLM step failed: {failure_reason(err)}")


def merged(runbook_result: DiagnoseResult, answer: LLMDiagnoseResult) -> DiagnoseResult:
    """The LLM's answer when it was accepted, else the runbook's, unchanged."""
    if not answer.used or answer.diagnosis is None:
        return runbook_result
    diagnosis = answer.diagnosis.model_copy(update={"runbook": runbook_result.diagnosis.runbook})
    return runbook_result.model_copy(
        update={
            "diagnosis": diagnosis,
            "actions": answer.actions or runbook_result.actions,
            "rationale": f"LLM {answer.model} re-ranked the evidence scoring ({runbook_result.rationale})",
        }
    )


def describe(answer: LLMDiagnoseResult) -> tuple[str, dict[str, object]]:
    """The timeline line for the LLM step: what it said or why its answer was not used, and what it cost."""
    cost: dict[str, object] = {
        "model": answer.model,
        "used": answer.used,
        "latency_ms": round(answer.latency_ms, 1),
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "attempts": answer.attempts,
        "notes": answer.notes,
    }
    if answer.used and answer.diagnosis is not None:
        text = f"{answer.model}: {answer.diagnosis.category.value} at {answer.diagnosis.confidence:.2f}"
    else:
        cost["fallback_reason"] = answer.fallback_reason
        text = f"LLM not used ({answer.fallback_reason}); the evidence scoring stands"
    return text, cost


async def summarize(workflow_id: str, report: str) -> LLMSummaryResult:
    """One paragraph for the top of the report; any trouble leaves the deterministic report as it is."""
    try:
        return await workflow.execute_activity_method(
            LLMActivities.summarize_incident,
            LLMSummaryRequest(workflow_id=workflow_id, report=report),
            start_to_close_timeout=_LLM_TIMEOUT,
            retry_policy=_LLM_RETRY,
        )
    except ActivityError as err:
        return LLMSummaryResult(used=False, fallback_reason=f"the LLM step failed: {failure_reason(err)}")
