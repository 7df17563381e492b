"""Runbooks are data: YAML files under ``runbooks/``, validated when a process starts.

A runbook says which alerts it covers, which root causes it can support (with a prior confidence until the
evidence scoring of a later stage refines it), and which typed actions address each cause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.incident import ActionType, Category, Risk


class RunbookError(ValueError):
    """A runbook file is unreadable or invalid; the message names the file and the key."""


class RunbookMatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alertnames: list[str] = Field(min_length=1)
    # Extra label equalities an alert must carry (e.g. a team's own variant of a common alertname).
    labels: dict[str, str] = Field(default_factory=dict)


class RunbookHypothesis(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: Category
    prior: float = Field(ge=0.0, le=1.0)
    summary: str


class RunbookAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ActionType
    # Which object of the alert the action is aimed at; resolved from the alert's labels.
    target: Literal["workload", "pod", "node", "none"] = "workload"
    risk: Risk = "medium"
    addresses: list[Category] = Field(min_length=1)
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    reason: str = ""


class RunbookQuery(BaseModel):
    """A diagnostic PromQL template of the runbook's own, searched for changes like the standard ones.

    Placeholders ``$namespace``, ``$workload`` and ``$pod`` become quoted PromQL strings (so a label value can
    neither break nor extend the query); write ``namespace=$namespace``, not ``namespace="$namespace"``.
    """

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    promql: str = Field(min_length=1)
    description: str
    subject: str = "service"  # the label naming what each series is about
    absolute_floor: float = Field(default=0.0, ge=0.0)
    unit: str = ""

    @model_validator(mode="after")
    def _placeholders_are_known(self) -> RunbookQuery:
        _check_placeholders(self.promql)
        return self


def _check_placeholders(promql: str) -> None:
    try:
        Template(promql).substitute(namespace='"ns"', workload='"w"', pod='"p"')
    except (KeyError, ValueError) as exc:
        raise ValueError(f"promql has an unknown or malformed placeholder: {exc}") from exc


class Runbook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    match: RunbookMatch
    hypotheses: list[RunbookHypothesis] = Field(min_length=1)
    actions: list[RunbookAction] = Field(default_factory=list)
    diagnostics: list[str] = Field(default_factory=list)
    queries: list[RunbookQuery] = Field(default_factory=list)
    # PromQL that still returns series while the diagnosed cause is there (same placeholders as ``queries``):
    # verification checks it besides the alert's own expression before calling the incident resolved.
    verify: str | None = None
    url: str | None = None

    @field_validator("verify")
    @classmethod
    def _verify_placeholders_are_known(cls, verify: str | None) -> str | None:
        if verify is not None:
            _check_placeholders(verify)
        return verify

    @model_validator(mode="after")
    def _actions_address_known_hypotheses(self) -> Runbook:
        known = {hypothesis.category for hypothesis in self.hypotheses}
        for index, action in enumerate(self.actions):
            unknown = [category.value for category in action.addresses if category not in known]
            if unknown:
                raise ValueError(
                    f"actions.{index}.addresses names {unknown}, which are not among this runbook's hypotheses"
                )
        return self

    def matches(self, alertname: str, labels: Mapping[str, str]) -> bool:
        return alertname in self.match.alertnames and all(
            labels.get(key) == value for key, value in self.match.labels.items()
        )


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"{where}: {first['msg']}"


def load_runbook(path: Path) -> Runbook:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RunbookError(f"runbook {path}: cannot read: {exc}") from exc
    if not isinstance(raw, dict):
        raise RunbookError(f"runbook {path}: expected a mapping at the top level")
    try:
        return Runbook.model_validate(raw)
    except ValidationError as exc:
        raise RunbookError(f"runbook {path}: {_describe(exc)}") from exc


def load_runbooks(directory: Path) -> list[Runbook]:
    """Load every ``*.yaml`` runbook; the first bad file stops the start with a message naming it."""
    if not directory.is_dir():
        raise RunbookError(f"runbooks directory {directory} does not exist")
    runbooks = [load_runbook(path) for path in sorted(directory.glob("*.yaml"))]
    seen: dict[str, Path] = {}
    for path, runbook in zip(sorted(directory.glob("*.yaml")), runbooks, strict=True):
        if runbook.id in seen:
            raise RunbookError(f"runbook {path}: id {runbook.id!r} is already used by {seen[runbook.id]}")
        seen[runbook.id] = path
    return runbooks


def find_runbook(runbooks: Sequence[Runbook], alertname: str, labels: Mapping[str, str]) -> Runbook | None:
    """The most specific runbook for an alert: label matchers beat a bare alertname."""
    candidates = [runbook for runbook in runbooks if runbook.matches(alertname, labels)]
    candidates.sort(key=lambda runbook: len(runbook.match.labels), reverse=True)
    return candidates[0] if candidates else None
