"""The safety policy: the shipped ``policy.yaml``, the file's validation, and the pure ``decide`` rules.

Table tests over severity x risk x confidence, protected namespaces and nodes, each bound, change-freeze windows
(across midnight, across the weekend, in time zones with daylight saving), and a dozen-odd bad files whose errors
must name the key. One test runs ``decide`` inside a real workflow sandbox.
"""

from __future__ import annotations

import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import pytest
    import yaml
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from config.settings import PROJECT_ROOT, Settings
    from models.incident import Action, ActionType, Risk, Severity
    from models.remediation import Limits, PolicyDecision, PolicyRequest
    from remediation.policy import (
        ActionRule,
        ActionRules,
        Policy,
        PolicyError,
        active_freeze,
        decide,
        default_policy,
        effective_dry_run,
        limits,
        load_policy,
        parse_policy,
        policy_warnings,
    )

WEDNESDAY_NOON = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)
SEVERITIES = [severity.value for severity in Severity]
RISKS: list[Risk] = ["low", "medium", "high"]
# What the shipped file says (and the README documents): severity -> risks that may run without a person.
SHIPPED_AUTOMATIC = {"critical": set(), "high": {"low"}, "medium": {"low", "medium"}, "low": {"low", "medium"}}

OPEN = """
actions:
  rollback: {risk: low}
  rollout_restart: {risk: low}
  scale_up: {risk: low}
  raise_memory_limit: {risk: low}
  delete_pod: {risk: low}
  cordon_node: {risk: low}
nodes: {allowed: true}
approval:
  high: {low: automatic, medium: automatic, high: automatic}
  medium: {low: automatic, medium: automatic, high: automatic}
  low: {low: automatic, medium: automatic, high: automatic}
min_confidence_for_automatic: 0.5
"""


# ---------------------------------------------------------------------------------------------- helpers


def policy_of(text: str, **sections: Any) -> Policy:
    """A policy from YAML text, with whole top-level sections replaced by ``sections``."""
    raw = yaml.safe_load(textwrap.dedent(text)) or {}
    raw.update(sections)
    return parse_policy(raw, source="test.yaml")


def request(
    kind: str = "rollback",
    namespace: str = "shop",
    target: str = "web",
    params: dict[str, Any] | None = None,
    risk: Risk = "low",
    severity: str = "medium",
    confidence: float = 0.95,
    at: datetime = WEDNESDAY_NOON,
    current: dict[str, Any] | None = None,
) -> PolicyRequest:
    action = Action(
        type=ActionType(kind),
        namespace="" if kind == "cordon_node" else namespace,
        target=target,
        params=params or {},
        risk=risk,
    )
    return PolicyRequest(
        action=action, severity=Severity(severity), confidence=confidence, at=at, current=current or {}
    )


def with_freeze(windows: list[dict[str, Any]], mode: str = "approval", timezone: str = "UTC") -> Policy:
    return policy_of(OPEN, freeze={"mode": mode, "timezone": timezone, "windows": windows})


def reasons_text(decision: PolicyDecision) -> str:
    return "\n".join(decision.reasons)


# ---------------------------------------------------------------------------------------------- the shipped file


def test_shipped_policy_loads_and_is_the_default() -> None:
    shipped = load_policy(PROJECT_ROOT / "policy.yaml")
    assert default_policy() == shipped
    assert Settings.model_fields["policy_file"].default == PROJECT_ROOT / "policy.yaml"
    assert shipped.dry_run is True
    assert shipped.namespaces.protected == ["kube-system", "kube-public", "incident-agent"]
    assert limits(shipped) == Limits(per_workload_per_hour=2, global_per_hour=10)
    assert (shipped.limits.max_scale_factor, shipped.limits.max_memory_factor) == (2, 1.5)
    assert shipped.min_confidence_for_automatic == 0.8
    assert shipped.freeze.mode == "approval" and shipped.freeze.windows == []
    assert policy_warnings(shipped) == []
    for action_type in ActionType:
        if action_type.mutating:
            rule = shipped.actions.rule(action_type)
            assert rule is not None and rule.allowed, action_type


def test_shipped_approval_matrix_is_the_documented_one() -> None:
    shipped = default_policy()
    for severity in Severity:
        for risk in RISKS:
            expected = "automatic" if risk in SHIPPED_AUTOMATIC[severity.value] else "required"
            assert shipped.approval.of(severity, risk) == expected, (severity, risk)


def test_the_file_schema_names_every_mutating_action_type() -> None:
    assert set(ActionRules.model_fields) == {t.value for t in ActionType if t.mutating}


