"""From a diagnosis to typed actions aimed at its root cause: the runbook's actions first, sensible defaults after.

A mutation is only ever aimed at the diagnosed root cause (a dependency, not its victim; the node, not its pods),
and one that cannot be aimed precisely becomes an escalation.
"""

from __future__ import annotations

from collections.abc import Iterable

from diagnosis.facts import Facts
from models.incident import Action, ActionType, Category, Diagnosis, Hypothesis, Workload
from triage.runbooks import Runbook, RunbookAction

# What an experienced on-call engineer does first for each cause when the runbook says nothing about it.
DEFAULT_ACTIONS: dict[Category, list[RunbookAction]] = {
    Category.bad_deploy: [
        RunbookAction(type=ActionType.rollback, addresses=[Category.bad_deploy], reason="Undo the rollout.")
    ],
    Category.oom_kill: [
        RunbookAction(
            type=ActionType.raise_memory_limit,
            addresses=[Category.oom_kill],
            params={"factor": 1.5},
            reason="Give the containers room while the memory growth is investigated.",
        )
    ],
    Category.cpu_saturation: [
        RunbookAction(
            type=ActionType.scale_up,
            addresses=[Category.cpu_saturation],
            params={"factor": 1.5},
            reason="Spread the CPU work over more replicas.",
        )
    ],
    Category.traffic_surge: [
        RunbookAction(
            type=ActionType.scale_up,
            addresses=[Category.traffic_surge],
            params={"factor": 2},
            reason="Add replicas for the extra demand.",
        )
    ],
    Category.connection_pool_exhaustion: [
        RunbookAction(
            type=ActionType.rollout_restart,
            addresses=[Category.connection_pool_exhaustion],
            reason="Restarting releases the connections the pool holds; find the leak or slow query afterwards.",
        )
    ],
    Category.dependency_failure: [
        RunbookAction(
            type=ActionType.rollout_restart,
            addresses=[Category.dependency_failure],
            reason="Restart the failing dependency whose pods stopped answering.",
        )
    ],
    Category.node_failure: [
        RunbookAction(
            type=ActionType.cordon_node,
            target="node",
            addresses=[Category.node_failure],
            reason="Stop scheduling onto the failing node.",
        )
    ],
    Category.noise: [
        RunbookAction(
            type=ActionType.none,
            target="none",
            risk="low",
            addresses=[Category.noise],
            reason="The condition already recovered; nothing to do.",
        )
    ],
}
ESCALATE = Action(type=ActionType.escalate, risk="low", requires_approval=False)


def actions_for(hypothesis: Hypothesis | Diagnosis, runbook: Runbook | None, facts: Facts) -> list[Action]:
    """The typed actions that address ``hypothesis``, aimed at its root cause; escalation when there are none."""
    if hypothesis.category is Category.unknown:
        return [ESCALATE.model_copy(update={"reason": "the agent abstains: a person must diagnose this"})]
    listed = [a for a in (runbook.actions if runbook else []) if hypothesis.category in a.addresses]
    candidates = listed or DEFAULT_ACTIONS.get(hypothesis.category, [])
    actions = _unique(_aim(candidate, hypothesis.root_cause, hypothesis.category, facts) for candidate in candidates)
    return actions or [ESCALATE.model_copy(update={"reason": f"no safe automatic fix for {hypothesis.category.value}"})]


def allowed_actions(diagnosis: Diagnosis, runbook: Runbook | None, facts: Facts) -> list[Action]:
    """Every action some shown hypothesis would take, plus escalate and none: what a second opinion may pick."""
    considered: list[Hypothesis | Diagnosis] = [diagnosis, *diagnosis.hypotheses]
    options = [action for h in considered for action in actions_for(h, runbook, facts)]
    options += [
        ESCALATE.model_copy(update={"reason": "hand the incident to a person"}),
        Action(type=ActionType.none, risk="low", requires_approval=False, reason="nothing to do"),
    ]
    return _unique(options)


def _aim(candidate: RunbookAction, root: Workload, category: Category, facts: Facts) -> Action:
    if not candidate.type.mutating:
        return Action(type=candidate.type, risk=candidate.risk, requires_approval=False, reason=candidate.reason)
    namespace, target = _target(candidate, root, category, facts)
    cluster_scoped = candidate.type is ActionType.cordon_node
    if not target or not (namespace or cluster_scoped):
        return ESCALATE.model_copy(
            update={"reason": f"{candidate.type.value} needs a target the evidence does not name precisely"}
        )
    return Action(
        type=candidate.type,
        namespace="" if cluster_scoped else namespace,
        target=target,
        params=dict(candidate.params),
        risk=candidate.risk,
        requires_approval=True,
        reason=candidate.reason,
    )


def _target(candidate: RunbookAction, root: Workload, category: Category, facts: Facts) -> tuple[str, str]:
    if candidate.target == "node":
        return "", root.workload if category is Category.node_failure else facts.node
    if candidate.target == "pod":
        pods = facts.pods(root.workload)
        if facts.pod and any(p.name == facts.pod for p in pods):
            return root.namespace, facts.pod
        worst = sorted(pods, key=lambda p: (p.ready, -p.restarts, p.name))
        return root.namespace, worst[0].name if worst else ""
    if candidate.target == "workload":
        return root.namespace, root.workload
    return "", ""


def _unique(actions: Iterable[Action]) -> list[Action]:
    seen: list[Action] = []
    for action in actions:
        if action not in seen:
            seen.append(action)
    return seen
