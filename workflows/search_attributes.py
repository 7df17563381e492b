"""The contract's custom search attributes: keys, the values an incident publishes, registration."""

from __future__ import annotations

import json

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)
from temporalio.service import RPCError, RPCStatusCode

from models.incident import IncidentState

INCIDENT_PHASE = SearchAttributeKey.for_keyword("IncidentPhase")
INCIDENT_SEVERITY = SearchAttributeKey.for_keyword("IncidentSeverity")
INCIDENT_NAMESPACE = SearchAttributeKey.for_keyword("IncidentNamespace")
INCIDENT_SERVICE = SearchAttributeKey.for_keyword("IncidentService")
ALERT_NAME = SearchAttributeKey.for_keyword("AlertName")
ROOT_CAUSE_CATEGORY = SearchAttributeKey.for_keyword("RootCauseCategory")
DIAGNOSIS_CONFIDENCE = SearchAttributeKey.for_float("DiagnosisConfidence")
# A person's verdict on the diagnosis, "correct" or "wrong" (set by the feedback update, never cleared).
DIAGNOSIS_FEEDBACK = SearchAttributeKey.for_keyword("DiagnosisFeedback")

ALL_KEYS: tuple[SearchAttributeKey, ...] = (
    INCIDENT_PHASE,
    INCIDENT_SEVERITY,
    INCIDENT_NAMESPACE,
    INCIDENT_SERVICE,
    ALERT_NAME,
    ROOT_CAUSE_CATEGORY,
    DIAGNOSIS_CONFIDENCE,
    DIAGNOSIS_FEEDBACK,
)


def quoted(value: str) -> str:
    """A string literal for a visibility query (quotes and backslashes escaped: a label cannot widen the query)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def cli_flags() -> list[str]:
    """``--search-attribute Name=Type`` flags for ``temporal server start-dev``."""
    flags: list[str] = []
    for key in ALL_KEYS:
        flags += ["--search-attribute", f"{key.name}={_TYPE_NAMES[key.indexed_value_type.name]}"]
    return flags


# Temporal refuses a keyword value whose encoding (JSON, non-ASCII escaped as \uXXXX) is over 2 KiB, the server's
# default: the start, or every later upsert, would fail. Label values are the sender's; a longer one is cut.
KEYWORD_MAX_BYTES = 2048


def keyword_value(value: str, max_bytes: int = KEYWORD_MAX_BYTES) -> str:
    """``value``, or its longest prefix whose encoding fits ``max_bytes``."""
    if len(json.dumps(value)) <= max_bytes:
        return value
    low, high = 0, len(value)
    while low < high:
        middle = (low + high + 1) // 2
        if len(json.dumps(value[:middle])) <= max_bytes:
            low = middle
        else:
            high = middle - 1
    return value[:low]


def _keyword_pairs(state: IncidentState) -> list[tuple[SearchAttributeKey[str], str]]:
    pairs = [
        (INCIDENT_PHASE, state.phase.value),
        (INCIDENT_SEVERITY, state.severity.value),
        (INCIDENT_NAMESPACE, state.namespace),
        (INCIDENT_SERVICE, state.service),
        (ALERT_NAME, state.alertname),
        (ROOT_CAUSE_CATEGORY, state.diagnosis.category.value),
    ]
    return [(key, keyword_value(value)) for key, value in pairs]


def initial_search_attributes(state: IncidentState) -> TypedSearchAttributes:
    pairs: list[SearchAttributePair] = [
        SearchAttributePair(key, value) for key, value in _keyword_pairs(state) if value
    ]
    return TypedSearchAttributes(pairs)


def search_attribute_updates(state: IncidentState) -> list[SearchAttributeUpdate]:
    updates: list[SearchAttributeUpdate] = [
        key.value_set(value) if value else key.value_unset() for key, value in _keyword_pairs(state)
    ]
    updates.append(DIAGNOSIS_CONFIDENCE.value_set(round(state.diagnosis.confidence, 4)))
    return updates


class SearchAttributesMissing(Exception):
    """The namespace lacks search attributes the incidents upsert: every workflow task would fail on them."""

    def __init__(self, namespace: str, missing: list[str]) -> None:
        self.missing = missing
        commands = "; ".join(
            f"temporal operator search-attribute create --namespace {namespace} --name {key.name} "
            f"--type {_TYPE_NAMES[key.indexed_value_type.name]}"
            for key in ALL_KEYS
            if key.name in missing
        )
        names = ", ".join(missing)
        super().__init__(f"namespace {namespace!r} lacks the search attributes {names}; register them: {commands}")


_TYPE_NAMES = {"KEYWORD": "Keyword", "DOUBLE": "Double"}


async def check_search_attributes(client: Client, namespace: str) -> bool:
    """Raise SearchAttributesMissing when the namespace lacks any of ours; False when the server cannot say (the
    time-skipping server, a cloud key without operator rights): the worker then starts and relies on the docs."""
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError:
        return False
    known = set(existing.custom_attributes) | set(existing.system_attributes)
    missing = [key.name for key in ALL_KEYS if key.name not in known]
    if missing:
        raise SearchAttributesMissing(namespace, missing)
    return True


async def register_search_attributes(client: Client, namespace: str) -> None:
    """Register every custom search attribute on a cluster; ones that already exist are left alone."""
    wanted = {key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in ALL_KEYS}
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        wanted = {name: kind for name, kind in wanted.items() if name not in existing.custom_attributes}
    except RPCError as err:
        # The time-skipping test server implements adding search attributes but not listing them.
        if err.status != RPCStatusCode.UNIMPLEMENTED:
            raise
    if wanted:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=wanted)
            )
        except RPCError as err:
            if err.status != RPCStatusCode.ALREADY_EXISTS:
                raise