def test_a_policy_survives_the_trip_through_a_workflow_payload() -> None:
    policy = with_freeze(
        [
            {"name": "weekend", "weekly": "Fri 16:00 - Mon 08:00", "timezone": "Europe/Berlin"},
            {"start": "2025-12-22 00:00", "end": "2026-01-02 00:00"},
            {"start": "2025-12-22T00:00:00+01:00", "end": "2026-01-02T00:00:00+01:00"},
        ]
    )
    assert Policy.model_validate_json(policy.model_dump_json()) == policy
    assert Policy.model_validate_json(default_policy().model_dump_json()) == default_policy()


def test_an_omitted_key_is_the_safe_default() -> None:
    minimal = parse_policy({"version": 1})
    assert minimal.dry_run is True
    assert minimal.namespaces.protected == ["kube-system", "kube-public", "incident-agent"]
    assert minimal.nodes.allowed is False
    decision = decide(minimal, request("rollback"))
    assert not decision.allowed
    assert "no actions.rollback entry" in reasons_text(decision)


# ---------------------------------------------------------------------------------------------- approval


@pytest.mark.parametrize("confidence", [0.95, 0.5])
@pytest.mark.parametrize("risk", RISKS)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_approval_by_severity_risk_and_confidence(severity: str, risk: Risk, confidence: float) -> None:
    shipped = default_policy()
    policy = shipped.model_copy(update={"actions": ActionRules(rollback=ActionRule(risk=risk))})
    decision = decide(policy, request("rollback", severity=severity, confidence=confidence))
    automatic = risk in SHIPPED_AUTOMATIC[severity] and confidence >= shipped.min_confidence_for_automatic
    assert decision.allowed
    assert decision.risk == risk
    assert decision.requires_approval is not automatic
    assert decision.action.requires_approval is decision.requires_approval
    text = reasons_text(decision)
    if severity == "critical":
        assert "severity critical always needs a person's approval" in text
    elif risk not in SHIPPED_AUTOMATIC[severity]:
        assert f"approval.{severity}.{risk} is required" in text
    if confidence < shipped.min_confidence_for_automatic:
        assert "below min_confidence_for_automatic 0.80" in text
    if automatic:
        assert f"automatic: approval.{severity}.{risk} is automatic" in text


@pytest.mark.parametrize("risk", RISKS)
def test_critical_always_needs_approval_even_when_the_file_says_otherwise(risk: Risk) -> None:
    policy = policy_of(OPEN, approval={"critical": {"low": "automatic", "medium": "automatic", "high": "automatic"}})
    assert policy.approval.critical.low == "automatic"  # the file is accepted ...
    decision = decide(policy, request("rollback", risk=risk, severity="critical", confidence=1.0))
    assert decision.allowed and decision.requires_approval  # ... and overridden
    assert f"the policy's approval.critical.{risk}: automatic is overridden" in reasons_text(decision)
    assert f"approval.critical.{risk}: automatic is overridden" in "\n".join(policy_warnings(policy))


@pytest.mark.parametrize(
    ("confidence", "approval"),
    [(1.0, False), (0.5, False), (0.49, True), (0.0, True)],
)
def test_min_confidence_for_automatic_is_inclusive(confidence: float, approval: bool) -> None:
    decision = decide(policy_of(OPEN), request("rollback", confidence=confidence))
    assert decision.requires_approval is approval


@pytest.mark.parametrize(
    ("plan_risk", "policy_risk", "effective"),
    [("low", "low", "low"), ("high", "low", "high"), ("low", "medium", "medium"), ("medium", "high", "high")],
)
def test_risk_is_the_higher_of_the_plan_and_the_policy(plan_risk: Risk, policy_risk: Risk, effective: Risk) -> None:
    policy = default_policy().model_copy(update={"actions": ActionRules(delete_pod=ActionRule(risk=policy_risk))})
    decision = decide(policy, request("delete_pod", target="web-7d9f-abcde", risk=plan_risk, severity="medium"))
    assert decision.risk == effective == decision.action.risk
    assert decision.requires_approval is (effective == "high")
    if plan_risk != effective:
        assert f"the policy rates delete_pod {effective} risk" in reasons_text(decision)
    elif plan_risk != policy_risk:
        assert f"higher than the policy's {policy_risk}" in reasons_text(decision)


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("kind", ["escalate", "none"])
@pytest.mark.parametrize(
    "hostile",
    [
        {"severity": "critical"},
        {"confidence": 0.0},
        {"namespace": "kube-system"},
        {"at": datetime(2025, 6, 7, 12, tzinfo=UTC)},  # inside the refusing freeze below
    ],
)
def test_non_mutating_actions_are_always_allowed_without_approval(kind: str, hostile: dict[str, Any]) -> None:
    policy = with_freeze([{"weekly": "Sat 00:00 - Sun 24:00"}], mode="refuse")
    for candidate in (policy, parse_policy({"version": 1})):
        decision = decide(candidate, request(kind, **hostile))
        assert decision.allowed and not decision.requires_approval
        assert decision.risk == "low" and decision.action.requires_approval is False
        assert "always allowed" in reasons_text(decision)


