"""A scenario directory: find it, read it (plain or ``.gz``), validate it, and move it to "now".

Every problem is a ``ScenarioError`` that names the file and the field (a JSON path, or a line of
``metrics.om``), so a broken scenario says what to fix instead of failing somewhere inside a back-end.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from evals.contract import ACTIONS, CATEGORIES
from evals.timeshift import (
    DEFAULT_TIME_VALUED_SERIES,
    ShiftError,
    delta_seconds,
    parse_rfc3339,
    shift_alert_payload,
    shift_kubernetes,
    shift_loki_streams,
    shift_openmetrics,
)

ALERT = "alert.json"
EXPECTED = "expected.json"
METRICS = "metrics.om"
LOGS = "logs.json"
KUBERNETES = "kubernetes.json"
SCENARIO_FILES = (ALERT, EXPECTED, METRICS, LOGS, KUBERNETES)


class ScenarioError(ValueError):
    """A scenario that cannot be used; ``str()`` reads ``<dir>/<file>: <field>: <what is wrong>``."""

    def __init__(self, directory: Path, file: str, field: str, message: str) -> None:
        where = f"{directory / file}: {field}: " if field else f"{directory / file}: "
        super().__init__(where + message)
        self.directory = directory
        self.file = file
        self.field = field
        self.message = message


@dataclass(frozen=True)
class RootCause:
    namespace: str
    workload: str
    kind: str = ""


@dataclass(frozen=True)
class Expected:
    category: str
    root_cause: RootCause
    acceptable_actions: tuple[str, ...]
    forbidden_actions: tuple[str, ...]
    notified_at: datetime
    time_valued_series: tuple[str, ...] = DEFAULT_TIME_VALUED_SERIES


@dataclass(frozen=True)
class Scenario:
    name: str
    directory: Path
    alert: dict[str, Any]  # the Alertmanager webhook body
    metrics: str  # OpenMetrics text ending with "# EOF"
    logs: list[dict[str, Any]]  # Loki streams
    kubernetes: dict[str, Any]  # {"items": [...]}
    expected: Expected
    sources: Mapping[str, str] = field(default_factory=dict)  # file name -> what was read (".gz" or not)


# ---- finding scenarios --------------------------------------------------------------------------------------


def is_scenario_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() or (path / f"{name}.gz").exists() for name in SCENARIO_FILES)


def find_scenarios(root: Path) -> list[Path]:
    """``root`` itself when it is a scenario, else its sub-directories that hold any scenario file, by name."""
    if is_scenario_dir(root):
        return [root]
    return sorted((child for child in root.iterdir() if is_scenario_dir(child)), key=lambda p: p.name)


# ---- reading ------------------------------------------------------------------------------------------------


def _source(directory: Path, name: str) -> tuple[Path, str]:
    """The file to read for ``name``: plain or gzip-compressed, exactly one of them."""
    plain, packed = directory / name, directory / f"{name}.gz"
    if plain.exists() and packed.exists():
        raise ScenarioError(directory, name, "", f"both {name} and {name}.gz exist; keep one")
    if packed.exists():
        return packed, f"{name}.gz"
    if plain.exists():
        return plain, name
    raise ScenarioError(directory, name, "", f"missing (neither {name} nor {name}.gz exists)")


def read_text(directory: Path, name: str) -> tuple[str, str]:
    """The text of ``name`` (``.gz`` decompressed) and the file name it came from."""
    path, label = _source(directory, name)
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if label.endswith(".gz") else raw
        return data.decode("utf-8"), label
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise ScenarioError(directory, label, "", f"unreadable: {exc}") from None


def read_json(directory: Path, name: str) -> tuple[Any, str]:
    text, label = read_text(directory, name)
    try:
        return json.loads(text), label
    except json.JSONDecodeError as exc:
        raise ScenarioError(directory, label, f"line {exc.lineno} column {exc.colno}", exc.msg) from None


# ---- validation ---------------------------------------------------------------------------------------------


class _Invalid(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _field(document: Any, key: str, kind: type | tuple[type, ...], where: str = "$") -> Any:
    if not isinstance(document, Mapping):
        raise _Invalid(where, "expected an object")
    if key not in document:
        raise _Invalid(f"{where}.{key}", "missing")
    value = document[key]
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise _Invalid(f"{where}.{key}", f"expected {_json_kind(names)}, got {type(value).__name__}")
    return value


def _json_kind(python: str) -> str:
    return {"str": "a string", "list": "a list", "dict": "an object", "int": "a number", "float": "a number"}.get(
        python, python
    )


def _timestamp(value: str, where: str) -> datetime:
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise _Invalid(where, str(exc)) from None


def _actions(document: Mapping[str, Any], key: str, *, non_empty: bool) -> tuple[str, ...]:
    values = _field(document, key, list)
    if non_empty and not values:
        raise _Invalid(f"$.{key}", "must name at least one action")
    for i, value in enumerate(values):
        if value not in ACTIONS:
            raise _Invalid(f"$.{key}[{i}]", f"{value!r} is not in the action vocabulary ({', '.join(sorted(ACTIONS))})")
    return tuple(values)


def parse_expected(document: Any) -> Expected:
    category = _field(document, "category", str)
    if category not in CATEGORIES:
        raise _Invalid("$.category", f"{category!r} is not in the taxonomy ({', '.join(sorted(CATEGORIES))})")
    root = _field(document, "root_cause", dict)
    namespace = _field(root, "namespace", str, "$.root_cause")
    workload = _field(root, "workload", str, "$.root_cause")
    if not workload:
        raise _Invalid("$.root_cause.workload", "must not be empty")
    kind = root.get("kind", "")
    if not isinstance(kind, str):
        raise _Invalid("$.root_cause.kind", "expected a string")
    acceptable = _actions(document, "acceptable_actions", non_empty=True)
    forbidden = _actions(document, "forbidden_actions", non_empty=False)
    if both := sorted(set(acceptable) & set(forbidden)):
        raise _Invalid("$.forbidden_actions", f"{', '.join(both)} also listed as acceptable")
    notified_at = _timestamp(_field(document, "notified_at", str), "$.notified_at")
    series: tuple[str, ...] = DEFAULT_TIME_VALUED_SERIES
    telemetry = document.get("telemetry")
    if isinstance(telemetry, Mapping) and "time_valued_series" in telemetry:
        listed = telemetry["time_valued_series"]
        if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
            raise _Invalid("$.telemetry.time_valued_series", "expected a list of metric names")
        series = tuple(listed)
    return Expected(
        category=category,
        root_cause=RootCause(namespace=namespace, workload=workload, kind=kind),
        acceptable_actions=acceptable,
        forbidden_actions=forbidden,
        notified_at=notified_at,
        time_valued_series=series,
    )


def validate_alert(document: Any) -> None:
    """An Alertmanager webhook body, version 4, that the front door will accept."""
    version = _field(document, "version", str)
    if version != "4":
        raise _Invalid("$.version", f'expected "4", got {version!r}')
    _field(document, "status", str)
    alerts = _field(document, "alerts", list)
    if not alerts:
        raise _Invalid("$.alerts", "must hold at least one alert")
    for i, alert in enumerate(alerts):
        where = f"$.alerts[{i}]"
        labels = _field(alert, "labels", dict, where)
        if not isinstance(labels.get("alertname"), str):
            raise _Invalid(f"{where}.labels.alertname", "missing")
        _timestamp(_field(alert, "startsAt", str, where), f"{where}.startsAt")
        if "endsAt" in alert:
            _timestamp(_field(alert, "endsAt", str, where), f"{where}.endsAt")


def validate_logs(document: Any) -> None:
    if not isinstance(document, list):
        raise _Invalid("$", "expected a list of streams")
    for i, stream in enumerate(document):
        _field(stream, "stream", dict, f"$[{i}]")
        values = _field(stream, "values", list, f"$[{i}]")
        for j, entry in enumerate(values):
            ok = isinstance(entry, list) and len(entry) >= 2 and all(isinstance(part, str) for part in entry[:2])
            if not ok or not entry[0].isdigit():
                raise _Invalid(f"$[{i}].values[{j}]", 'expected ["<unix ns>", "<line>"]')


def validate_kubernetes(document: Any) -> None:
    items = _field(document, "items", list)
    for i, item in enumerate(items):
        where = f"$.items[{i}]"
        _field(item, "apiVersion", str, where)
        _field(item, "kind", str, where)
        metadata = _field(item, "metadata", dict, where)
        _field(metadata, "name", str, f"{where}.metadata")


def _checked(directory: Path, name: str, check: Any) -> tuple[Any, str]:
    document, label = read_json(directory, name)
    try:
        result = check(document)
    except _Invalid as exc:
        raise ScenarioError(directory, label, exc.field, str(exc)) from None
    return (document if result is None else result), label


def load_scenario(directory: Path) -> Scenario:
    """Read and validate every file of the scenario in ``directory``; ScenarioError on the first problem."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ScenarioError(directory.parent, directory.name, "", "not a directory")
    expected, expected_file = _checked(directory, EXPECTED, parse_expected)
    alert, alert_file = _checked(directory, ALERT, validate_alert)
    logs, logs_file = _checked(directory, LOGS, validate_logs)
    kubernetes, kubernetes_file = _checked(directory, KUBERNETES, validate_kubernetes)
    metrics, metrics_file = read_text(directory, METRICS)
    if not metrics.rstrip().endswith("# EOF"):
        raise ScenarioError(directory, metrics_file, "last line", "OpenMetrics must end with '# EOF'")
    return Scenario(
        name=directory.name,
        directory=directory,
        alert=alert,
        metrics=metrics,
        logs=logs,
        kubernetes=kubernetes,
        expected=expected,
        sources={
            EXPECTED: expected_file,
            ALERT: alert_file,
            LOGS: logs_file,
            KUBERNETES: kubernetes_file,
            METRICS: metrics_file,
        },
    )


