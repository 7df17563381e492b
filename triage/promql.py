"""The alert's own PromQL, decoded from Alertmanager's ``generatorURL``, and which result series are ours."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, urlsplit


def expr_from_generator_url(url: str) -> str | None:
    """Prometheus links each alert to ``/graph?g0.expr=<expr>&g0.tab=1``; return that expression."""
    if not url:
        return None
    query = urlsplit(url).query
    if not query:
        return None
    values = parse_qs(query, keep_blank_values=False).get("g0.expr")
    if not values or not values[0].strip():
        return None
    return values[0].strip()


# Labels Prometheus or Alertmanager add to an alert that the rule's expression never returns.
_ALERT_ONLY_LABELS = frozenset({"alertname", "severity", "prometheus", "alertstate", "priority", "team"})


def series_of_alerts(
    series_labels: Iterable[Mapping[str, str]], alert_labels: Iterable[Mapping[str, str]]
) -> list[Mapping[str, str]]:
    """The result series that belong to one of the incident's alerts.

    A series belongs to an alert when every label both carry has the same value. Labels only the alert has
    (``alertname``, ``severity``, external labels) cannot be compared and are ignored.
    """
    alerts = [{key: value for key, value in labels.items() if key not in _ALERT_ONLY_LABELS} for labels in alert_labels]
    matched = []
    for series in series_labels:
        for alert in alerts:
            shared = set(series) & set(alert)
            if all(series[key] == alert[key] for key in shared):
                matched.append(series)
                break
    return matched