@pytest.mark.parametrize(
    ("actions", "reason"),
    [
        ({"rollout_restart": {"risk": "low"}}, "no actions.rollback entry"),
        ({"rollback": {"allowed": False, "risk": "low"}}, "actions.rollback.allowed: false"),
    ],
)
def test_an_action_the_file_does_not_allow_is_refused(actions: dict[str, Any], reason: str) -> None:
    decision = decide(policy_of(OPEN, actions=actions), request("rollback"))
    assert not decision.allowed
    assert reason in reasons_text(decision)


@pytest.mark.parametrize(
    ("protected", "namespace", "allowed"),
    [
        (None, "kube-system", False),
        (None, "kube-public", False),
        (None, "incident-agent", False),
        (None, "kube-systems", True),
        (None, "shop", True),
        (["openshift-*", "payments"], "openshift-monitoring", False),
        (["openshift-*", "payments"], "payments", False),
        (["openshift-*", "payments"], "openshifty", True),
        (["openshift-*", "payments"], "kube-system", True),  # the operator's list replaces the default one
    ],
)
def test_protected_namespaces(protected: list[str] | None, namespace: str, allowed: bool) -> None:
    policy = policy_of(OPEN) if protected is None else policy_of(OPEN, namespaces={"protected": protected})
    for kind in ("rollback", "rollout_restart", "delete_pod", "scale_up", "raise_memory_limit"):
        decision = decide(policy, request(kind, namespace=namespace, current={"replicas": 2}))
        assert decision.allowed is allowed, (kind, decision.reasons)
        if not allowed:
            assert f"namespace {namespace} is protected" in reasons_text(decision)


@pytest.mark.parametrize(
    ("nodes", "cordon", "node", "reason"),
    [
        ({"allowed": True}, {"risk": "low"}, "worker-1", None),
        ({"allowed": False}, {"risk": "low"}, "worker-1", "nodes.allowed: false"),
        ({}, {"risk": "low"}, "worker-1", "nodes.allowed: false"),  # must be enabled explicitly
        ({"allowed": True}, None, "worker-1", "no actions.cordon_node entry"),
        ({"allowed": True}, {"allowed": False, "risk": "low"}, "worker-1", "actions.cordon_node.allowed: false"),
        ({"allowed": True, "protected": ["*control-plane*"]}, {"risk": "low"}, "cp-control-plane-1", "is protected"),
        ({"allowed": True, "protected": ["gpu-*"]}, {"risk": "low"}, "worker-1", None),
    ],
)
def test_cordon_node_is_judged_by_the_nodes_allowance(
    nodes: dict[str, Any], cordon: dict[str, Any] | None, node: str, reason: str | None
) -> None:
    actions = {"rollback": {"risk": "low"}} | ({"cordon_node": cordon} if cordon else {})
    policy = policy_of(OPEN, nodes=nodes, actions=actions)
    decision = decide(policy, request("cordon_node", target=node))
    assert decision.allowed is (reason is None), decision.reasons
    if reason:
        assert reason in reasons_text(decision)


def test_cordon_node_ignores_namespaces_and_the_shipped_policy_asks_a_person() -> None:
    policy = default_policy()
    cordon = Action(type=ActionType.cordon_node, namespace="kube-system", target="worker-1", risk="low")
    decision = decide(policy, PolicyRequest(action=cordon, severity=Severity.low, confidence=1.0, at=WEDNESDAY_NOON))
    assert decision.allowed and decision.requires_approval and decision.risk == "high"
    assert not decide(policy, request("cordon_node", target="ip-10-0-1-2.master")).allowed


@pytest.mark.parametrize(
    ("namespace", "target", "reason"), [("", "web", "names no namespace"), ("shop", "", "names no target")]
)
def test_an_action_that_names_no_namespace_or_target_is_refused(namespace: str, target: str, reason: str) -> None:
    decision = decide(policy_of(OPEN), request("rollout_restart", namespace=namespace, target=target))
    assert not decision.allowed and reason in reasons_text(decision)


