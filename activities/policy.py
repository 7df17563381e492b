"""The safety policy, judged where the policy file was loaded (the worker) so every incident sees one version.

The verdict travels to the workflow as an activity result, so a replay sees exactly the decisions that were made,
even after the policy file changed.
"""

from __future__ import annotations

import structlog
from temporalio import activity

from models.remediation import PlanJudgement, PlanVerdict, PolicyRequest
from remediation.policy import Policy, decide, limits

log = structlog.get_logger(__name__)


class PolicyActivities:
    def __init__(self, policy: Policy, dry_run: bool) -> None:
        self._policy = policy
        self._dry_run = dry_run

    @activity.defn
    async def judge_plan(self, judgement: PlanJudgement) -> PlanVerdict:
        decisions = [
            decide(
                self._policy,
                PolicyRequest(
                    action=action, severity=judgement.severity, confidence=judgement.confidence, at=judgement.at
                ),
            )
            for action in judgement.actions
        ]
        verdict = PlanVerdict(
            decisions=decisions,
            limits=limits(self._policy),
            dry_run=self._dry_run,
            second_opinion=self._policy.second_opinion,
        )
        log.info(
            "policy",
            allowed=[d.allowed for d in decisions],
            approval=[d.requires_approval for d in decisions],
            dry_run=self._dry_run,
        )
        return verdict
