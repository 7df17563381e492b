"""Remediation: the policy's verdict on an action, the governor's ledger, and what the executor did.

Shared by the policy engine (pure), the GovernorWorkflow (durable ledger and kill switch), the Kubernetes executor
(activities) and the IncidentWorkflow that drives them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from models.incident import Action, ActionType, Severity

# ---- policy -------------------------------------------------------------------------------------------------


class PolicyRequest(BaseModel):
    """Everything the pure policy engine needs to judge one action of a plan."""

    action: Action
    severity: Severity
    confidence: float = Field(ge=0.0, le=1.0)
    at: datetime  # workflow time: change-freeze windows are judged against it
    # Current size of the target, when the action resizes it (replicas for scale_up, bytes for memory).
    current: dict[str, Any] = Field(default_factory=dict)


class PolicyDecision(BaseModel):
    allowed: bool
    requires_approval: bool
    risk: Literal["low", "medium", "high"]
    # The action as the policy allows it: parameters bounded (scale at most x2, memory at most x1.5 ...).
    action: Action
    reasons: list[str] = Field(default_factory=list)  # every rule that spoke, in words, for the state


class PlanJudgement(BaseModel):
    """A plan to be judged by the policy, with what the policy weighs it by."""

    actions: list[Action]
    severity: Severity
    confidence: float = Field(ge=0.0, le=1.0)
    at: datetime


class Limits(BaseModel):
    """Rate limits the governor enforces atomically across incidents (from the policy file)."""

    per_workload_per_hour: int = Field(default=2, ge=0)
    global_per_hour: int = Field(default=10, ge=0)


class PlanVerdict(BaseModel):
    decisions: list[PolicyDecision]  # one per action of the plan, in order
    limits: Limits
    dry_run: bool  # the policy file's default, overridden by DRY_RUN
    second_opinion: bool = False


# ---- governor -----------------------------------------------------------------------------------------------

GOVERNOR_WORKFLOW_ID = "incident-agent-governor"


class Reservation(BaseModel):
    """An incident asks the governor for the right to perform one mutating action."""

    action_id: str  # deterministic per incident, plan and action: a retried reservation is the same one
    workflow_id: str
    action: Action
    limits: Limits = Field(default_factory=Limits)


class ReservationResult(BaseModel):
    granted: bool
    reason: str = ""


class KillSwitchRequest(BaseModel):
    on: bool
    by: str = Field(min_length=1)
    reason: str = ""


class LedgerEntry(BaseModel):
    action_id: str
    workflow_id: str
    type: ActionType
    namespace: str
    target: str
    at: datetime
    outcome: Literal["reserved", "applied", "dry_run", "failed", "undone", "released"] = "reserved"


class GovernorState(BaseModel):
    killswitch: bool = False
    killswitch_by: str | None = None
    killswitch_reason: str = ""
    killswitch_at: datetime | None = None
    ledger: list[LedgerEntry] = Field(default_factory=list)  # the last hour or more, oldest first
    granted: int = 0
    refused: int = 0


ReportOutcome = Literal["applied", "dry_run", "failed", "undone", "released"]


class ActionReport(BaseModel):
    """An incident tells the governor how a reserved action ended."""

    action_id: str
    outcome: ReportOutcome


# ---- executor -----------------------------------------------------------------------------------------------

ACTION_ID_ANNOTATION = "incident-agent/action-id"


class ExecuteRequest(BaseModel):
    workflow_id: str
    action_id: str  # written as the ACTION_ID_ANNOTATION on the target by a real apply
    action: Action
    dry_run: bool  # True: only the server-side dry run (dryRun=All); nothing changes


class ExecuteResult(BaseModel):
    action_id: str
    mode: Literal["dry_run", "applied", "already_applied"]
    detail: str  # what changed, or would change, in words
    # What the target was before, enough to undo the agent's own change (replicas, pod template, limits ...).
    before: dict[str, Any] = Field(default_factory=dict)
    after: dict[str, Any] = Field(default_factory=dict)


class UndoRequest(BaseModel):
    workflow_id: str
    action_id: str  # the action being undone; the undo writes f"{action_id}/undo" as its own annotation
    action: Action
    before: dict[str, Any]
    dry_run: bool
