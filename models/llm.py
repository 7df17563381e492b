"""The optional LLM diagnosis step: what it is asked, what the model must answer, and what the step returns."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.evidence import Evidence
from models.incident import Action, ActionType, Category, Diagnosis, Hypothesis, Severity

EXPLANATION_CHARS = 2000
CITED_ITEMS = 12
CITED_CHARS = 300


class LLMDiagnoseRequest(BaseModel):
    workflow_id: str
    alertname: str
    severity: Severity
    namespace: str
    service: str
    title: str
    evidence: Evidence  # already bounded by the caller
    candidates: list[Hypothesis] = Field(default_factory=list)  # the runbook/scoring engine's ranking, best first
    allowed_actions: list[Action] = Field(default_factory=list)  # everything the model may choose from, aimed
    seen_before: list[str] = Field(default_factory=list)  # one line per similar past incident


class LLMActionChoice(BaseModel):
    """One of the allowed actions, its type, namespace and target copied exactly."""

    # Docstrings and descriptions here go to the model in the response schema: they are written for it.
    # extra="forbid" puts additionalProperties: false in the schema, which OpenAI's strict mode requires.
    model_config = ConfigDict(extra="forbid")

    type: ActionType
    namespace: str
    target: str


class LLMAnswer(BaseModel):
    """The diagnosis of the incident: one root-cause category, where it lies, and the actions that address it."""

    # The structured output the model must return; its JSON schema is the request's ``response_format``.
    # Every field is required and objects forbid extra keys, so the schema is valid for OpenAI's strict mode.
    # Lengths are bounded by trimming, not by schema keywords: strict mode rejects ``maxLength``, and a server
    # without constrained decoding would otherwise lose a whole answer to one long sentence.
    model_config = ConfigDict(extra="forbid")

    category: Category
    confidence: float = Field(ge=0.0, le=1.0, description="how likely this cause is, 0 to 1")
    root_cause_namespace: str = Field(description="namespace of the root-cause workload, as named in the data")
    root_cause_workload: str = Field(description="the root-cause workload (Deployment, pod or node) in the data")
    explanation: str = Field(description="a few sentences: why this cause, and why not the other candidates")
    evidence: list[str] = Field(description="short quotes of the facts in the data that support this cause")
    actions: list[LLMActionChoice] = Field(description="allowed actions that address the cause; escalate if none")

    @field_validator("explanation")
    @classmethod
    def _bounded_explanation(cls, value: str) -> str:
        return value.strip()[:EXPLANATION_CHARS]

    @field_validator("evidence")
    @classmethod
    def _bounded_evidence(cls, value: list[str]) -> list[str]:
        return [item.strip()[:CITED_CHARS] for item in value if item.strip()][:CITED_ITEMS]


class LLMDiagnoseResult(BaseModel):
    used: bool  # true only when a valid answer came back and was accepted
    fallback_reason: str | None = None  # why the runbook diagnosis stands, when ``used`` is false
    diagnosis: Diagnosis | None = None
    actions: list[Action] = Field(default_factory=list)  # copies of allowed actions, never built from model text
    notes: list[str] = Field(default_factory=list)  # corrections made to an accepted answer
    model: str = ""
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0


class LLMSummaryRequest(BaseModel):
    """The post-incident report (Markdown, the incident's own record) to be summed up in one paragraph."""

    workflow_id: str
    report: str


class LLMSummaryResult(BaseModel):
    used: bool
    summary: str | None = None
    fallback_reason: str | None = None
    model: str = ""
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
