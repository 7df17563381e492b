"""The agent's own metrics from activities, through the Temporal SDK's meter.

``activity.metric_meter()`` records into the worker's runtime, so with ``METRICS_PORT`` set these land on the same
``/metrics`` endpoint as the SDK's ``temporal_*`` metrics (with its ``namespace``, ``task_queue`` and
``activity_type`` labels added). Without a metrics runtime the meter is a no-op; outside an activity (a unit test
calling the method directly) nothing is recorded.

Every label value comes from a closed set (action types, modes, error types, error kinds), never from alert or
model text, so the number of series stays bounded.
"""

from __future__ import annotations

import re

from temporalio import activity
from temporalio.common import MetricMeter

from models.llm import LLMDiagnoseResult, LLMSummaryResult

REMEDIATION_ACTIONS = "incident_agent_remediation_actions_total"
LLM_DURATION = "incident_agent_llm_request_duration_seconds"
LLM_ERRORS = "incident_agent_llm_errors_total"
LLM_TOKENS = "incident_agent_llm_tokens_total"

# The exporter's default buckets (50 .. 10000) are meant for milliseconds; an LLM call takes seconds, up to the
# step's 150 s deadline. The worker passes these to its runtime (config.temporal.metrics_runtime).
HISTOGRAM_BUCKETS: dict[str, list[float]] = {LLM_DURATION: [0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 150]}

# The words each fallback reason of activities/llm.py starts with, and the kind it is counted as.
_LLM_ERROR_KINDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^timeout after"), "timeout"),
    (re.compile(r"^HTTP 429\b"), "rate_limited"),
    (re.compile(r"^HTTP 40[13]\b"), "auth"),
    (re.compile(r"^HTTP 5\d\d\b"), "server_error"),
    (re.compile(r"^HTTP \d+\b"), "http_error"),
    (re.compile(r"^connection failed"), "connection"),
    (re.compile(r"^unusable response"), "unusable_response"),
    (re.compile(r"^refused"), "refused"),
    (re.compile(r"^empty response"), "empty_response"),
    (re.compile(r"^invalid JSON"), "invalid_json"),
    (re.compile(r"^answer violates the schema"), "schema_violation"),
    (re.compile(r"^action .* is outside the allowed set"), "outside_allowed_set"),
)


def _meter() -> MetricMeter | None:
    return activity.metric_meter() if activity.in_activity() else None


def remediation_action(operation: str, action_type: str, result: str | None) -> None:
    """One attempt of ``execute_action``/``undo_action``: ``result`` is the mode (dry_run, applied,
    already_applied) or the ApplicationError's type (TargetNotFound, SourceForbidden ...). Each retried attempt
    counts: a run of TargetConflict is worth seeing."""
    meter = _meter()
    if meter is None:
        return
    meter.create_counter(REMEDIATION_ACTIONS, "Remediation executor attempts by operation, action type and result").add(
        1, {"operation": operation, "action_type": action_type, "result": result or "error"}
    )


def llm_error_kind(reason: str | None) -> str:
    """A bounded kind for a fallback reason of the LLM step (the reason itself carries model and server text)."""
    text = reason or ""
    return next((kind for pattern, kind in _LLM_ERROR_KINDS if pattern.search(text)), "other")


def llm_call(call: str, result: LLMDiagnoseResult | LLMSummaryResult) -> None:
    """One LLM step that reached the model (``call`` diagnose or summary): its latency, its tokens, and when its
    answer was not used, why, as a kind."""
    meter = _meter()
    if meter is None:
        return
    outcome = "accepted" if result.used else "fallback"
    meter.create_histogram_float(LLM_DURATION, "LLM step duration, retries included, by call and outcome", "s").record(
        result.latency_ms / 1000, {"call": call, "outcome": outcome}
    )
    if not result.used:
        meter.create_counter(LLM_ERRORS, "LLM steps whose answer was not used, by call and kind").add(
            1, {"call": call, "kind": llm_error_kind(result.fallback_reason)}
        )
    tokens = meter.create_counter(LLM_TOKENS, "Tokens the LLM reported, by call and type")
    for kind, count in (("prompt", result.prompt_tokens), ("completion", result.completion_tokens)):
        if count > 0:
            tokens.add(count, {"call": call, "type": kind})
