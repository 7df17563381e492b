"""The IncidentWorkflow acting on a cluster: policy, governor, server-side dry run, exactly-once apply, verification
that undoes the agent's own change when it made things worse, and the next cause's plan when it changed nothing.

Kubernetes is the kmock emulator over real HTTP, driven by the real executor through the official client, holding
an excerpt of a real bad-deploy cluster (Deployment ``search`` in ``food``, four revisions). The emulator records
every mutating request, so each test counts what reached the cluster.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.remediation import RemediationActivities
from config.settings import Settings
from frontdoor.gateway import IncidentGateway
from models.evidence import MetricEvidence, SeriesChange
from models.incident import Decision, IncidentSettings, IncidentState, Phase, PromSeries
from models.remediation import ACTION_ID_ANNOTATION, KillSwitchRequest
from tests.fixtures.kube import KubeAPI, kube_api, load_document
from tests.harness import (
    FakeKubernetes,
    FakePrometheus,
    RecordingNotifier,
    alert,
    capture,
    governor_id,
    incident_worker,
    notification,
    wait_for,
    wait_for_phase,
)
from workflows.governor import governor_state, set_killswitch_with_start
from workflows.incident import IncidentWorkflow

PAYLOADS = Path(__file__).parent / "payloads"
REVISION = "deployment.kubernetes.io/revision"


@dataclass
class Cluster:
    env: WorkflowEnvironment
    gateway: IncidentGateway
    prometheus: FakePrometheus
    kubernetes: FakeKubernetes
    api: KubeAPI
    task_queue: str

    async def open(self) -> tuple[WorkflowHandle, IncidentState]:
        group_key = f'{{}}:{{alertname="HighErrorRate", test="{self.task_queue}"}}'
        delivery = await self.gateway.deliver(notification(alert(), group_key=group_key))
        handle = self.env.client.get_workflow_handle_for(IncidentWorkflow.run, delivery.workflow_id)
        return handle, await wait_for_phase(handle, Phase.awaiting_approval)

    def search(self) -> dict[str, Any]:
        return copy.deepcopy(self.api.emulator.objects["apps/v1/deployments", "food", "search"].raw)

    def changes(self) -> list[Any]:
        return self.api.emulator.mutations()


def template_of_revision(revision: str) -> dict[str, Any]:
    document = load_document(PAYLOADS / "kube_bad_deploy.json")
    replicaset = next(
        item
        for item in document["items"]
        if item["kind"] == "ReplicaSet"
        and item["metadata"].get("annotations", {}).get(REVISION) == revision
        and item["metadata"]["name"].startswith("search-")
    )
    template = copy.deepcopy(replicaset["spec"]["template"])
    template["metadata"].get("labels", {}).pop("pod-template-hash", None)
    return template


async def _cluster(env: WorkflowEnvironment, task_queue: str, tmp_path: Path, *, dry_run: bool) -> AsyncIterator:
    settings = Settings(_env_file=None, temporal_task_queue=task_queue)  # type: ignore[call-arg]
    gateway = IncidentGateway(env.client, settings, IncidentSettings(approval_timeout_s=900, verify_after_s=300))
    prometheus, notifier, kubernetes = FakePrometheus(), RecordingNotifier(), FakeKubernetes()
    async with kube_api(tmp_path, load_document(PAYLOADS / "kube_bad_deploy.json")) as api:
        executor = RemediationActivities(api.client())
        async with incident_worker(
            env.client, task_queue, prometheus, notifier, kubernetes, executor=executor, dry_run=dry_run
        ):
            yield Cluster(env, gateway, prometheus, kubernetes, api, task_queue)


@pytest_asyncio.fixture
async def cluster(own_time_skipping_env: WorkflowEnvironment, task_queue: str, tmp_path: Path):
    async for value in _cluster(own_time_skipping_env, task_queue, tmp_path, dry_run=False):
        yield value


@pytest_asyncio.fixture
async def dry_cluster(own_time_skipping_env: WorkflowEnvironment, task_queue: str, tmp_path: Path):
    async for value in _cluster(own_time_skipping_env, task_queue, tmp_path, dry_run=True):
        yield value


async def test_an_approved_rollback_restores_the_previous_template_exactly_once(cluster: Cluster) -> None:
    handle, waiting = await cluster.open()
    assert waiting.plan is not None and waiting.plan.actions[0].type == "rollback"
    assert waiting.policy and waiting.policy[0]["allowed"] and waiting.policy[0]["requires_approval"]
    assert cluster.changes() == []  # nothing reaches the cluster before a person decides

    cluster.prometheus.series = []  # the rollback works
    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice"))
    verifying = await wait_for_phase(handle, Phase.verifying)
    [record] = verifying.actions_taken
    assert record.mode == "applied" and record.action_id.endswith("/0")
    assert cluster.search()["spec"]["template"] == template_of_revision("3")
    assert cluster.search()["metadata"]["annotations"][ACTION_ID_ANNOTATION] == record.action_id
    assert len(cluster.changes()) == 1

    await cluster.env.sleep(301)
    final = await handle.result()
    assert final.outcome == "resolved"
    await capture(handle, "remediation_applied_resolved")
    assert len(cluster.changes()) == 1  # verification reads; it changes nothing
    ledger = (await governor_state(cluster.env.client, workflow_id=governor_id(cluster.task_queue))).ledger
    assert [(entry.action_id, entry.outcome) for entry in ledger] == [(record.action_id, "applied")]


async def test_a_dry_run_incident_records_the_would_be_change_and_changes_nothing(dry_cluster: Cluster) -> None:
    before = dry_cluster.search()
    handle, _ = await dry_cluster.open()
    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice"))
    verifying = await wait_for_phase(handle, Phase.verifying)
    [record] = verifying.actions_taken
    assert record.mode == "dry_run" and "revision 3" in record.result
    assert dry_cluster.changes() == [] and dry_cluster.api.emulator.mutations(dry_run=True)
    assert dry_cluster.search() == before


async def test_a_rejected_or_unanswered_plan_changes_nothing(cluster: Cluster) -> None:
    handle, _ = await cluster.open()
    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=False, by="alice", reason="not now"))
    rejected = await wait_for_phase(handle, Phase.escalated)
    assert rejected.actions_taken == [] and cluster.changes() == []


async def test_no_decision_within_the_timeout_changes_nothing(cluster: Cluster) -> None:
    handle, _ = await cluster.open()
    await cluster.env.sleep(901)
    escalated = await wait_for_phase(handle, Phase.escalated)
    assert escalated.escalation_reason and "no decision" in escalated.escalation_reason
    assert cluster.changes() == []


async def test_the_kill_switch_stops_an_approved_plan(cluster: Cluster) -> None:
    handle, _ = await cluster.open()
    await set_killswitch_with_start(
        cluster.env.client,
        cluster.task_queue,
        KillSwitchRequest(on=True, by="sre-lead", reason="freeze all changes"),
        workflow_id=governor_id(cluster.task_queue),
    )
    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice"))
    stopped = await wait_for_phase(handle, Phase.escalated)
    [record] = stopped.actions_taken
    assert record.mode == "refused" and "kill switch" in record.result
    assert stopped.escalation_reason and "kill switch" in stopped.escalation_reason
    assert cluster.changes() == [] and cluster.api.emulator.mutations(dry_run=True) == []


async def test_a_403_from_kubernetes_escalates_with_the_reason(cluster: Cluster) -> None:
    cluster.api.emulator.forbid("/apis/apps/v1/namespaces/food/deployments/search", status=403)
    handle, _ = await cluster.open()
    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice"))
    failed = await wait_for_phase(handle, Phase.escalated)
    [record] = failed.actions_taken
    assert record.mode == "failed" and "forbidden" in record.result
    assert failed.escalation_reason and "forbidden" in failed.escalation_reason
    assert cluster.changes() == []


async def test_a_change_that_made_things_worse_is_undone(cluster: Cluster) -> None:
    original = cluster.search()["spec"]["template"]
    handle, _ = await cluster.open()  # the alert expression stands at 0.35 when the incident looks
    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice"))
    await wait_for_phase(handle, Phase.verifying)
    cluster.prometheus.series = [PromSeries(labels={"namespace": "food", "service": "search"}, value=0.9)]
    await cluster.env.sleep(301)
    escalated = await wait_for_phase(handle, Phase.escalated)

    assert [r.mode for r in escalated.actions_taken] == ["applied", "undone"]
    assert escalated.escalation_reason == "the change made things worse, so the agent undid its own change"
    await capture(handle, "remediation_made_worse_undone")
    assert cluster.search()["spec"]["template"] == original
    assert len(cluster.changes()) == 2  # the rollback and its undo, once each


async def test_a_change_that_changed_nothing_leads_to_the_next_causes_plan(cluster: Cluster) -> None:
    # Demand also tripled: a surge is the runner-up cause, with a scale-up of its own.
    cluster.prometheus.metric_evidence = MetricEvidence(
        findings=[
            SeriesChange(
                metric="request_rate",
                workload="search",
                labels={"namespace": "food", "service": "search"},
                query="q",
                baseline=100,
                recent=300,
                change=200,
                ratio=3.0,
                score=20,
                direction="up",
                summary="requests per second of search rose from 100 to 300 (x3)",
            )
        ]
    )
    handle, first = await cluster.open()
    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice"))
    await wait_for_phase(handle, Phase.verifying)
    await cluster.env.sleep(301)  # the alert expression still stands at 0.35: the rollback changed nothing
    second = await wait_for(handle, lambda s: s.phase == Phase.awaiting_approval and s.plans_tried == 1)

    assert second.plan is not None and first.plan is not None and second.plan.id != first.plan.id
    assert [(a.type, a.target) for a in second.plan.actions] == [("scale_up", "search")]
    assert any(e.kind == "next_plan" for e in second.timeline)
    await capture(handle, "remediation_next_plan")
    assert len(cluster.changes()) == 1  # only the first plan acted; the second waits for a person


async def test_an_alert_that_clears_while_the_runbooks_check_still_fails_is_not_resolved(cluster: Cluster) -> None:
    group_key = f'{{}}:{{alertname="KubePodCrashLooping", test="{cluster.task_queue}"}}'
    crashing = alert(alertname="KubePodCrashLooping")
    delivery = await cluster.gateway.deliver(notification(crashing, group_key=group_key))
    handle = cluster.env.client.get_workflow_handle_for(IncidentWorkflow.run, delivery.workflow_id)
    waiting = await wait_for_phase(handle, Phase.awaiting_approval)  # search was rolled out: a bad deploy
    check = 'kube_deployment_status_replicas_unavailable{namespace="food", deployment="search"} > 0'
    assert waiting.verify_query == check

    cluster.prometheus.series = []  # the alert's own expression clears ...
    cluster.prometheus.other_expressions[check] = [PromSeries(labels={"deployment": "search"}, value=2)]
    await handle.execute_update(IncidentWorkflow.decide, Decision(approve=True, by="alice"))
    await wait_for_phase(handle, Phase.verifying)
    await cluster.env.sleep(301)
    escalated = await wait_for_phase(handle, Phase.escalated)  # ... but two replicas are still unavailable

    assert [(v.method, v.outcome) for v in escalated.verification] == [("runbook", "still_failing")]
    assert escalated.escalation_reason == "the runbook's check for the cause still fails after remediation"
