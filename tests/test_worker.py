"""The worker as production wires it: real activities, the logging interceptor, runbooks validated at start."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import pytest
import structlog
from structlog.testing import LogCapture
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from frontdoor.gateway import IncidentGateway
from models.incident import Phase
from tests.harness import notification, wait_for
from triage.runbooks import RunbookError
from worker import build_worker
from workflows.search_attributes import (
    ALL_KEYS,
    SearchAttributesMissing,
    check_search_attributes,
    register_search_attributes,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def captured_logs():
    capture = LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    yield capture
    structlog.reset_defaults()


async def test_every_activity_log_line_names_its_incident(
    own_time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    captured_logs: LogCapture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing configured, and no kubeconfig of this machine's either: the defaults must run on their own.
    monkeypatch.setenv("HOME", str(tmp_path))
    for variable in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(variable, raising=False)
    settings = Settings(_env_file=None, temporal_task_queue=task_queue)  # type: ignore[call-arg]
    async with aiohttp.ClientSession() as session, build_worker(own_time_skipping_env.client, settings, session):
        gateway = IncidentGateway(own_time_skipping_env.client, settings)
        delivery = await gateway.deliver(notification(group_key=f'{{}}:{{test="{task_queue}"}}'))
        handle = own_time_skipping_env.client.get_workflow_handle(delivery.workflow_id)
        # Nothing to go on: the agent abstains and hands the incident to a person.
        state = await wait_for(handle, lambda s: s.phase == Phase.escalated)

    # Every source unset: recorded gaps naming what to set, not failures.
    assert sorted((g.source, g.reason) for g in state.evidence.gaps) == [
        ("alertmanager", "Alertmanager is not configured (set ALERTMANAGER_URL)"),
        ("kubernetes", "Kubernetes is not configured (set KUBECONFIG)"),
        ("loki", "Loki is not configured (set LOKI_URL)"),
        ("prometheus", "Prometheus is not configured (set PROMETHEUS_URL)"),
    ]
    activity_lines = [entry for entry in captured_logs.entries if "activity" in entry]
    assert {entry["activity"] for entry in activity_lines} >= {"triage_alerts", "diagnose_incident", "notify"}
    assert {entry["incident_id"] for entry in activity_lines} == {delivery.workflow_id}
    assert state.diagnosis.category == "unknown" and state.plan is not None
    assert [action.type for action in state.plan.actions] == ["escalate"]


async def test_a_broken_runbook_stops_the_worker_naming_file_and_key(
    own_time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    (tmp_path / "broken.yaml").write_text(
        "id: broken\ntitle: Broken\nmatch: {alertnames: [X]}\n"
        "hypotheses:\n  - {category: gremlins, prior: 0.5, summary: s}\n"
    )
    settings = Settings(_env_file=None, runbooks_dir=tmp_path)  # type: ignore[call-arg]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(RunbookError) as info:
            build_worker(own_time_skipping_env.client, settings, session)
    assert "broken.yaml" in str(info.value) and "hypotheses.0.category" in str(info.value)


async def test_a_namespace_without_the_search_attributes_stops_the_worker_naming_them() -> None:
    bare = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"), dev_server_log_level="error"
    )
    try:
        with pytest.raises(SearchAttributesMissing) as info:
            await check_search_attributes(bare.client, bare.client.namespace)
        assert set(info.value.missing) == {key.name for key in ALL_KEYS}
        assert "--name DiagnosisFeedback --type Keyword" in str(info.value)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "worker.py",
            cwd=ROOT,
            env={**os.environ, "TEMPORAL_ADDRESS": bare.client.service_client.config.target_host, "LOG_FORMAT": "json"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 1
        assert "worker not started" in err.decode() and "IncidentPhase" in err.decode()

        await register_search_attributes(bare.client, bare.client.namespace)
        assert await check_search_attributes(bare.client, bare.client.namespace) is True
    finally:
        await bare.shutdown()


async def test_a_server_that_cannot_list_search_attributes_is_not_a_reason_to_stop(
    own_time_skipping_env: WorkflowEnvironment,
) -> None:
    assert await check_search_attributes(own_time_skipping_env.client, own_time_skipping_env.client.namespace) is False