# ---------------------------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    ("params", "current", "bounded", "reason"),
    [
        ({"factor": 1.5}, {"replicas": 4}, {"replicas": 6, "max_replicas": 20}, "from 4 to 6"),
        ({"factor": 3}, {"replicas": 4}, {"replicas": 8, "max_replicas": 20}, "x3 bounded to x2"),
        ({"factor": 2}, {"replicas": 15}, {"replicas": 20, "max_replicas": 20}, "limits.max_replicas: 20"),
        ({"replicas": 50}, {"replicas": 10}, {"replicas": 20, "max_replicas": 20}, "50 replicas bounded to 20"),
        ({"replicas": 9}, {"replicas": 4}, {"replicas": 8, "max_replicas": 20}, "at most x2 of 4"),
        ({"replicas": 12}, {"replicas": 10}, {"replicas": 12, "max_replicas": 20}, "from 10 to 12"),
        ({"factor": 2, "replicas": 5}, {"replicas": 4}, {"replicas": 5, "max_replicas": 20}, "from 4 to 5"),
        ({"factor": "1.5"}, {"replicas": 2}, {"replicas": 3, "max_replicas": 20}, "from 2 to 3"),
        ({}, {"replicas": 3}, {"replicas": 6, "max_replicas": 20}, "names no factor or replica count"),
        ({"factor": 2}, {}, {"factor": 2.0, "max_replicas": 20}, "current replica count unknown"),
        ({"factor": 5}, {}, {"factor": 2.0, "max_replicas": 20}, "x5 bounded to x2"),
        ({"factor": 2, "image": "evil:latest"}, {"replicas": 2}, {"replicas": 4, "max_replicas": 20}, "dropped"),
    ],
)
def test_scale_up_is_bounded(
    params: dict[str, Any], current: dict[str, Any], bounded: dict[str, Any], reason: str
) -> None:
    req = request("scale_up", params=params, current=current)
    decision = decide(policy_of(OPEN), req)
    assert decision.allowed, decision.reasons
    assert decision.action.params == bounded
    assert reason in reasons_text(decision)
    assert req.action.params == params  # the request is not changed


@pytest.mark.parametrize(
    ("params", "current", "reason"),
    [
        ({"replicas": 8}, {}, "needs the current count"),
        ({"factor": 0.5}, {"replicas": 4}, "does not scale up"),
        ({"factor": 1}, {"replicas": 4}, "does not scale up"),
        ({"factor": "lots"}, {"replicas": 4}, "is not a number"),
        ({"factor": True}, {"replicas": 4}, "is not a number"),
        ({"factor": float("nan")}, {"replicas": 4}, "is not a number"),
        ({"replicas": 2.5}, {"replicas": 2}, "is not a replica count"),
        ({"replicas": 3}, {"replicas": 4}, "is not more than the current 4"),
        ({"factor": 2}, {"replicas": 0}, "0 replicas"),
        ({"factor": 2}, {"replicas": 20}, "no room to scale up from 20"),
        ({"factor": 2}, {"replicas": 25}, "no room to scale up from 25"),
    ],
)
def test_scale_up_that_cannot_be_bounded_is_refused(
    params: dict[str, Any], current: dict[str, Any], reason: str
) -> None:
    decision = decide(policy_of(OPEN), request("scale_up", params=params, current=current))
    assert not decision.allowed
    assert reason in reasons_text(decision)


def test_scale_up_respects_a_lower_factor_from_the_file() -> None:
    policy = policy_of(OPEN, limits={"max_scale_factor": 1.5, "max_replicas": 100})
    assert decide(policy, request("scale_up", params={"factor": 2}, current={"replicas": 10})).action.params == {
        "replicas": 15,
        "max_replicas": 100,
    }
    refused = decide(policy, request("scale_up", params={"factor": 2}, current={"replicas": 1}))
    assert not refused.allowed and "no room" in reasons_text(refused)  # x1.5 of 1 is still 1


@pytest.mark.parametrize(
    ("params", "current", "factor", "reason"),
    [
        ({"factor": 1.2}, {}, 1.2, None),
        ({"factor": 2}, {}, 1.5, "x2 bounded to x1.5"),
        ({}, {}, 1.5, "names no factor"),
        ({"factor": 1.5, "memory": "64Gi"}, {}, 1.5, "cannot bound: memory"),
        ({"factor": 1.5}, {"memory_bytes": 512 * 2**20}, 1.5, "memory limit 512Mi -> 768Mi"),
    ],
)
def test_raise_memory_limit_is_bounded(
    params: dict[str, Any], current: dict[str, Any], factor: float, reason: str | None
) -> None:
    decision = decide(policy_of(OPEN), request("raise_memory_limit", params=params, current=current))
    assert decision.allowed
    assert decision.action.params == {"factor": factor}
    if reason:
        assert reason in reasons_text(decision)
    else:
        assert "bounded" not in reasons_text(decision)


