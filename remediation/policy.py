"""The safety policy: what the agent may change, where, by how much, and when a person must agree first.

The policy is data (``policy.yaml``, or the file ``POLICY_FILE`` names), validated once at start by
``load_policy``; an invalid file fails the start with a message naming the file and the bad key. Everything else
here is pure and deterministic, so the IncidentWorkflow calls ``decide`` directly: time comes from the request
(``request.at``, the workflow's clock), never from the wall clock.

Rules ``decide`` applies to one action, in order:

1. ``escalate`` and ``none`` change nothing: always allowed, never need approval.
2. Refusals: the action type is not allowed by ``actions``; the namespace is protected (``namespaces.protected``,
   exact names or glob patterns); ``cordon_node`` (cluster-scoped, so no namespace protects it) needs
   ``nodes.allowed: true`` and a node not matching ``nodes.protected``; a change freeze with ``freeze.mode: refuse``;
   parameters the limits leave no room for.
3. Bounds: ``scale_up`` at most ``limits.max_scale_factor`` times the current replicas and at most
   ``limits.max_replicas``; ``raise_memory_limit`` at most ``limits.max_memory_factor``. The returned action
   carries the bounded parameters; parameters the policy cannot bound are dropped. ``scale_up`` comes back as
   ``{"replicas": n, "max_replicas": m}`` when ``request.current["replicas"]`` is known (an absolute count a
   person can approve), else as ``{"factor": f, "max_replicas": m}`` for the executor to apply to the live count;
   ``raise_memory_limit`` as ``{"factor": f}`` (``request.current["memory_bytes"]``, when known, is only reported).
4. Risk: the higher of the policy's rating for the action type and the plan's own.
5. Approval: ``approval.<severity>.<risk>``; severity ``critical`` always (whatever the file says); confidence below
   ``min_confidence_for_automatic``; a change freeze with ``freeze.mode: approval`` (the default).

Every rule that spoke adds a sentence to ``reasons``. Rate limits are not judged here: ``limits(policy)`` hands them
to the GovernorWorkflow, which enforces them atomically across incidents.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Mapping
from datetime import UTC, date, datetime
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.incident import Action, ActionType, Risk, Severity
from models.remediation import Limits, PolicyDecision, PolicyRequest

DEFAULT_PROTECTED_NAMESPACES = ("kube-system", "kube-public", "incident-agent")
POLICY_FILE_NAME = "policy.yaml"

Approval = Literal["required", "automatic"]
FreezeMode = Literal["approval", "refuse"]

_RISK_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKLY = re.compile(r"^\s*([A-Za-z]+)\s+(\d{1,2}):(\d{2})\s*-\s*([A-Za-z]+)\s+(\d{1,2}):(\d{2})\s*$")
_DAILY = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_WEEK_MINUTES = 7 * 24 * 60
_DAY_MINUTES = 24 * 60


class PolicyError(ValueError):
    """The policy file is unreadable or invalid; the message names the file and the bad key."""


# ---- the file's schema --------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActionRule(_Strict):
    allowed: bool = True
    risk: Risk


class ActionRules(_Strict):
    """One entry per mutating action type; an action type without an entry is refused."""

    rollback: ActionRule | None = None
    rollout_restart: ActionRule | None = None
    scale_up: ActionRule | None = None
    raise_memory_limit: ActionRule | None = None
    delete_pod: ActionRule | None = None
    cordon_node: ActionRule | None = None

    def rule(self, action_type: ActionType) -> ActionRule | None:
        rule = getattr(self, action_type.value, None) if action_type.mutating else None
        return rule if isinstance(rule, ActionRule) else None


def _patterns(value: list[str]) -> list[str]:
    for item in value:
        if not item.strip():
            raise ValueError("an empty name protects nothing")
    return [item.strip() for item in value]


class NamespaceRules(_Strict):
    # Exact names or glob patterns (``openshift-*``) of namespaces the agent never changes anything in.
    protected: list[str] = Field(default_factory=lambda: list(DEFAULT_PROTECTED_NAMESPACES))

    _names = field_validator("protected")(_patterns)


class NodeRules(_Strict):
    # Nodes are cluster-scoped: no namespace protects them, so acting on a node at all must be enabled here.
    allowed: bool = False
    protected: list[str] = Field(default_factory=list)  # node names or glob patterns never cordoned

    _names = field_validator("protected")(_patterns)


class ApprovalRow(_Strict):
    """For one severity: whether an action of each risk needs a person's approval."""

    low: Approval = "required"
    medium: Approval = "required"
    high: Approval = "required"


