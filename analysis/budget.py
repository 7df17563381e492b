"""The evidence handed to diagnosis (and to an LLM) has a fixed size, whatever the sources returned.

Each list keeps its best entries (sources return them ranked) up to a cap; if the whole is still over the byte
budget, the longest list is halved until it fits. What was cut is counted in ``evidence.dropped``, so a reader
knows the picture is partial.
"""

from __future__ import annotations

from models.evidence import Evidence

DEFAULT_BUDGET_BYTES = 48 * 1024
CAPS = {
    "findings": 15,
    "conditions": 10,
    "rollouts": 10,
    "pods": 30,
    "nodes": 10,
    "events": 20,
    "log_templates": 15,
    "related_alerts": 15,
    "items": 10,
}


def _drop(evidence: Evidence, name: str, keep: int) -> None:
    entries = getattr(evidence, name)
    if len(entries) > keep:
        evidence.dropped[name] = evidence.dropped.get(name, 0) + len(entries) - keep
        setattr(evidence, name, entries[:keep])


def bound_evidence(evidence: Evidence, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> Evidence:
    """A copy of ``evidence`` within the caps and the byte budget (gaps are never dropped)."""
    bounded = evidence.model_copy(deep=True)
    for name, cap in CAPS.items():
        _drop(bounded, name, cap)
    while len(bounded.model_dump_json()) > budget_bytes:
        name = max(CAPS, key=lambda key: len(bounded.model_dump_json(include={key})))
        entries = getattr(bounded, name)
        if not entries:
            break  # nothing left to cut: what remains is gaps and counters
        _drop(bounded, name, len(entries) // 2)
    return bounded