@pytest.mark.parametrize("factor", [1.0, 0.8, "big"])
def test_raise_memory_limit_that_does_not_raise_is_refused(factor: Any) -> None:
    decision = decide(policy_of(OPEN), request("raise_memory_limit", params={"factor": factor}))
    assert not decision.allowed


def test_other_actions_keep_their_parameters() -> None:
    decision = decide(policy_of(OPEN), request("rollback", params={"revision": 3}))
    assert decision.allowed and decision.action.params == {"revision": 3}


# ---------------------------------------------------------------------------------------------- change freezes

WEEKEND_BERLIN = {"name": "weekend", "weekly": "Fri 16:00 - Mon 08:00", "timezone": "Europe/Berlin"}


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (datetime(2025, 6, 6, 13, 59, tzinfo=UTC), False),  # Fri 15:59 in Berlin (UTC+2 in summer)
        (datetime(2025, 6, 6, 14, 0, tzinfo=UTC), True),  # Fri 16:00
        (datetime(2025, 6, 7, 12, 0, tzinfo=UTC), True),  # Saturday
        (datetime(2025, 6, 8, 23, 30, tzinfo=UTC), True),  # Mon 01:30 in Berlin, still Sunday in UTC
        (datetime(2025, 6, 9, 5, 59, tzinfo=UTC), True),  # Mon 07:59
        (datetime(2025, 6, 9, 6, 0, tzinfo=UTC), False),  # Mon 08:00
        (datetime(2025, 6, 4, 12, 0, tzinfo=UTC), False),  # Wednesday
        (datetime(2025, 1, 10, 14, 30, tzinfo=UTC), False),  # Fri 15:30 in Berlin (UTC+1 in winter)
        (datetime(2025, 1, 10, 15, 0, tzinfo=UTC), True),  # Fri 16:00 in winter
        (datetime(2025, 6, 6, 14, 0), True),  # a naive time is UTC
        (datetime(2025, 6, 6, 16, 0, tzinfo=UTC) - timedelta(hours=2), True),
    ],
)
def test_weekly_freeze_across_the_weekend_in_a_time_zone(at: datetime, inside: bool) -> None:
    policy = with_freeze([WEEKEND_BERLIN])
    assert (active_freeze(policy, at) is not None) is inside


@pytest.mark.parametrize(
    ("window", "at", "inside"),
    [
        # every night 22:00 - 06:00 in New York (UTC-4 in June): across midnight
        ({"daily": "22:00 - 06:00"}, datetime(2025, 6, 4, 1, 59, tzinfo=UTC), False),
        ({"daily": "22:00 - 06:00"}, datetime(2025, 6, 4, 2, 0, tzinfo=UTC), True),
        ({"daily": "22:00 - 06:00"}, datetime(2025, 6, 4, 4, 30, tzinfo=UTC), True),
        ({"daily": "22:00 - 06:00"}, datetime(2025, 6, 4, 9, 59, tzinfo=UTC), True),
        ({"daily": "22:00 - 06:00"}, datetime(2025, 6, 4, 10, 0, tzinfo=UTC), False),
        ({"daily": "22:00 - 06:00"}, datetime(2025, 6, 4, 16, 0, tzinfo=UTC), False),
        # a window within one day
        ({"weekly": "Wed 09:00 - Wed 10:00"}, datetime(2025, 6, 4, 12, 59, tzinfo=UTC), False),
        ({"weekly": "Wed 09:00 - Wed 10:00"}, datetime(2025, 6, 4, 13, 0, tzinfo=UTC), True),
        ({"weekly": "Wed 09:00 - Wed 10:00"}, datetime(2025, 6, 4, 14, 0, tzinfo=UTC), False),
        # across midnight from Sunday into Monday (across the week's end)
        ({"weekly": "Sunday 22:00 - Monday 02:00"}, datetime(2025, 6, 9, 1, 59, tzinfo=UTC), False),  # Sun 21:59 NY
        ({"weekly": "Sunday 22:00 - Monday 02:00"}, datetime(2025, 6, 9, 2, 0, tzinfo=UTC), True),  # Sun 22:00 NY
        ({"weekly": "Sunday 22:00 - Monday 02:00"}, datetime(2025, 6, 9, 3, 0, tzinfo=UTC), True),  # Sun 23:00 NY
        ({"weekly": "Sunday 22:00 - Monday 02:00"}, datetime(2025, 6, 9, 5, 0, tzinfo=UTC), True),  # Mon 01:00 NY
        ({"weekly": "Sunday 22:00 - Monday 02:00"}, datetime(2025, 6, 9, 6, 0, tzinfo=UTC), False),  # Mon 02:00 NY
        ({"weekly": "Sunday 22:00 - Monday 02:00"}, datetime(2025, 6, 8, 3, 0, tzinfo=UTC), False),  # Sat 23:00 NY
        # a whole weekend, ending at the week's last minute
        ({"weekly": "sat 00:00 - sun 24:00"}, datetime(2025, 6, 9, 3, 59, tzinfo=UTC), True),  # Sun 23:59 NY
        ({"weekly": "sat 00:00 - sun 24:00"}, datetime(2025, 6, 9, 4, 0, tzinfo=UTC), False),  # Mon 00:00 NY
        # the window's own time zone beats freeze.timezone
        ({"daily": "22:00 - 06:00", "timezone": "UTC"}, datetime(2025, 6, 4, 23, 0, tzinfo=UTC), True),
        ({"daily": "22:00 - 06:00", "timezone": "UTC"}, datetime(2025, 6, 4, 2, 0, tzinfo=UTC), True),
        ({"daily": "22:00 - 06:00", "timezone": "UTC"}, datetime(2025, 6, 4, 6, 0, tzinfo=UTC), False),
    ],
)
def test_daily_and_weekly_freezes(window: dict[str, Any], at: datetime, inside: bool) -> None:
    policy = with_freeze([window], timezone="America/New_York")
    assert (active_freeze(policy, at) is not None) is inside


