"""Crash proof: the worker process is killed with SIGKILL after its rollback reached the cluster and before it heard
back. A new worker takes the action over, and the cluster sees exactly one change.

Real parts: the Temporal dev server, ``python worker.py`` as a subprocess (DRY_RUN=false), the Kubernetes
emulator over HTTP holding a real bad-deploy cluster excerpt (search rolled out four minutes before the alert).
The emulator stores the rollback, then holds its answer until the worker is dead.
"""

from __future__ import annotations

import asyncio
import signal
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from frontdoor.gateway import IncidentGateway
from models.incident import Decision, IncidentSettings, Phase
from models.remediation import ACTION_ID_ANNOTATION
from tests.e2e.stack import ROOT, bad_deploy_cluster, worker_process
from tests.fixtures.kube import kube_api, load_document
from tests.harness import alert, notification, wait_for
from workflows.incident import IncidentWorkflow

REVISION = "deployment.kubernetes.io/revision"


async def test_a_worker_killed_right_after_applying_a_rollback_applies_it_exactly_once(
    dev_server: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    starts_at = datetime.now(UTC) - timedelta(minutes=2)
    address = dev_server.client.service_client.config.target_host
    log = tmp_path / "worker.log"
    settings = Settings(_env_file=None, temporal_address=address, temporal_task_queue=task_queue)  # type: ignore[call-arg]
    gateway = IncidentGateway(dev_server.client, settings, IncidentSettings(verify_after_s=1))
    previous = next(
        item["spec"]["template"]
        for item in load_document(ROOT / "tests" / "payloads" / "kube_bad_deploy.json")["items"]
        if item["kind"] == "ReplicaSet" and item["metadata"]["annotations"].get(REVISION) == "3"
    )

    async with kube_api(tmp_path, bad_deploy_cluster(starts_at - timedelta(minutes=4))) as api:
        api.emulator.hold_after_change = asyncio.Event()
        first = worker_process(address, task_queue, api.kubeconfig, log)
        process = first.__enter__()
        try:
            group = f'{{}}:{{alertname="HighErrorRate", test="{task_queue}"}}'
            delivery = await gateway.deliver(notification(alert(starts_at=starts_at), group_key=group))
            handle = dev_server.client.get_workflow_handle_for(IncidentWorkflow.run, delivery.workflow_id)
            waiting = await wait_for(handle, lambda s: s.phase == Phase.awaiting_approval, timeout_s=60)
            assert waiting.plan is not None and [a.type for a in waiting.plan.actions] == ["rollback"]
            assert waiting.dry_run is False

            await handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice"))
            await asyncio.wait_for(api.emulator.changed.wait(), timeout=30)
            process.send_signal(signal.SIGKILL)  # the rollback is stored; the worker never hears so
            process.wait()
        finally:
            first.__exit__(None, None, None)
        api.emulator.hold_after_change.set()
        api.emulator.hold_after_change = None

        with worker_process(address, task_queue, api.kubeconfig, log):
            done = await wait_for(handle, lambda s: s.phase in (Phase.escalated, Phase.closed), timeout_s=60)

        deployment = api.emulator.objects["apps/v1/deployments", "food", "search"].raw
        changes = api.emulator.mutations()

    [record] = done.actions_taken
    assert record.mode == "already_applied", log.read_text()[-3000:]
    assert len(changes) == 1  # one rollback reached the cluster, whatever the crash
    assert deployment["metadata"]["annotations"][ACTION_ID_ANNOTATION] == record.action_id
    expected = dict(previous)
    expected["metadata"] = {
        **previous["metadata"],
        "labels": {k: v for k, v in previous["metadata"].get("labels", {}).items() if k != "pod-template-hash"},
    }
    assert deployment["spec"]["template"] == expected
    with suppress(Exception):
        await dev_server.client.get_workflow_handle("incident-agent-governor").terminate("test over")
