"""PagerDutyActivities.page against the PagerDuty stand-in in tests/fixtures/pagerduty_stand_in.py.

The expected bodies are written out here from PagerDuty's Events API v2 documentation, never built with the
activity's own helpers.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest
import pytest_asyncio
from pydantic import SecretStr
from structlog.testing import capture_logs
from temporalio.exceptions import ApplicationError

from activities.pagerduty import NOT_CONFIGURED, PAGERDUTY_UNAVAILABLE, PagerDutyActivities
from config.settings import Settings
from models.incident import PageRequest, Severity
from tests.fixtures.pagerduty_stand_in import PagerDutyStandIn, validate

ROUTING_KEY = "R0ut1ngK3yR0ut1ngK3yR0ut1ngK3y00"  # 32 characters, like a real integration key
WORKFLOW_ID = "incident-0123456789abcdef"


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest_asyncio.fixture
async def pagerduty() -> AsyncIterator[PagerDutyStandIn]:
    async with PagerDutyStandIn() as stand_in:
        yield stand_in


def trigger(**overrides: object) -> PageRequest:
    fields: dict[str, object] = {
        "workflow_id": WORKFLOW_ID,
        "action": "trigger",
        "summary": "HighErrorRate on checkout in shop: plan rejected by alice",
        "severity": Severity.critical,
        "source": "shop/checkout",
        "links": [{"href": "http://localhost:8233/namespaces/default/workflows/" + WORKFLOW_ID, "text": "Temporal"}],
        "details": {"phase": "escalated", "category": "bad_deploy", "confidence": 0.82},
    }
    fields.update(overrides)
    return PageRequest.model_validate(fields)


def activities(pagerduty: PagerDutyStandIn, session: aiohttp.ClientSession, key: str | None = ROUTING_KEY):
    return PagerDutyActivities(key, pagerduty.events_url, session)


async def test_trigger_sends_the_documented_body_and_opens_one_alert(pagerduty, session) -> None:
    result = await activities(pagerduty, session).page(trigger())

    assert result.sent and "Event processed" in result.detail and WORKFLOW_ID in result.detail
    assert len(pagerduty.requests) == 1
    assert pagerduty.requests[0].headers["Content-Type"].startswith("application/json")
    assert pagerduty.requests[0].body == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": WORKFLOW_ID,
        "payload": {
            "summary": "HighErrorRate on checkout in shop: plan rejected by alice",
            "source": "shop/checkout",
            "severity": "critical",
            "custom_details": {"phase": "escalated", "category": "bad_deploy", "confidence": 0.82},
        },
        "links": [{"href": "http://localhost:8233/namespaces/default/workflows/" + WORKFLOW_ID, "text": "Temporal"}],
        "client": "incident-agent",
    }
    [alert] = pagerduty.open_alerts
    assert (alert.dedup_key, alert.status, alert.severity, alert.source) == (
        WORKFLOW_ID,
        "triggered",
        "critical",
        "shop/checkout",
    )


async def test_component_detail_becomes_the_payload_component(pagerduty, session) -> None:
    await activities(pagerduty, session).page(trigger(details={"component": "checkout", "phase": "escalated"}))
    payload = pagerduty.requests[0].body["payload"]
    assert payload["component"] == "checkout"
    assert payload["custom_details"] == {"phase": "escalated"}


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("critical", "critical"), ("high", "error"), ("medium", "warning"), ("low", "info")],
)
async def test_severity_maps_to_pagerdutys_scale(pagerduty, session, ours: str, theirs: str) -> None:
    result = await activities(pagerduty, session).page(trigger(severity=ours))
    assert result.sent
    assert pagerduty.requests[0].body["payload"]["severity"] == theirs


async def test_summary_is_cut_to_1024_characters_and_blank_fields_get_defaults(pagerduty, session) -> None:
    result = await activities(pagerduty, session).page(trigger(summary="x" * 5000, source="  ", links=[{"text": "x"}]))
    assert result.sent  # a long summary or a blank source never gets the page refused
    body = pagerduty.requests[0].body
    assert len(body["payload"]["summary"]) == 1024
    assert body["payload"]["source"] == "incident-agent"
    assert body["links"] == []  # a link without href would be refused

    await activities(pagerduty, session).page(trigger(summary="  ", workflow_id="incident-ffff"))
    assert pagerduty.requests[1].body["payload"]["summary"] == "Incident incident-ffff"


async def test_resolve_sends_the_bare_resolve_and_closes_the_alert(pagerduty, session) -> None:
    pd = activities(pagerduty, session)
    await pd.page(trigger())
    result = await pd.page(PageRequest(workflow_id=WORKFLOW_ID, action="resolve", summary="ignored"))

    assert result.sent
    assert pagerduty.requests[1].body == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": WORKFLOW_ID,
    }
    assert pagerduty.open_alerts == []
    assert pagerduty.alert(WORKFLOW_ID).status == "resolved"


async def test_repeated_triggers_with_one_dedup_key_make_one_open_alert(pagerduty, session) -> None:
    pd = activities(pagerduty, session)
    for summary in ("first", "second", "third"):
        assert (await pd.page(trigger(summary=summary))).sent
    assert len(pagerduty.open_alerts) == 1
    assert pagerduty.open_alerts[0].triggers == 3
    assert len(pagerduty.events) == 3

    # After the resolve the same key opens a new alert, as in PagerDuty.
    await pd.page(PageRequest(workflow_id=WORKFLOW_ID, action="resolve"))
    await pd.page(trigger(summary="fourth"))
    assert [alert.status for alert in pagerduty.alerts] == ["resolved", "triggered"]
    assert len(pagerduty.open_alerts) == 1


async def test_invalid_event_is_not_retried_and_names_the_errors(pagerduty, session) -> None:
    short_key = "not-32-characters"
    with capture_logs() as logs:
        result = await activities(pagerduty, session, key=short_key).page(trigger())

    assert not result.sent
    assert "400" in result.detail and "Event object is invalid" in result.detail
    assert "Length of 'routing_key' is incorrect (should be 32 characters)" in result.detail
    assert short_key not in result.detail
    assert len(pagerduty.requests) == 1 and pagerduty.alerts == []
    assert all(short_key not in str(entry) for entry in logs)


async def test_other_client_errors_are_recorded_not_retried(pagerduty, session) -> None:
    pagerduty.fail_next(404, body={"status": "not found", "message": "no such route"})
    result = await activities(pagerduty, session).page(trigger())
    assert not result.sent and "404" in result.detail and "no such route" in result.detail


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_throttling_and_server_errors_raise_retryable_then_succeed(pagerduty, session, status: int) -> None:
    pd = activities(pagerduty, session)
    pagerduty.fail_next(status)

    with pytest.raises(ApplicationError) as info:
        await pd.page(trigger())
    assert info.value.non_retryable is False
    assert info.value.type == PAGERDUTY_UNAVAILABLE
    assert str(status) in str(info.value)
    assert ROUTING_KEY not in str(info.value)
    assert pagerduty.alerts == []  # the refused attempt changed nothing

    # Temporal's retry is the same call again.
    result = await pd.page(trigger())
    assert result.sent
    assert len(pagerduty.requests) == 2 and len(pagerduty.open_alerts) == 1


async def test_retry_after_sets_the_next_retry_delay(pagerduty, session) -> None:
    pagerduty.fail_next(429, headers={"Retry-After": "30"})
    with pytest.raises(ApplicationError) as info:
        await activities(pagerduty, session).page(trigger())
    assert info.value.next_retry_delay == timedelta(seconds=30)


async def test_unreachable_pagerduty_raises_retryable(session) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pd = PagerDutyActivities(ROUTING_KEY, f"http://127.0.0.1:{port}/v2/enqueue", session)
    with pytest.raises(ApplicationError) as info:
        await pd.page(trigger())
    assert info.value.non_retryable is False and info.value.type == PAGERDUTY_UNAVAILABLE
    assert "unreachable" in str(info.value)


async def test_unconfigured_sends_nothing(pagerduty, session) -> None:
    for key in (None, ""):
        result = await activities(pagerduty, session, key=key).page(trigger())
        assert result.sent is False
        assert result.detail == NOT_CONFIGURED == "PagerDuty not configured (set PAGERDUTY_ROUTING_KEY)"
    assert pagerduty.requests == []


async def test_from_settings_and_the_key_never_shows(pagerduty, session) -> None:
    settings = Settings(
        _env_file=None,
        pagerduty_routing_key=SecretStr(ROUTING_KEY),
        pagerduty_events_url=pagerduty.events_url,
    )
    pd = PagerDutyActivities.from_settings(settings, session)
    assert pd.configured and ROUTING_KEY not in repr(pd)
    with capture_logs() as logs:
        assert (await pd.page(trigger())).sent
    assert logs and all(ROUTING_KEY not in str(entry) for entry in logs)

    unset = PagerDutyActivities.from_settings(Settings(_env_file=None), session)
    assert not unset.configured


# ---- the stand-in validates like PagerDuty ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "errors"),
    [
        (
            {"event_action": "trigger", "payload": {"summary": "s", "source": "x", "severity": "info"}},
            ["'routing_key' is missing or blank"],
        ),
        (
            {"routing_key": ROUTING_KEY, "event_action": "trigger", "payload": {"source": "x", "severity": "info"}},
            ["'payload.summary' is missing or blank"],
        ),
        (
            {"routing_key": ROUTING_KEY, "event_action": "trigger", "payload": {"summary": "s", "severity": "info"}},
            ["'payload.source' is missing or blank"],
        ),
        (
            {"routing_key": ROUTING_KEY, "event_action": "trigger", "payload": {"summary": "s", "source": "x"}},
            ["'payload.severity' is missing or blank"],
        ),
        (
            {
                "routing_key": ROUTING_KEY,
                "event_action": "trigger",
                "payload": {"summary": "s", "source": "x", "severity": "high"},
            },
            ["'payload.severity' is invalid (must be one of: critical, error, warning, info)"],
        ),
        (
            {"routing_key": ROUTING_KEY, "event_action": "page", "dedup_key": "k"},
            ["'event_action' is invalid (must be one of: trigger, acknowledge, resolve)"],
        ),
        ({"routing_key": ROUTING_KEY, "event_action": "resolve"}, ["'dedup_key' is missing or blank"]),
        ({"routing_key": ROUTING_KEY, "event_action": "trigger"}, ["'payload' is missing or blank"]),
        ({}, ["'routing_key' is missing or blank", "'event_action' is missing or blank"]),
    ],
    ids=[
        "no-key",
        "no-summary",
        "no-source",
        "no-severity",
        "bad-severity",
        "bad-action",
        "resolve-no-dedup",
        "no-payload",
        "empty",
    ],
)
async def test_stand_in_refuses_invalid_events_like_pagerduty(pagerduty, session, event, errors) -> None:
    assert validate(event) == errors
    async with session.post(pagerduty.events_url, json=event) as response:
        assert response.status == 400
        assert await response.json() == {
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": errors,
        }
    assert pagerduty.events == [] and pagerduty.alerts == []


async def test_stand_in_drops_a_resolve_for_no_open_alert_and_generates_keys(pagerduty, session) -> None:
    async with session.post(
        pagerduty.events_url, json={"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "nobody"}
    ) as response:
        assert response.status == 202
        assert (await response.json())["dedup_key"] == "nobody"
    event = {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "payload": {"summary": "s", "source": "x", "severity": "info"},
    }
    keys = set()
    for _ in range(2):
        async with session.post(pagerduty.events_url, json=event) as response:
            keys.add((await response.json())["dedup_key"])
    assert len(keys) == 2 and len(pagerduty.open_alerts) == 2
