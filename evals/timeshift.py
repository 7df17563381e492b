"""Move a recorded incident to "now": every timestamp of every file shifts by the same whole number of seconds.

Pure functions over already-parsed content. The delta is whole seconds so that every format keeps its own
precision exactly (Kubernetes' second-precision timestamps, Alertmanager's milliseconds, Loki's nanoseconds):
the spec asks for "now minus a few seconds", and half a second either way does not matter to "the last hour".
Where a timestamp sits is fixed by the spec; see ``KUBERNETES_TIME_FIELDS`` and ``ALERT_TIME_FIELDS``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

KUBERNETES_TIME_FIELDS = frozenset(
    {
        "creationTimestamp",
        "lastTimestamp",
        "firstTimestamp",
        "eventTime",
        "startedAt",
        "finishedAt",
        "lastTransitionTime",
        "lastUpdateTime",
        "lastHeartbeatTime",
    }
)
ALERT_TIME_FIELDS = frozenset({"startsAt", "endsAt"})
DEFAULT_TIME_VALUED_SERIES = ("probe_ssl_earliest_cert_expiry",)
LEAD_S = 5  # the notification lands this many seconds before "now", as if it had just been delivered

_RFC3339 = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)$",
)


class ShiftError(ValueError):
    """A timestamp that cannot be shifted; ``field`` says where it is (a JSON path or ``line N``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def delta_seconds(notified_at: datetime, now: datetime) -> int:
    """Whole seconds to add to every timestamp so that ``notified_at`` lands ``LEAD_S`` seconds before ``now``."""
    return math.floor((now - timedelta(seconds=LEAD_S) - notified_at).total_seconds())


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 timestamp (any number of fraction digits; Python keeps microseconds); ValueError otherwise."""
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, offset = match.group(7) or "", match.group(8)
    micros = int((fraction[1:] + "000000")[:6]) if fraction else 0
    return datetime(year, month, day, hour, minute, second, micros, tzinfo=_tz(offset))


def _tz(offset: str) -> timezone:
    if offset in ("Z", "z"):
        return UTC
    sign = -1 if offset[0] == "-" else 1
    return timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))


def shift_rfc3339(text: str, delta_s: int) -> str:
    """``text`` moved by ``delta_s`` seconds, written exactly as it was (fraction digits and offset kept).

    Go's zero time (year 1), which Alertmanager writes as ``endsAt`` of a firing alert, means "not set" and
    stays as it is.
    """
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    if int(match.group(1)) == 1:
        return text
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    moved = datetime(year, month, day, hour, minute, second) + timedelta(seconds=delta_s)
    return f"{moved:%Y-%m-%dT%H:%M:%S}{match.group(7) or ''}{match.group(8)}"


def shift_tree(document: Any, fields: Collection[str], delta_s: int, path: str = "$") -> Any:
    """A copy of a JSON document with the string values of ``fields`` shifted wherever they sit in the tree."""
    if isinstance(document, Mapping):
        out: dict[str, Any] = {}
        for key, value in document.items():
            where = f"{path}.{key}"
            if key in fields and isinstance(value, str):
                try:
                    out[key] = shift_rfc3339(value, delta_s)
                except ValueError as exc:
                    raise ShiftError(where, str(exc)) from None
            else:
                out[key] = shift_tree(value, fields, delta_s, where)
        return out
    if isinstance(document, list):
        return [shift_tree(item, fields, delta_s, f"{path}[{i}]") for i, item in enumerate(document)]
    return document


def shift_alert_payload(payload: Mapping[str, Any], delta_s: int) -> dict[str, Any]:
    """The Alertmanager webhook body with every ``startsAt``/``endsAt`` moved (zero ``endsAt`` left alone)."""
    return dict(shift_tree(payload, ALERT_TIME_FIELDS, delta_s))


def shift_kubernetes(document: Mapping[str, Any], delta_s: int) -> dict[str, Any]:
    """The ``{"items": [...]}`` document with every Kubernetes time field moved, at any depth."""
    return dict(shift_tree(document, KUBERNETES_TIME_FIELDS, delta_s))


def shift_loki_streams(streams: Sequence[Mapping[str, Any]], delta_s: int) -> list[dict[str, Any]]:
    """Loki streams with every value's unix-nanosecond timestamp moved (anything after the line is kept)."""
    delta_ns = delta_s * 1_000_000_000
    shifted = []
    for i, stream in enumerate(streams):
        values = []
        for j, entry in enumerate(stream["values"]):
            try:
                ts = int(entry[0])
            except (TypeError, ValueError, IndexError):
                raise ShiftError(f"$[{i}].values[{j}][0]", "expected a unix-nanosecond timestamp string") from None
            values.append([str(ts + delta_ns), *entry[1:]])
        shifted.append({**stream, "values": values})
    return shifted


def shift_openmetrics(text: str, delta_s: int, time_valued: Collection[str] = DEFAULT_TIME_VALUED_SERIES) -> str:
    """OpenMetrics text with every sample timestamp (seconds) moved, and the values of ``time_valued`` series
    (series whose value is itself a unix time, like a certificate's expiry) moved too.

    Comment lines (``# TYPE``, ``# HELP``, ``# EOF``) are kept; exemplar timestamps move with their samples.
    A sample without a timestamp is an error: the spec requires explicit ones, and promtool would otherwise
    stamp it with the time of the backfill.
    """
    delta = Decimal(delta_s)
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line or line.startswith("#"):
            continue
        try:
            lines[number - 1] = _shift_sample(line, delta, time_valued)
        except ValueError as exc:
            raise ShiftError(f"line {number}", str(exc)) from None
    return "\n".join(lines)


def _shift_sample(line: str, delta: Decimal, time_valued: Collection[str]) -> str:
    name_end = _label_set_end(line, 0)
    name = line[: line.index("{")] if "{" in line[:name_end] else line[:name_end]
    sample, hash_, exemplar = line[name_end:].partition(" # ")
    parts = sample.split()
    if len(parts) != 2:
        raise ValueError(f"expected '<series> <value> <timestamp>', got {line[:120]!r}")
    value, timestamp = parts
    if name in time_valued:
        value = _add(value, delta, what="value")
    shifted = f"{line[:name_end]} {value} {_add(timestamp, delta, what='timestamp')}"
    if hash_:
        shifted += " # " + _shift_exemplar(exemplar, delta)
    return shifted


def _shift_exemplar(exemplar: str, delta: Decimal) -> str:
    end = _label_set_end(exemplar, 0)
    parts = exemplar[end:].split()
    if len(parts) == 2:
        parts[1] = _add(parts[1], delta, what="exemplar timestamp")
    return exemplar[:end] + " " + " ".join(parts)


def _label_set_end(line: str, start: int) -> int:
    """Index just past the series name and its ``{...}`` label set (quoted values may hold any character)."""
    i = start
    while i < len(line) and line[i] not in " {":
        i += 1
    if i >= len(line) or line[i] != "{":
        return i
    quoted = False
    while i < len(line):
        char = line[i]
        if quoted and char == "\\":
            i += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == "}" and not quoted:
            return i + 1
        i += 1
    raise ValueError("unterminated label set")


def _add(number: str, delta: Decimal, *, what: str) -> str:
    """``number + delta`` in decimal, so that no digit of the original is lost; NaN and infinities stay."""
    try:
        parsed = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"{what} {number!r} is not a number") from None
    if not parsed.is_finite():
        if what == "value":
            return number
        raise ValueError(f"{what} {number!r} is not finite")
    return str(parsed + delta)