class ApprovalRules(_Strict):
    # ``critical`` always needs approval, whatever is written here (decide enforces it and says so).
    critical: ApprovalRow = Field(default_factory=ApprovalRow)
    high: ApprovalRow = Field(default_factory=ApprovalRow)
    medium: ApprovalRow = Field(default_factory=ApprovalRow)
    low: ApprovalRow = Field(default_factory=ApprovalRow)

    def of(self, severity: Severity, risk: Risk) -> Approval:
        row: ApprovalRow = getattr(self, severity.value)
        value: Approval = getattr(row, risk)
        return value


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as UTC or Europe/Berlin)") from exc


def _check_zone(value: str | None) -> str | None:
    if value is not None:
        _zone(value)
    return value


class FreezeWindow(_Strict):
    """A change freeze: a weekly window, a daily window, or an absolute range (``start`` inclusive, ``end`` not)."""

    name: str = ""
    weekly: str | None = None  # "Fri 16:00 - Mon 08:00": from Friday 16:00 to the next Monday 08:00
    daily: str | None = None  # "22:00 - 06:00": every night, across midnight
    start: datetime | None = None  # without an offset: wall-clock time in the window's time zone
    end: datetime | None = None
    timezone: str | None = None  # IANA name; default: freeze.timezone

    @field_validator("weekly")
    @classmethod
    def _weekly(cls, value: str | None) -> str | None:
        if value is not None:
            parse_weekly(value)
        return value

    @field_validator("daily")
    @classmethod
    def _daily(cls, value: str | None) -> str | None:
        if value is not None:
            parse_daily(value)
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date_is_midnight(cls, value: object) -> object:
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime(value.year, value.month, value.day)
        return value

    _timezone = field_validator("timezone")(_check_zone)

    @model_validator(mode="after")
    def _one_kind(self) -> FreezeWindow:
        kinds = [kind for kind, given in (("weekly", self.weekly), ("daily", self.daily)) if given is not None]
        if self.start is not None or self.end is not None:
            kinds.append("start/end")
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of weekly, daily or start and end (got {', '.join(kinds) or 'none'})")
        if kinds == ["start/end"]:
            if self.start is None or self.end is None:
                raise ValueError("an absolute window needs both start and end")
            if (self.start.tzinfo is None) != (self.end.tzinfo is None):
                raise ValueError("start and end must both carry a UTC offset, or neither")
            if self.end <= self.start:
                raise ValueError(f"end {self.end.isoformat()} is not after start {self.start.isoformat()}")
        return self

    def describe(self, default_timezone: str) -> str:
        zone = self.timezone or default_timezone
        if self.weekly is not None:
            what = f"weekly {self.weekly.strip()} {zone}"
        elif self.daily is not None:
            what = f"daily {self.daily.strip()} {zone}"
        else:
            assert self.start is not None and self.end is not None
            suffix = "" if self.start.tzinfo else f" {zone}"
            what = f"{self.start.isoformat()} to {self.end.isoformat()}{suffix}"
        return f"{self.name!r} ({what})" if self.name else f"({what})"


class FreezeRules(_Strict):
    # During a freeze every mutating action needs a person's approval ("approval") or is refused ("refuse").
    mode: FreezeMode = "approval"
    timezone: str = "UTC"
    windows: list[FreezeWindow] = Field(default_factory=list)

    _timezone = field_validator("timezone")(_check_zone)


class LimitRules(_Strict):
    max_scale_factor: float = Field(default=2.0, gt=1.0, allow_inf_nan=False)
    max_replicas: int = Field(default=20, ge=1)
    max_memory_factor: float = Field(default=1.5, gt=1.0, allow_inf_nan=False)
    # Enforced by the GovernorWorkflow across incidents (exposed through ``limits``).
    per_workload_per_hour: int = Field(default=2, ge=0)
    global_per_hour: int = Field(default=10, ge=0)


