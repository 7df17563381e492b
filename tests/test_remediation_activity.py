"""RemediationActivities through the official client, over HTTP, against kmock's Kubernetes emulator.

The emulator holds ``tests/payloads/kube_bad_deploy.json`` (namespace food): Deployment search at revision 4 with
the ReplicaSets of revisions 1-4 (3 replicas, container search with a 512Mi memory limit and a 256Mi request),
its pods, cart (3 revisions), gateway (only its current revision kept), the StatefulSet pod pg-main-0 and three
schedulable nodes. ``strict_patches`` is on: a patch sent with the wrong content type fails as on the API server.

Every test counts the requests that reached the emulator: ``mutations()`` the real writes, ``mutations(dry_run=
True)`` the ``dryRun=All`` ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.errors import SOURCE_FORBIDDEN, SOURCE_NOT_CONFIGURED, SOURCE_UNAVAILABLE
from activities.kubernetes import POD_TEMPLATE_HASH, RESTARTED_AT
from activities.remediation import (
    ACTION_REJECTED,
    BEFORE_ANNOTATION,
    TARGET_CONFLICT,
    TARGET_NOT_FOUND,
    RemediationActivities,
)
from models.incident import Action, ActionType
from models.remediation import ACTION_ID_ANNOTATION, ExecuteRequest, UndoRequest
from tests.fixtures.kube import KubeAPI, kube_api, load_document

PAYLOADS = Path(__file__).parent / "payloads"
NS = "food"
POD = "search-894587957d-6tfqq"
NODE = "ip-10-0-46-97.us-east-1.compute.internal"
DEPLOYMENTS = "apps/v1/deployments"

ACTIONS: dict[str, Action] = {
    "scale_up": Action(type=ActionType.scale_up, namespace=NS, target="search", params={"factor": 1.5}),
    "rollout_restart": Action(type=ActionType.rollout_restart, namespace=NS, target="search"),
    "rollback": Action(type=ActionType.rollback, namespace=NS, target="search"),
    "raise_memory_limit": Action(
        type=ActionType.raise_memory_limit, namespace=NS, target="search", params={"factor": 1.5}
    ),
    "delete_pod": Action(type=ActionType.delete_pod, namespace=NS, target=POD),
    "cordon_node": Action(type=ActionType.cordon_node, target=NODE),
}
# The object each action changes and where its action id is recorded (delete_pod: the pod's Deployment).
RECORD = {name: (DEPLOYMENTS, NS, "search") for name in ACTIONS} | {"cordon_node": ("v1/nodes", None, NODE)}
# Real requests an apply takes: one PATCH, and for delete_pod the PATCH of the record and the DELETE.
WRITES = {name: 1 for name in ACTIONS} | {"delete_pod": 2}
UNDOABLE = [name for name in ACTIONS if name != "delete_pod"]


def bad_deploy() -> dict[str, Any]:
    return load_document(PAYLOADS / "kube_bad_deploy.json")


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, document: dict[str, Any] | None = None) -> AsyncIterator[KubeAPI]:
    async with kube_api(tmp_path, document or bad_deploy()) as api:
        api.emulator.strict_patches = True
        yield api


@contextlib.contextmanager
def remediation(api: KubeAPI, **options: Any) -> Iterator[RemediationActivities]:
    client = api.client()
    try:
        yield RemediationActivities(client, **options)
    finally:
        client.close()


async def execute(acts: RemediationActivities, action: Action, *, dry_run: bool = False, action_id: str = "a-1") -> Any:
    request = ExecuteRequest(workflow_id="incident-test", action_id=action_id, action=action, dry_run=dry_run)
    return await ActivityEnvironment().run(acts.execute_action, request)


async def undo(
    acts: RemediationActivities,
    action: Action,
    before: dict[str, Any],
    *,
    dry_run: bool = False,
    action_id: str = "a-1",
) -> Any:
    request = UndoRequest(
        workflow_id="incident-test", action_id=action_id, action=action, before=before, dry_run=dry_run
    )
    return await ActivityEnvironment().run(acts.undo_action, request)


async def failure(call: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await call
    return caught.value


def stored(api: KubeAPI, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    obj = api.emulator.objects[resource, namespace, name]
    return None if obj.deleted else copy.deepcopy(dict(obj.raw))


def search(api: KubeAPI) -> dict[str, Any]:
    deployment = stored(api, DEPLOYMENTS, NS, "search")
    assert deployment is not None
    return deployment


def snapshot(api: KubeAPI) -> dict[Any, Any]:
    return {key: None if obj.deleted else copy.deepcopy(dict(obj.raw)) for key, obj in api.emulator.objects.items()}


def annotations_of(obj: dict[str, Any] | None) -> dict[str, str]:
    assert obj is not None
    return dict(obj["metadata"].get("annotations") or {})


def template_of_revision(document: dict[str, Any], revision: str) -> dict[str, Any]:
    for item in document["items"]:
        meta = item["metadata"]
        ours = item["kind"] == "ReplicaSet" and meta["name"].startswith("search-")
        if ours and meta["annotations"]["deployment.kubernetes.io/revision"] == revision:
            return copy.deepcopy(item["spec"]["template"])
    raise AssertionError(f"no revision {revision}")


def edit_search(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    document = bad_deploy()
    for item in document["items"]:
        if item["kind"] == "Deployment" and item["metadata"]["name"] == "search":
            change(item)
    return document


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return first


# --- dry run: the API server judges, nothing changes ---------------------------------------------------------


@pytest.mark.parametrize("name", list(ACTIONS))
async def test_a_dry_run_is_judged_by_the_server_and_changes_nothing(tmp_path: Path, name: str) -> None:
    async with serving(tmp_path) as api:
        untouched = snapshot(api)
        with remediation(api) as acts:
            result = await execute(acts, ACTIONS[name], dry_run=True)

        assert result.mode == "dry_run"
        assert result.detail.startswith("dry run, nothing changed: would ")
        assert snapshot(api) == untouched
        assert api.emulator.mutations() == []
        assert len(api.emulator.mutations(dry_run=True)) == WRITES[name]
        assert ACTION_ID_ANNOTATION not in annotations_of(stored(api, *RECORD[name]))


async def test_a_dry_run_reports_the_servers_would_be_object(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        with remediation(api) as acts:
            scale = await execute(acts, ACTIONS["scale_up"], dry_run=True)
            memory = await execute(acts, ACTIONS["raise_memory_limit"], dry_run=True)
            rollback = await execute(acts, ACTIONS["rollback"], dry_run=True)

    assert (scale.before, scale.after) == ({"replicas": 3}, {"replicas": 5})
    assert "scale Deployment food/search from 3 to 5 replicas" in scale.detail
    assert "replicas=5" in scale.detail
    assert memory.after == {"limits": {"search": "768Mi"}}
    assert rollback.after == {"revision": 3, "images": ["registry.example.com/search:v2.22.15"]}
    assert "revision 4 (search:v2.23.1) to the pod template of revision 3 (search:v2.22.15" in rollback.detail


# --- apply: each action changes what it says, once ---------------------------------------------------------------


async def test_scale_up_multiplies_the_replicas_rounding_up_and_records_the_action(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        with remediation(api) as acts:
            result = await execute(acts, ACTIONS["scale_up"], action_id="scale-7")
        after = search(api)
        (patch,) = api.emulator.mutations()

    assert result.mode == "applied"
    assert (result.before, result.after) == ({"replicas": 3}, {"replicas": 5})
    assert after["spec"]["replicas"] == 5
    assert annotations_of(after)[ACTION_ID_ANNOTATION] == "scale-7"
    assert json.loads(annotations_of(after)[BEFORE_ANNOTATION]) == {"replicas": 3}
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert patch.params.get("fieldManager") == "incident-agent"
    # The patch is conditional on the version it was computed from, and the server stored a new one.
    assert patch.data["metadata"]["resourceVersion"] == "14278373"
    assert int(after["metadata"]["resourceVersion"]) > 14278373
    assert after["metadata"]["generation"] == 5


async def test_scale_up_by_a_factor_stops_at_the_policys_replica_ceiling(tmp_path: Path) -> None:
    action = Action(type=ActionType.scale_up, namespace=NS, target="search", params={"factor": 2, "max_replicas": 4})
    async with serving(tmp_path) as api:
        with remediation(api) as acts:
            result = await execute(acts, action)
        assert search(api)["spec"]["replicas"] == 4  # 3 x 2 = 6, capped at 4

    assert (result.before, result.after) == ({"replicas": 3}, {"replicas": 4})


async def test_scale_up_to_a_replica_count_and_refusals_of_anything_but_an_increase(tmp_path: Path) -> None:
    def scale(**params: Any) -> Action:
        return Action(type=ActionType.scale_up, namespace=NS, target="search", params=params)

    async with serving(tmp_path) as api:
        with remediation(api) as acts:
            same = await failure(execute(acts, scale(replicas=3)))
            fewer = await failure(execute(acts, scale(replicas=2)))
            unit = await failure(execute(acts, scale(factor=1)))
            nonsense = await failure(execute(acts, scale(factor="lots")))
            assert api.emulator.mutations(dry_run=True) == []
            result = await execute(acts, scale(replicas=6))
        assert search(api)["spec"]["replicas"] == 6

    assert result.before == {"replicas": 3}
    for error in (same, fewer, unit, nonsense):
        assert error.type == ACTION_REJECTED
        assert error.non_retryable
    assert "not an increase over the current 3" in same.message
    assert "factor must be a number" in nonsense.message


async def test_rollback_restores_exactly_the_previous_revisions_template(tmp_path: Path) -> None:
    document = bad_deploy()
    revision_3 = template_of_revision(document, "3")
    assert POD_TEMPLATE_HASH in revision_3["metadata"]["labels"]
    del revision_3["metadata"]["labels"][POD_TEMPLATE_HASH]

    async with serving(tmp_path, document) as api:
        original = search(api)["spec"]["template"]
        with remediation(api) as acts:
            result = await execute(acts, ACTIONS["rollback"])
        after = search(api)
        (patch,) = api.emulator.mutations()

    assert after["spec"]["template"] == revision_3
    assert after["spec"]["template"] != original
    assert container(after)["image"] == "registry.example.com/search:v2.22.15"
    assert result.before == {"template": original, "revision": 4}
    assert result.after == {"revision": 3, "images": ["registry.example.com/search:v2.22.15"]}
    assert annotations_of(after)[ACTION_ID_ANNOTATION] == "a-1"
    assert annotations_of(after)["kubernetes.io/change-cause"] == "deploy search v2.23.1 (pipeline 8812)"  # kept
    assert patch.headers["Content-Type"] == "application/json-patch+json"
    assert {"op": "add", "path": "/metadata/resourceVersion", "value": "14278373"} in patch.data


async def test_rollback_without_a_previous_revision_or_of_a_paused_deployment_is_rejected(tmp_path: Path) -> None:
    paused = edit_search(lambda d: d["spec"].update(paused=True))
    async with serving(tmp_path, paused) as api:
        with remediation(api) as acts:
            # gateway's ReplicaSets of revisions before its current 3 were cleaned up.
            alone = await failure(execute(acts, Action(type=ActionType.rollback, namespace=NS, target="gateway")))
            held = await failure(execute(acts, ACTIONS["rollback"]))
        assert api.emulator.mutations() == api.emulator.mutations(dry_run=True) == []

    assert (alone.type, held.type) == (ACTION_REJECTED, ACTION_REJECTED)
    assert "no revision before its current revision 3 to roll back to (revisions kept: 3)" in alone.message
    assert "paused" in held.message


async def test_rollout_restart_stamps_the_pod_template_and_changes_nothing_else_of_it(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        original = search(api)["spec"]["template"]
        with remediation(api) as acts:
            result = await execute(acts, ACTIONS["rollout_restart"])
        template = search(api)["spec"]["template"]

    stamp = template["metadata"].pop("annotations")[RESTARTED_AT]
    assert template == original
    assert abs(datetime.fromisoformat(stamp) - datetime.now(UTC)) < timedelta(minutes=1)
    assert result.after == {"restarted_at": stamp}
    assert result.before == {"template": original, "restarted_at": None}


@pytest.mark.parametrize(
    ("limit", "request_", "factor", "new_limit", "new_request"),
    [
        ("512Mi", "256Mi", 1.5, "768Mi", "256Mi"),
        ("1Gi", "256Mi", 2, "2048Mi", "256Mi"),
        ("500M", "100M", 1.5, "716Mi", "100M"),  # 750e6 bytes is 715.3Mi: rounded up to a whole Mi
        ("1e9", "1e9", 1.5, "1431Mi", "1e9"),  # 1.5e9 bytes is 1430.5Mi
        ("256Mi", "1Gi", 1.5, "384Mi", "384Mi"),  # a request above the new limit comes down to it
    ],
)
async def test_raise_memory_limit_multiplies_each_limit_as_whole_mebibytes(
    tmp_path: Path, limit: str, request_: str, factor: float, new_limit: str, new_request: str
) -> None:
    def resources(deployment: dict[str, Any]) -> None:
        container(deployment)["resources"] = {"limits": {"memory": limit, "cpu": "1"}, "requests": {"memory": request_}}

    action = Action(type=ActionType.raise_memory_limit, namespace=NS, target="search", params={"factor": factor})
    async with serving(tmp_path, edit_search(resources)) as api:
        with remediation(api) as acts:
            result = await execute(acts, action)
        after = container(search(api))["resources"]

    assert after == {"limits": {"memory": new_limit, "cpu": "1"}, "requests": {"memory": new_request}}
    assert result.before["limits"] == {"search": limit}
    assert result.after == {"limits": {"search": new_limit}}


async def test_raise_memory_limit_without_a_limit_or_below_one_is_rejected(tmp_path: Path) -> None:
    unlimited = edit_search(lambda d: container(d)["resources"]["limits"].pop("memory"))
    async with serving(tmp_path, unlimited) as api:
        with remediation(api) as acts:
            none = await failure(execute(acts, ACTIONS["raise_memory_limit"]))
            lower = await failure(
                execute(
                    acts,
                    Action(type=ActionType.raise_memory_limit, namespace=NS, target="search", params={"factor": 0.5}),
                )
            )
        assert api.emulator.mutations() == []

    assert none.type == lower.type == ACTION_REJECTED
    assert "no container of Deployment food/search has a memory limit" in none.message
    assert "factor above 1" in lower.message


async def test_delete_pod_records_the_action_on_its_deployment_then_deletes_that_very_pod(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        with remediation(api) as acts:
            result = await execute(acts, ACTIONS["delete_pod"], action_id="del-1")
        record, delete = api.emulator.mutations()
        deployment = search(api)
        gone = stored(api, "v1/pods", NS, POD)

    assert gone is None
    assert (record.method.value, record.url.path) == ("PATCH", "/apis/apps/v1/namespaces/food/deployments/search")
    assert (delete.method.value, delete.url.path) == ("DELETE", f"/api/v1/namespaces/food/pods/{POD}")
    assert delete.data["preconditions"] == {"uid": "40a222c9-58f6-4ac1-8085-51d3e16822a6"}
    assert annotations_of(deployment)[ACTION_ID_ANNOTATION] == "del-1"
    assert deployment["spec"]["replicas"] == 3 and deployment["metadata"]["generation"] == 4  # no rollout
    assert result.before == {"pod": POD, "deployment": "search"}
    assert "Deployment search creates a replacement" in result.detail


async def test_delete_pod_retried_after_the_pod_is_gone_finds_its_record(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        with remediation(api) as acts:
            first = await execute(acts, ACTIONS["delete_pod"], action_id="del-1")
            again = await execute(acts, ACTIONS["delete_pod"], action_id="del-1")
            other = await failure(execute(acts, ACTIONS["delete_pod"], action_id="del-2"))
        assert len(api.emulator.mutations()) == 2

    assert (first.mode, again.mode) == ("applied", "already_applied")
    assert again.before == first.before
    assert other.type == TARGET_NOT_FOUND and other.non_retryable


async def test_delete_pod_that_stopped_between_record_and_delete_only_deletes(tmp_path: Path) -> None:
    def recorded(deployment: dict[str, Any]) -> None:
        deployment["metadata"]["annotations"][ACTION_ID_ANNOTATION] = "del-1"

    async with serving(tmp_path, edit_search(recorded)) as api:
        with remediation(api) as acts:
            result = await execute(acts, ACTIONS["delete_pod"], action_id="del-1")
        (delete,) = api.emulator.mutations()
        assert stored(api, "v1/pods", NS, POD) is None

    assert result.mode == "applied"
    assert delete.method.value == "DELETE"


async def test_delete_pod_without_an_owning_deployment_records_the_action_on_the_pod(tmp_path: Path) -> None:
    action = Action(type=ActionType.delete_pod, namespace=NS, target="pg-main-0")  # a StatefulSet's pod
    async with serving(tmp_path) as api:
        with remediation(api) as acts:
            result = await execute(acts, action)
            # Gone with its record: a retry cannot tell this deletion from anyone else's.
            retried = await failure(execute(acts, action))
        record, delete = api.emulator.mutations()

    assert result.before == {"pod": "pg-main-0"}
    assert record.url.path == delete.url.path == "/api/v1/namespaces/food/pods/pg-main-0"
    assert record.data["metadata"]["annotations"][ACTION_ID_ANNOTATION] == "a-1"
    assert retried.type == TARGET_NOT_FOUND


async def test_cordon_node_marks_it_unschedulable(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        with remediation(api) as acts:
            result = await execute(acts, ACTIONS["cordon_node"])
        node = stored(api, "v1/nodes", None, NODE)

    assert node is not None and node["spec"]["unschedulable"] is True
    assert annotations_of(node)[ACTION_ID_ANNOTATION] == "a-1"
    assert (result.before, result.after) == ({"unschedulable": False}, {"unschedulable": True})


# --- idempotency: the action id on the target ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ACTIONS))
async def test_the_same_action_twice_changes_the_cluster_once(tmp_path: Path, name: str) -> None:
    async with serving(tmp_path) as api:
        with remediation(api) as acts:
            first = await execute(acts, ACTIONS[name], action_id="once")
            state = snapshot(api)
            dry_runs = len(api.emulator.mutations(dry_run=True))
            second = await execute(acts, ACTIONS[name], action_id="once")
            dry = await execute(acts, ACTIONS[name], action_id="once", dry_run=True)

        assert len(api.emulator.mutations()) == WRITES[name]
        assert len(api.emulator.mutations(dry_run=True)) == dry_runs  # the repeat did not even dry-run
        assert snapshot(api) == state

    assert first.mode == "applied"
    assert second.mode == dry.mode == "already_applied"
    assert second.before == first.before  # read back from the target: the workflow can still undo it
    assert f"{ACTION_ID_ANNOTATION}=once" in second.detail


async def test_a_different_action_id_is_a_different_action(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        with remediation(api) as acts:
            await execute(acts, ACTIONS["scale_up"], action_id="first")
            second = await execute(acts, ACTIONS["scale_up"], action_id="second")
        assert search(api)["spec"]["replicas"] == 8

    assert (second.mode, second.before) == ("applied", {"replicas": 5})


async def test_a_target_changed_between_the_read_and_the_patch_is_a_retryable_conflict(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        client = api.client()
        acts = RemediationActivities(client)
        assert acts._apps is not None
        read = acts._apps.read_namespaced_deployment

        def read_then_someone_else_writes(*args: Any, **kwargs: Any) -> Any:
            answer = read(*args, **kwargs)
            other = k8s_client.AppsV1Api(client)
            body = {"metadata": {"labels": {"touched": "yes"}}}
            other.patch_namespaced_deployment("search", NS, body, _content_type="application/merge-patch+json")
            return answer

        acts._apps.read_namespaced_deployment = read_then_someone_else_writes  # type: ignore[method-assign]
        try:
            conflict = await failure(execute(acts, ACTIONS["scale_up"]))
            acts._apps.read_namespaced_deployment = read  # type: ignore[method-assign]
            retried = await execute(acts, ACTIONS["scale_up"])
        finally:
            client.close()
        assert search(api)["spec"]["replicas"] == 5

    assert conflict.type == TARGET_CONFLICT
    assert not conflict.non_retryable
    assert "the object has been modified" in conflict.message
    assert retried.mode == "applied"


# --- undo: the inverse of the agent's own change ----------------------------------------------------------------


@pytest.mark.parametrize("name", UNDOABLE)
async def test_undo_restores_what_the_action_changed_once(tmp_path: Path, name: str) -> None:
    async with serving(tmp_path) as api:
        original = stored(api, *RECORD[name])
        assert original is not None
        with remediation(api) as acts:
            applied = await execute(acts, ACTIONS[name])
            dry = await undo(acts, ACTIONS[name], applied.before, dry_run=True)
            changed = stored(api, *RECORD[name])
            undone = await undo(acts, ACTIONS[name], applied.before)
            again = await undo(acts, ACTIONS[name], applied.before)
        restored = stored(api, *RECORD[name])
        assert len(api.emulator.mutations()) == 2  # the apply and the undo

    assert restored is not None and changed is not None
    assert dry.mode == "dry_run"
    assert changed["spec"] != original["spec"]
    assert restored["spec"] == original["spec"]
    assert annotations_of(restored)[ACTION_ID_ANNOTATION] == "a-1/undo"
    assert (undone.mode, again.mode) == ("applied", "already_applied")


async def test_undo_after_a_rollback_brings_back_the_rolled_back_revisions_template(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        with remediation(api) as acts:
            applied = await execute(acts, ACTIONS["rollback"])
            result = await undo(acts, ACTIONS["rollback"], applied.before)
        image = container(search(api))["image"]

    assert image == "registry.example.com/search:v2.23.1"
    assert result.after == {"images": ["registry.example.com/search:v2.23.1"]}
    assert "before the agent's rollback (revision 4)" in result.detail


async def test_a_deleted_pod_cannot_be_undone_and_a_bad_before_is_rejected(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        with remediation(api) as acts:
            pod = await failure(undo(acts, ACTIONS["delete_pod"], {"pod": POD}))
            scale = await failure(undo(acts, ACTIONS["scale_up"], {}))
            template = await failure(undo(acts, ACTIONS["rollback"], {"revision": 3}))
        assert api.emulator.mutations() == api.emulator.mutations(dry_run=True) == []

    assert pod.type == scale.type == template.type == ACTION_REJECTED
    assert "a deleted pod cannot be brought back" in pod.message
    assert "no replica count" in scale.message
    assert "no pod template" in template.message


# --- failures -----------------------------------------------------------------------------------------------------

FORBIDDEN = {
    name: ("/apis/apps/v1/namespaces/food/deployments", "patch", "patch deployments/search in namespace food")
    for name in ACTIONS
} | {
    "delete_pod": ("/api/v1/namespaces/food/pods", "delete", f"delete pods/{POD} in namespace food"),
    "cordon_node": ("/api/v1/nodes", "patch", f"patch nodes/{NODE}"),
}


@pytest.mark.parametrize("name", list(ACTIONS))
async def test_a_forbidden_change_fails_naming_what_was_forbidden(tmp_path: Path, name: str) -> None:
    path, verb, what = FORBIDDEN[name]
    async with serving(tmp_path) as api:
        untouched = snapshot(api)
        api.emulator.forbid(path, verbs=[verb])
        with remediation(api) as acts:
            error = await failure(execute(acts, ACTIONS[name]))
        assert snapshot(api) == untouched
        assert api.emulator.mutations() == []

    assert error.type == SOURCE_FORBIDDEN
    assert error.non_retryable
    assert f"forbidden: the agent may not {what}" in error.message
    assert f'cannot {verb} resource "{path.rsplit("/", 1)[-1]}"' in error.message  # the API server's words


@pytest.mark.parametrize("name", list(ACTIONS))
async def test_a_missing_target_is_target_not_found(tmp_path: Path, name: str) -> None:
    action = ACTIONS[name].model_copy(update={"target": "nope"})
    async with serving(tmp_path) as api:
        with remediation(api) as acts:
            error = await failure(execute(acts, action))
            if name in UNDOABLE:
                undo_error = await failure(
                    undo(
                        acts,
                        action,
                        {"replicas": 3, "template": {"a": 1}, "limits": {"x": "1Mi"}, "unschedulable": False},
                    )
                )
                assert undo_error.type == TARGET_NOT_FOUND
        assert api.emulator.mutations() == []

    assert error.type == TARGET_NOT_FOUND
    assert error.non_retryable
    assert "nope" in error.message


async def test_an_unconfigured_cluster_or_a_non_change_is_refused(tmp_path: Path) -> None:
    acts = RemediationActivities(None)
    unconfigured = await failure(execute(acts, ACTIONS["scale_up"]))
    undo_unconfigured = await failure(undo(acts, ACTIONS["scale_up"], {"replicas": 3}))
    async with serving(tmp_path) as api:
        with remediation(api) as configured:
            escalate = await failure(execute(configured, Action(type=ActionType.escalate, namespace=NS, target="x")))
            no_namespace = await failure(execute(configured, Action(type=ActionType.scale_up, target="search")))

    assert unconfigured.type == undo_unconfigured.type == SOURCE_NOT_CONFIGURED
    assert unconfigured.non_retryable
    assert escalate.type == no_namespace.type == ACTION_REJECTED


async def test_an_api_server_that_does_not_answer_is_a_retryable_failure(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        api.emulator.hang("/apis/apps/v1/namespaces/food/deployments/search")
        with remediation(api, timeout_s=0.3) as acts:
            error = await failure(execute(acts, ACTIONS["scale_up"]))
        api.emulator.release()
        await asyncio.sleep(0)
        assert api.emulator.mutations() == []

    assert error.type == SOURCE_UNAVAILABLE
    assert not error.non_retryable