@pytest.mark.parametrize(
    ("window", "at", "inside"),
    [
        # wall-clock times in Tokyo (UTC+9); start inclusive, end exclusive
        ({"start": "2025-12-22 00:00", "end": "2026-01-02 00:00"}, datetime(2025, 12, 21, 14, 59, tzinfo=UTC), False),
        ({"start": "2025-12-22 00:00", "end": "2026-01-02 00:00"}, datetime(2025, 12, 21, 15, 0, tzinfo=UTC), True),
        ({"start": "2025-12-22 00:00", "end": "2026-01-02 00:00"}, datetime(2026, 1, 1, 14, 59, tzinfo=UTC), True),
        ({"start": "2025-12-22 00:00", "end": "2026-01-02 00:00"}, datetime(2026, 1, 1, 15, 0, tzinfo=UTC), False),
        # dates are midnight in the window's zone
        ({"start": "2025-12-22", "end": "2025-12-23"}, datetime(2025, 12, 22, 14, 0, tzinfo=UTC), True),
        ({"start": "2025-12-22", "end": "2025-12-23"}, datetime(2025, 12, 22, 15, 0, tzinfo=UTC), False),
        # explicit offsets win over the zone
        (
            {"start": "2025-12-22T00:00:00+00:00", "end": "2025-12-23T00:00:00+00:00"},
            datetime(2025, 12, 21, 23, 0, tzinfo=UTC),
            False,
        ),
        (
            {"start": "2025-12-22T00:00:00+00:00", "end": "2025-12-23T00:00:00+00:00"},
            datetime(2025, 12, 22, 23, 0, tzinfo=UTC),
            True,
        ),
    ],
)
def test_absolute_freezes(window: dict[str, Any], at: datetime, inside: bool) -> None:
    policy = with_freeze([window], timezone="Asia/Tokyo")
    assert (active_freeze(policy, at) is not None) is inside


def test_absolute_window_from_yaml_dates_and_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        textwrap.dedent(
            """
            freeze:
              windows:
                - {name: a, start: 2025-12-22, end: 2025-12-24}
                - {name: b, start: 2026-03-01 08:00:00, end: 2026-03-01 18:00:00}
            """
        )
    )
    policy = load_policy(path)
    assert active_freeze(policy, WEDNESDAY_NOON) is None
    window = active_freeze(policy, datetime(2025, 12, 23, 9, tzinfo=UTC))
    assert window is not None and window.name == "a"
    window = active_freeze(policy, datetime(2026, 3, 1, 12, tzinfo=UTC))
    assert window is not None and window.name == "b"


def test_a_freeze_asks_for_approval_by_default() -> None:
    policy = with_freeze([WEEKEND_BERLIN])
    saturday = datetime(2025, 6, 7, 12, 0, tzinfo=UTC)
    decision = decide(policy, request("rollback", at=saturday))
    assert decision.allowed and decision.requires_approval
    assert "change freeze 'weekend' (weekly Fri 16:00 - Mon 08:00 Europe/Berlin) is in effect" in reasons_text(decision)
    outside = decide(policy, request("rollback", at=WEDNESDAY_NOON))
    assert outside.allowed and not outside.requires_approval
    assert "no change freeze" in reasons_text(outside)