class Policy(_Strict):
    """The whole policy file. A key left out takes the safe default (nothing allowed, approval required)."""

    version: Literal[1] = 1
    dry_run: bool = True
    second_opinion: bool = True
    min_confidence_for_automatic: float = Field(default=0.8, ge=0.0, le=1.0)
    actions: ActionRules = Field(default_factory=ActionRules)
    namespaces: NamespaceRules = Field(default_factory=NamespaceRules)
    nodes: NodeRules = Field(default_factory=NodeRules)
    approval: ApprovalRules = Field(default_factory=ApprovalRules)
    freeze: FreezeRules = Field(default_factory=FreezeRules)
    limits: LimitRules = Field(default_factory=LimitRules)


# ---- loading (the only I/O) ---------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (the later one would silently win in a safety file)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: the SafeLoader reports it below
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file. Raises ``PolicyError`` naming the file and the bad key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc}") from exc
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
    return parse_policy(raw, source=str(path))


def parse_policy(raw: object, source: str = POLICY_FILE_NAME) -> Policy:
    """Validate an already parsed policy document; ``source`` names it in errors."""
    if raw is None:
        raise PolicyError(f"{source}: the policy file is empty")
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: expected a mapping of policy keys at the top level, got {type(raw).__name__}")
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(f"{source}: {_describe(exc)}") from exc


def default_policy() -> Policy:
    """The built-in policy: ``policy.yaml`` at the project root (what ``POLICY_FILE`` defaults to)."""
    from config.settings import PROJECT_ROOT  # here, not at import: workflow code imports this module

    return load_policy(PROJECT_ROOT / POLICY_FILE_NAME)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{exc.problem or exc.context or 'syntax error'}{where}"
    return str(exc)


def _describe(error: ValidationError) -> str:
    described = []
    for item in error.errors():
        loc = tuple(item["loc"])
        where = ".".join(str(part) for part in loc) or "(top level)"
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
            expected = _expected_keys(loc)
            if expected:
                message += f"; expected one of: {', '.join(expected)}"
            if loc[:1] == ("actions",) and loc[-1] in (ActionType.escalate.value, ActionType.none.value):
                message += f" ({loc[-1]} changes nothing and is always allowed: it takes no entry)"
        described.append(f"{where}: {message}")
    return "; ".join(described)


def _expected_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the schema accepts at the mapping holding ``loc[-1]``."""
    current: Any = Policy
    for part in loc[:-1]:
        current = _without_none(current)
        if isinstance(part, int):
            args = get_args(current)
            current = args[0] if get_origin(current) is list and args else None
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            return []
    current = _without_none(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def policy_warnings(policy: Policy) -> list[str]:
    """Things in a valid policy that do not do what they seem to; worth a log line at start."""
    warnings = [
        f"approval.critical.{risk}: automatic is overridden: severity critical always needs a person's approval"
        for risk in ("low", "medium", "high")
        if getattr(policy.approval.critical, risk) == "automatic"
    ]
    cordon = policy.actions.rule(ActionType.cordon_node)
    if cordon is not None and cordon.allowed and not policy.nodes.allowed:
        warnings.append("actions.cordon_node is allowed but nodes.allowed is false: cordon_node is refused")
    if policy.nodes.allowed and (cordon is None or not cordon.allowed):
        warnings.append("nodes.allowed is true but actions.cordon_node is not allowed: cordon_node is refused")
    return warnings


# ---- the rest is pure ---------------------------------------------------------------------------------------


def limits(policy: Policy) -> Limits:
    """The rate limits the GovernorWorkflow enforces atomically across incidents."""
    return Limits(
        per_workload_per_hour=policy.limits.per_workload_per_hour,
        global_per_hour=policy.limits.global_per_hour,
    )


_TRUE = frozenset({"1", "true", "yes", "on", "y"})
_FALSE = frozenset({"0", "false", "no", "off", "n"})


def effective_dry_run(policy: Policy, override: str | bool | None) -> bool:
    """The dry-run mode in force: ``DRY_RUN`` when it is set (pass its raw value), else the file's ``dry_run``."""
    if isinstance(override, bool):
        return override
    if override is None or not override.strip():
        return policy.dry_run
    value = override.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise PolicyError(f"DRY_RUN: expected true or false, got {override!r}")


