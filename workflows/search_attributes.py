"""The contract's custom search attributes: keys, the values an incident publishes, registration."""

from __future__ import annotations

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

ALL_KEYS: tuple[SearchAttributeKey, ...] = (
    INCIDENT_PHASE,
    INCIDENT_SEVERITY,
    INCIDENT_NAMESPACE,
    INCIDENT_SERVICE,
    ALERT_NAME,
    ROOT_CAUSE_CATEGORY,
    DIAGNOSIS_CONFIDENCE,
)


def cli_flags() -> list[str]:
    """``--search-attribute Name=Type`` flags for ``temporal server start-dev``."""
    type_names = {"KEYWORD": "Keyword", "DOUBLE": "Double"}
    flags: list[str] = []
    for key in ALL_KEYS:
        flags += ["--search-attribute", f"{key.name}={type_names[key.indexed_value_type.name]}"]
    return flags


def _keyword_pairs(state: IncidentState) -> list[tuple[SearchAttributeKey[str], str]]:
    return [
        (INCIDENT_PHASE, state.phase.value),
        (INCIDENT_SEVERITY, state.severity.value),
        (INCIDENT_NAMESPACE, state.namespace),
        (INCIDENT_SERVICE, state.service),
        (ALERT_NAME, state.alertname),
        (ROOT_CAUSE_CATEGORY, state.diagnosis.category.value),
    ]


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