def test_a_freeze_in_refuse_mode_refuses_every_mutating_action() -> None:
    policy = with_freeze([WEEKEND_BERLIN], mode="refuse")
    saturday = datetime(2025, 6, 7, 12, 0, tzinfo=UTC)
    for kind in ("rollback", "rollout_restart", "delete_pod", "scale_up", "raise_memory_limit", "cordon_node"):
        decision = decide(policy, request(kind, at=saturday, current={"replicas": 2}))
        assert not decision.allowed
        assert "freeze.mode: refuse" in reasons_text(decision)
    assert decide(policy, request("rollback", at=WEDNESDAY_NOON)).allowed
    assert decide(policy, request("escalate", at=saturday)).allowed


# ---------------------------------------------------------------------------------------------- determinism


def test_decide_is_deterministic_and_leaves_its_inputs_alone() -> None:
    policy = with_freeze([WEEKEND_BERLIN])
    req = request("scale_up", params={"factor": 4, "foo": 1}, current={"replicas": 3}, risk="medium")
    before = req.model_copy(deep=True)
    first, second = decide(policy, req), decide(policy, req)
    assert first == second
    assert req == before
    assert first.action.params == {"replicas": 6, "max_replicas": 20}


def test_limits_are_exposed_for_the_governor() -> None:
    policy = policy_of(OPEN, limits={"per_workload_per_hour": 1, "global_per_hour": 0})
    assert limits(policy) == Limits(per_workload_per_hour=1, global_per_hour=0)


@pytest.mark.parametrize(
    ("file_value", "env_value", "expected"),
    [
        (True, None, True),
        (False, None, False),
        (False, "", False),
        (False, "  ", False),
        (True, "false", False),
        (True, "0", False),
        (True, "NO", False),
        (True, "off", False),
        (False, "true", True),
        (False, "1", True),
        (False, "Yes", True),
        (False, True, True),
        (True, False, False),
    ],
)
def test_dry_run_env_overrides_the_file(file_value: bool, env_value: str | bool | None, expected: bool) -> None:
    policy = parse_policy({"dry_run": file_value})
    assert effective_dry_run(policy, env_value) is expected


def test_a_bad_dry_run_env_value_is_an_error() -> None:
    with pytest.raises(PolicyError, match="DRY_RUN"):
        effective_dry_run(default_policy(), "maybe")


def test_warnings_for_a_half_enabled_cordon() -> None:
    half = policy_of(OPEN, nodes={"allowed": False})
    assert any("nodes.allowed is false" in w for w in policy_warnings(half))
    other = policy_of(OPEN, actions={"rollback": {"risk": "low"}})
    assert any("actions.cordon_node is not allowed" in w for w in policy_warnings(other))