def decide(policy: Policy, request: PolicyRequest) -> PolicyDecision:
    """Judge one action of a plan. Pure and deterministic: the same policy and request give the same decision."""
    action = request.action
    if not action.type.mutating:
        return PolicyDecision(
            allowed=True,
            requires_approval=False,
            risk="low",
            action=action.model_copy(update={"risk": "low", "requires_approval": False}),
            reasons=[f"{action.type.value} changes nothing in the cluster: always allowed, no approval needed"],
        )

    rule = policy.actions.rule(action.type)
    policy_risk: Risk = rule.risk if rule is not None else "high"
    risk: Risk = action.risk if _RISK_ORDER[action.risk] > _RISK_ORDER[policy_risk] else policy_risk
    window = active_freeze(policy, request.at)

    refusals = _refusals(policy, action, rule)
    if window is not None and policy.freeze.mode == "refuse":
        refusals.append(
            f"change freeze {window.describe(policy.freeze.timezone)} is in effect: "
            "mutating actions are refused (freeze.mode: refuse)"
        )
    params, bounded, impossible = _bound(policy.limits, action, request.current)
    refusals += impossible
    if refusals:
        return PolicyDecision(
            allowed=False,
            requires_approval=True,
            risk=risk,
            action=action.model_copy(update={"risk": risk, "requires_approval": True}),
            reasons=refusals,
        )

    kind = action.type.value
    if risk == policy_risk:
        reasons = [f"the policy rates {kind} {risk} risk"]
    else:
        reasons = [f"risk {risk}: the plan rates this {kind} higher than the policy's {policy_risk}"]
    reasons += bounded

    approvals: list[str] = []
    severity = request.severity
    matrix = policy.approval.of(severity, risk)
    if severity is Severity.critical:
        overridden = (
            f" (the policy's approval.critical.{risk}: automatic is overridden)" if matrix == "automatic" else ""
        )
        approvals.append(f"severity critical always needs a person's approval{overridden}")
    elif matrix == "required":
        approvals.append(f"approval.{severity.value}.{risk} is required: a {risk}-risk action at {severity.value}")
    threshold = policy.min_confidence_for_automatic
    if request.confidence < threshold:
        approvals.append(f"confidence {request.confidence:.2f} is below min_confidence_for_automatic {threshold:.2f}")
    if window is not None:
        approvals.append(f"change freeze {window.describe(policy.freeze.timezone)} is in effect")

    if approvals:
        reasons += [f"approval required: {why}" for why in approvals]
    else:
        reasons.append(
            f"automatic: approval.{severity.value}.{risk} is automatic, confidence {request.confidence:.2f} "
            f">= {threshold:.2f}, no change freeze"
        )
    requires_approval = bool(approvals)
    return PolicyDecision(
        allowed=True,
        requires_approval=requires_approval,
        risk=risk,
        action=action.model_copy(update={"params": params, "risk": risk, "requires_approval": requires_approval}),
        reasons=reasons,
    )


def _refusals(policy: Policy, action: Action, rule: ActionRule | None) -> list[str]:
    kind = action.type.value
    refusals: list[str] = []
    if rule is None:
        refusals.append(f"{kind} is not allowed: the policy has no actions.{kind} entry")
    elif not rule.allowed:
        refusals.append(f"{kind} is not allowed (actions.{kind}.allowed: false)")
    if not action.target.strip():
        refusals.append(f"{kind} names no target")
    if action.type is ActionType.cordon_node:
        if not policy.nodes.allowed:
            refusals.append("acting on nodes is not allowed (nodes.allowed: false)")
        pattern = _first_match(action.target, policy.nodes.protected)
        if pattern is not None:
            refusals.append(f"node {action.target} is protected (nodes.protected: {pattern})")
        return refusals
    if not action.namespace.strip():
        refusals.append(f"{kind} names no namespace")
    else:
        pattern = _first_match(action.namespace, policy.namespaces.protected)
        if pattern is not None:
            refusals.append(f"namespace {action.namespace} is protected (namespaces.protected: {pattern})")
    return refusals