def shifted(scenario: Scenario, now: datetime) -> Scenario:
    """The scenario moved so that its notification happened ``LEAD_S`` seconds before ``now`` (pure)."""
    delta = delta_seconds(scenario.expected.notified_at, now)
    return shift_scenario(scenario, delta)


def shift_scenario(scenario: Scenario, delta_s: int) -> Scenario:
    """Every timestamp of every file moved by ``delta_s`` seconds; ScenarioError names a bad one."""
    directory = scenario.directory
    steps: Sequence[tuple[str, Any]] = (
        (ALERT, lambda: shift_alert_payload(scenario.alert, delta_s)),
        (LOGS, lambda: shift_loki_streams(scenario.logs, delta_s)),
        (KUBERNETES, lambda: shift_kubernetes(scenario.kubernetes, delta_s)),
        (METRICS, lambda: shift_openmetrics(scenario.metrics, delta_s, scenario.expected.time_valued_series)),
    )
    moved: dict[str, Any] = {}
    for name, step in steps:
        try:
            moved[name] = step()
        except ShiftError as exc:
            raise ScenarioError(directory, scenario.sources.get(name, name), exc.field, exc.message) from None
    expected = replace(scenario.expected, notified_at=scenario.expected.notified_at + timedelta(seconds=delta_s))
    return replace(
        scenario,
        alert=moved[ALERT],
        logs=moved[LOGS],
        kubernetes=moved[KUBERNETES],
        metrics=moved[METRICS],
        expected=expected,
    )
