"""Human durations such as ``90s``, ``5m``, ``1h30m`` or a bare number of seconds."""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str | float | int) -> float:
    """Return seconds. Raises ValueError with the offending text when it is not a positive duration."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        raw = text.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", raw):
            seconds = float(raw)
        else:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(raw):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                pos = match.end()
            if pos != len(raw) or not raw:
                raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 5m, 1h30m)")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be a positive, finite number of seconds: {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    parts: list[str] = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            value, seconds = divmod(seconds, size)
            parts.append(f"{value}{unit}")
    return "".join(parts)