def _first_match(name: str, patterns: list[str]) -> str | None:
    return next((pattern for pattern in patterns if name == pattern or fnmatchcase(name, pattern)), None)


# ---- bounds -------------------------------------------------------------------------------------------------

# (the bounded params, what was bounded, why the parameters cannot be allowed)
_Bounded = tuple[dict[str, Any], list[str], list[str]]


def _bound(caps: LimitRules, action: Action, current: Mapping[str, Any]) -> _Bounded:
    if action.type is ActionType.scale_up:
        return _bound_scale(caps, action.params, current)
    if action.type is ActionType.raise_memory_limit:
        return _bound_memory(caps, action.params, current)
    return dict(action.params), [], []


def _bound_scale(caps: LimitRules, params: Mapping[str, Any], current: Mapping[str, Any]) -> _Bounded:
    notes = _dropped(params, {"factor", "replicas"})
    most, ceiling = caps.max_scale_factor, caps.max_replicas
    factor: float | None = None
    if "factor" in params:
        factor = _number(params["factor"])
        if factor is None:
            return {}, notes, [f"scale_up factor {params['factor']!r} is not a number"]
        if factor <= 1:
            return {}, notes, [f"scale_up factor {_num(factor)} does not scale up (it must be above 1)"]
        if factor > most:
            notes.append(f"scale_up factor x{_num(factor)} bounded to x{_num(most)} (limits.max_scale_factor)")
            factor = most
    requested: int | None = None
    if "replicas" in params:
        requested = _count(params["replicas"])
        if requested is None:
            return {}, notes, [f"scale_up replicas {params['replicas']!r} is not a replica count"]
    if factor is None and requested is None:
        factor = most
        notes.append(f"scale_up names no factor or replica count: x{_num(most)}, the policy's maximum")

    now = _count(current.get("replicas"))
    if now is None:
        if requested is not None:
            return {}, notes, ["scale_up to an absolute replica count needs the current count to bound it"]
        notes.append(
            f"current replica count unknown: x{_num(factor or most)} applies to the live count, "
            f"at most {ceiling} replicas"
        )
        return {"factor": factor, "max_replicas": ceiling}, notes, []
    if now == 0:
        return {}, notes, ["the workload has 0 replicas: scaling up from zero is left to a person"]
    cap = min(math.floor(now * most), ceiling)
    if cap <= now:
        why = f"the limits leave no room to scale up from {now} replicas (x{_num(most)}, max_replicas {ceiling})"
        return {}, notes, [why]
    wanted = [value for value in (requested, math.ceil(now * factor) if factor else None) if value is not None]
    target = min(wanted)
    if target <= now:
        return {}, notes, [f"scale_up to {target} replicas is not more than the current {now}"]
    if target > cap:
        causes = []
        if target > math.floor(now * most):
            causes.append(f"at most x{_num(most)} of {now}: limits.max_scale_factor")
        if target > ceiling:
            causes.append(f"limits.max_replicas: {ceiling}")
        notes.append(f"scale_up to {target} replicas bounded to {cap} ({'; '.join(causes)})")
        target = cap
    notes.append(f"scale_up from {now} to {target} replicas")
    return {"replicas": target, "max_replicas": ceiling}, notes, []


def _bound_memory(caps: LimitRules, params: Mapping[str, Any], current: Mapping[str, Any]) -> _Bounded:
    notes = _dropped(params, {"factor"})
    most = caps.max_memory_factor
    if "factor" in params:
        factor = _number(params["factor"])
        if factor is None:
            return {}, notes, [f"raise_memory_limit factor {params['factor']!r} is not a number"]
        if factor <= 1:
            return {}, notes, [f"raise_memory_limit factor {_num(factor)} does not raise (it must be above 1)"]
        if factor > most:
            notes.append(
                f"raise_memory_limit factor x{_num(factor)} bounded to x{_num(most)} (limits.max_memory_factor)"
            )
            factor = most
    else:
        factor = most
        notes.append(f"raise_memory_limit names no factor: x{_num(most)}, the policy's maximum")
    now = _count(current.get("memory_bytes"))
    if now:
        notes.append(f"memory limit {_mib(now)} -> {_mib(math.floor(now * factor))}")
    return {"factor": factor}, notes, []