# ---------------------------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("approval: [\n", "not valid YAML"),
        ("actions:\n  rollback: {risk: low}\n\tscale_up: {}\n", "not valid YAML"),
        ("", "the policy file is empty"),
        ("- rollback\n- scale_up\n", "expected a mapping"),
        ("dry_run: true\ndry_run: false\n", "duplicate key 'dry_run'"),
        ("dryrun: true\n", "dryrun: unknown key; expected one of: version, dry_run"),
        ("version: 2\n", "version:"),
        ("dry_run: perhaps\n", "dry_run: Input should be a valid boolean"),
        ("second_opinion: [yes]\n", "second_opinion:"),
        ("min_confidence_for_automatic: high\n", "min_confidence_for_automatic:"),
        ("min_confidence_for_automatic: 1.5\n", "min_confidence_for_automatic:"),
        ("actions:\n  restart_everything: {risk: low}\n", "actions.restart_everything: unknown key"),
        ("actions:\n  escalate: {risk: low}\n", "actions.escalate: unknown key"),
        ("actions:\n  rollback: {risk: extreme}\n", "actions.rollback.risk:"),
        ("actions:\n  rollback: {allowed: true}\n", "actions.rollback.risk: Field required"),
        ("actions:\n  rollback: {risk: low, approve: true}\n", "actions.rollback.approve: unknown key"),
        ("actions: [rollback]\n", "actions:"),
        ("approval:\n  critical: {low: maybe}\n", "approval.critical.low: Input should be 'required' or 'automatic'"),
        ("approval:\n  urgent: {low: required}\n", "approval.urgent: unknown key; expected one of: critical"),
        ("approval:\n  high: {lowest: required}\n", "approval.high.lowest: unknown key"),
        ("namespaces:\n  protected: kube-system\n", "namespaces.protected:"),
        ("namespaces:\n  protected: [kube-system, '']\n", "namespaces.protected: an empty name protects nothing"),
        ("namespaces:\n  allowed: [shop]\n", "namespaces.allowed: unknown key"),
        ("nodes:\n  allowed: sometimes\n", "nodes.allowed:"),
        ("freeze:\n  mode: panic\n", "freeze.mode:"),
        ("freeze:\n  timezone: Mars/Olympus\n", "freeze.timezone: unknown time zone 'Mars/Olympus'"),
        ("freeze:\n  windows:\n    - weekly: Fri 16:00 - Mon\n", "freeze.windows.0.weekly: expected a weekly window"),
        ("freeze:\n  windows:\n    - weekly: Fry 16:00 - Mon 08:00\n", "freeze.windows.0.weekly: unknown day 'Fry'"),
        ("freeze:\n  windows:\n    - weekly: Fri 16:00 - Fri 16:00\n", "freeze.windows.0.weekly: "),
        ("freeze:\n  windows:\n    - daily: 25:00 - 06:00\n", "freeze.windows.0.daily: 25:00 is not a time of day"),
        ("freeze:\n  windows:\n    - daily: 22:00\n", "freeze.windows.0.daily:"),
        (
            "freeze:\n  windows:\n    - {daily: 22:00 - 06:00}\n    - {daily: 01:00 - 02:00, timezone: Moon/Base}\n",
            "freeze.windows.1.timezone: unknown time zone",
        ),
        (
            "freeze:\n  windows:\n    - {weekly: Fri 16:00 - Mon 08:00, start: 2025-12-22}\n",
            "freeze.windows.0: give exactly one of weekly, daily or start and end",
        ),
        ("freeze:\n  windows:\n    - {name: nothing}\n", "freeze.windows.0: give exactly one"),
        ("freeze:\n  windows:\n    - {start: 2025-12-22}\n", "freeze.windows.0: an absolute window needs both"),
        (
            "freeze:\n  windows:\n    - {start: 2026-01-02, end: 2025-12-22}\n",
            "freeze.windows.0: end 2025-12-22T00:00:00 is not after start",
        ),
        ("freeze:\n  windows:\n    - {start: soon, end: 2025-12-22}\n", "freeze.windows.0.start:"),
        ("freeze:\n  windows:\n    - {daily: 22:00 - 06:00, every: day}\n", "freeze.windows.0.every: unknown key"),
        ("limits:\n  max_scale_factor: 0.5\n", "limits.max_scale_factor:"),
        ("limits:\n  max_memory_factor: .inf\n", "limits.max_memory_factor:"),
        ("limits:\n  max_replicas: 0\n", "limits.max_replicas:"),
        ("limits:\n  per_workload_per_hour: -1\n", "limits.per_workload_per_hour:"),
        ("limits:\n  global_per_hour: lots\n", "limits.global_per_hour:"),
        ("limits:\n  per_namespace_per_hour: 3\n", "limits.per_namespace_per_hour: unknown key"),
    ],
)
def test_a_bad_policy_file_names_the_file_and_the_key(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert where in message, message


def test_every_error_is_reported_with_its_key(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("dry_run: perhaps\napproval:\n  critical: {low: maybe}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert "dry_run:" in str(caught.value) and "approval.critical.low:" in str(caught.value)


def test_a_missing_policy_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(PolicyError, match=r"nowhere\.yaml: cannot read the policy file"):
        load_policy(missing)


# ---------------------------------------------------------------------------------------------- in a workflow


@workflow.defn(sandboxed=True)
class PolicyProbeWorkflow:
    """Runs ``decide`` in the workflow sandbox, as the IncidentWorkflow does."""

    @workflow.run
    async def run(self, policy: Policy, request: PolicyRequest) -> PolicyDecision:
        return decide(policy, request.model_copy(update={"at": workflow.now()}))


async def test_decide_runs_inside_the_workflow_sandbox(time_skipping_env: WorkflowEnvironment) -> None:
    env = time_skipping_env
    # A freeze that is always in effect exercises the time-zone code; approval mode keeps the action allowed.
    policy = with_freeze([{"name": "always", "daily": "00:00 - 24:00", "timezone": "Europe/Berlin"}])
    task_queue = f"policy-{uuid.uuid4().hex[:8]}"
    async with Worker(env.client, task_queue=task_queue, workflows=[PolicyProbeWorkflow]):
        decision = await env.client.execute_workflow(
            PolicyProbeWorkflow.run,
            args=[policy, request("scale_up", params={"factor": 3}, current={"replicas": 2})],
            id=f"policy-probe-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
    assert decision.allowed and decision.requires_approval
    assert decision.action.params == {"replicas": 4, "max_replicas": 20}
    assert "change freeze 'always'" in reasons_text(decision)
