"""Incident identity: one workflow per alert group, and a stable fingerprint for every alert."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

WORKFLOW_ID_PREFIX = "incident-"


def incident_workflow_id(group_key: str) -> str:
    """``incident-`` + the first 16 hex chars of sha256(groupKey), as the contract fixes it."""
    return WORKFLOW_ID_PREFIX + hashlib.sha256(group_key.encode()).hexdigest()[:16]


def labels_fingerprint(labels: Mapping[str, str]) -> str:
    """A stable 16-hex fingerprint for senders that omit Alertmanager's own."""
    canonical = "\x00".join(f"{key}\x01{labels[key]}" for key in sorted(labels))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def group_key_from_fingerprints(fingerprints: Iterable[str]) -> str:
    """The group key of a source that has none: its sorted alert fingerprints."""
    return ",".join(sorted(set(fingerprints)))