def _dropped(params: Mapping[str, Any], known: set[str]) -> list[str]:
    unknown = sorted(set(params) - known)
    return [f"dropped parameter(s) the policy cannot bound: {', '.join(unknown)}"] if unknown else []


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _count(value: object) -> int | None:
    number = _number(value)
    if number is None or number < 0 or not number.is_integer():
        return None
    return int(number)


def _num(value: float) -> str:
    return f"{value:g}"


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f}Mi"


# ---- change freezes -----------------------------------------------------------------------------------------


def active_freeze(policy: Policy, at: datetime) -> FreezeWindow | None:
    """The first change-freeze window in effect at ``at`` (a naive ``at`` is UTC), or None."""
    moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    for window in policy.freeze.windows:
        if window_contains(window, moment, policy.freeze.timezone):
            return window
    return None


def window_contains(window: FreezeWindow, at: datetime, default_timezone: str = "UTC") -> bool:
    zone = _zone(window.timezone or default_timezone)
    moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    if window.start is not None and window.end is not None:
        start = window.start if window.start.tzinfo else window.start.replace(tzinfo=zone)
        end = window.end if window.end.tzinfo else window.end.replace(tzinfo=zone)
        return start <= moment < end
    local = moment.astimezone(zone)
    seconds_of_day = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    if window.weekly is not None:
        start_minute, end_minute = parse_weekly(window.weekly)
        now, period = local.weekday() * 86400 + seconds_of_day, _WEEK_MINUTES * 60
    elif window.daily is not None:
        start_minute, end_minute = parse_daily(window.daily)
        now, period = seconds_of_day, _DAY_MINUTES * 60
    else:
        return False
    start_s, end_s = start_minute * 60, (end_minute * 60) % period
    if start_s < end_s:
        return start_s <= now < end_s
    return now >= start_s or now < end_s  # the window wraps: across midnight, or across the week's end


@lru_cache(maxsize=256)
def parse_weekly(text: str) -> tuple[int, int]:
    """``"Fri 16:00 - Mon 08:00"`` -> (start, end) in minutes from Monday 00:00. Raises ValueError."""
    match = _WEEKLY.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"expected a weekly window like 'Fri 16:00 - Mon 08:00', got {text!r}")
    start_day, start_hour, start_min, end_day, end_hour, end_min = match.groups()
    start = _day(start_day) * _DAY_MINUTES + _clock(start_hour, start_min, end=False)
    end = _day(end_day) * _DAY_MINUTES + _clock(end_hour, end_min, end=True)
    if start == end:
        raise ValueError(f"weekly window {text!r} starts when it ends")
    return start, end


@lru_cache(maxsize=256)
def parse_daily(text: str) -> tuple[int, int]:
    """``"22:00 - 06:00"`` -> (start, end) in minutes from midnight. Raises ValueError."""
    match = _DAILY.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"expected a daily window like '22:00 - 06:00', got {text!r}")
    start_hour, start_min, end_hour, end_min = match.groups()
    start = _clock(start_hour, start_min, end=False)
    end = _clock(end_hour, end_min, end=True)
    if start == end:
        raise ValueError(f"daily window {text!r} starts when it ends")
    return start, end


def _day(name: str) -> int:
    lowered = name.lower()
    for index, day in enumerate(_DAYS):
        if lowered in (day, day[:3]):
            return index
    raise ValueError(f"unknown day {name!r} (use Mon, Tue, Wed, Thu, Fri, Sat, Sun)")


def _clock(hour: str, minute: str, *, end: bool) -> int:
    h, m = int(hour), int(minute)
    if end and (h, m) == (24, 0):
        return _DAY_MINUTES
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise ValueError(f"{hour}:{minute} is not a time of day (00:00 to 23:59)")
    return h * 60 + m
