"""Kubernetes API, write side: the remediation executor (the read side is activities/kubernetes.py).

Safety: every change goes through the official ``kubernetes`` client as a PATCH or a DELETE of one named object
(no command-line tool, no subprocess, no shell, no create, no apply). Each call runs in a worker thread with its
own request timeout, like the read side's.

How one action runs (``execute_action``; ``undo_action`` the same, with ``f"{action_id}/undo"`` as its marker):

1. Read the target. If it carries ``ACTION_ID_ANNOTATION`` equal to the marker, the action is already done (an
   activity retry, a replay, a crash between the apply and the activity's completion): mode ``already_applied``,
   no request that changes anything. For an execute, ``before`` is then read back from ``BEFORE_ANNOTATION``,
   which the apply wrote in the same request, so the workflow can still undo it.
2. Compute the change from what was read, and send every request it takes with ``dryRun=All``: the API server
   runs authorization, admission and validation and answers with the would-be object, persisting nothing. The
   dry run's answer is what ``after`` and ``detail`` describe. With ``request.dry_run`` it stops there.
3. Send the same requests for real. The marker is written by the request that makes the change (one PATCH
   carries the change and the annotations), so the two cannot be separated by a crash; and each PATCH carries
   the ``metadata.resourceVersion`` read in step 1, so a target changed by someone else since then is a 409
   (retryable: the retry starts again at step 1) instead of a change computed from a stale read.

Where the marker goes: on the Deployment for the Deployment actions, on the Node for a cordon. A deleted pod
disappears with its annotations, so delete_pod records the marker on the pod's owning Deployment (pod ->
ReplicaSet -> Deployment, by controller ownerReferences; metadata only, so it starts no rollout) in a PATCH just
before the DELETE, or on the pod itself when no Deployment owns it. A retry that finds the pod gone looks for a
Deployment of the namespace recording this action for this pod: found, it was this action; not found, the pod
is TargetNotFound (always the case for a pod without an owning Deployment whose deletion completed).

Errors, as typed ApplicationErrors: 401/403 ``SourceForbidden`` (non-retryable; the message names the verb, the
resource and the namespace that were refused, and the API server's words); 404 ``TargetNotFound``
(non-retryable); 422 ``ActionRejected`` (the API server found the change invalid; non-retryable); 409
``TargetConflict``, 408/429/5xx, timeouts and connection failures retryable; an action the executor refuses
(not an increase, no previous revision, no memory limit, a paused Deployment ...) ``ActionRejected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import SOURCE_FORBIDDEN, SOURCE_MISCONFIGURED, SOURCE_UNAVAILABLE, not_configured
from activities.kubernetes import (
    RESTARTED_AT,
    REVISION,
    _annotations,
    _images,
    _int,
    _name,
    _owned_by,
    _selector_string,
    _server_message,
    _template,
    call_for_json,
)
from activities.metrics import remediation_action
from models.incident import Action, ActionType
from models.remediation import ACTION_ID_ANNOTATION, ExecuteRequest, ExecuteResult, UndoRequest

log = structlog.get_logger(__name__)

HEARTBEAT_EVERY_S = 2.0
ACTION_REJECTED = "ActionRejected"
TARGET_NOT_FOUND = "TargetNotFound"
TARGET_CONFLICT = "TargetConflict"

# Written with ACTION_ID_ANNOTATION by an execute: the ``before`` of that action, as JSON, so that a retry which
# finds the action already applied can still hand the workflow what it needs to undo it. Valid only while
# ACTION_ID_ANNOTATION names the action that wrote it.
BEFORE_ANNOTATION = "incident-agent/before"
_BEFORE_MAX = 64 * 1024  # annotations share 256 KiB per object; a larger before is not recorded
FIELD_MANAGER = "incident-agent"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
DEFAULT_FACTOR = Decimal("1.5")
_MI = 2**20

_DEPLOYMENT_ACTIONS = {
    ActionType.rollback,
    ActionType.rollout_restart,
    ActionType.scale_up,
    ActionType.raise_memory_limit,
}


@dataclass(frozen=True)
class _Call:
    """One API request, described the way an RBAC denial would be."""

    verb: str
    resource: str
    name: str = ""
    namespace: str = ""

    def __str__(self) -> str:
        named = f"{self.resource}/{self.name}" if self.name else self.resource
        return f"{self.verb} {named}" + (f" in namespace {self.namespace}" if self.namespace else "")


@dataclass
class _Step:
    what: _Call
    method: Callable[..., Any]
    params: dict[str, Any]


@dataclass
class _Plan:
    """What an action will do to its target, computed from one read of it."""

    target: str  # "Deployment food/search", for the words
    marker: str  # the value of ACTION_ID_ANNOTATION that records this action (or this undo)
    done: bool  # the target already records this action (or this undo)
    describe: str  # the change, in words, starting with a verb
    before: dict[str, Any]
    steps: list[_Step] = field(default_factory=list)
    after: Callable[[dict[str, Any]], dict[str, Any]] = lambda _: {}
    current: dict[str, Any] = field(default_factory=dict)  # the target as read


class RemediationActivities:
    """Holds the API client for the worker's lifetime; constructed with None when nothing is configured."""

    def __init__(self, api_client: k8s_client.ApiClient | None, *, timeout_s: float = 10.0) -> None:
        self._api_client = api_client
        self._core = k8s_client.CoreV1Api(api_client) if api_client is not None else None
        self._apps = k8s_client.AppsV1Api(api_client) if api_client is not None else None
        self._timeout_s = timeout_s
        self._deadline_s = timeout_s * 1.5 + 1.0  # see KubernetesActivities

    @property
    def _host(self) -> str:
        return str(getattr(getattr(self._api_client, "configuration", None), "host", "") or "?")

    def _configured(self) -> None:
        if self._core is None or self._apps is None:
            raise not_configured("Kubernetes", "KUBECONFIG")

    @activity.defn
    async def execute_action(self, request: ExecuteRequest) -> ExecuteResult:
        """Dry-run the action on the API server, then (unless ``dry_run``) apply it once, marked with its id."""
        return await self._perform("execute", request.workflow_id, request.action_id, request.action, request.dry_run)

    @activity.defn
    async def undo_action(self, request: UndoRequest) -> ExecuteResult:
        """Revert the agent's own change from ``before`` (what ``execute_action`` returned), dry run first."""
        return await self._perform(
            "undo", request.workflow_id, request.action_id, request.action, request.dry_run, request.before
        )

    async def _perform(
        self,
        operation: str,
        workflow_id: str,
        action_id: str,
        action: Action,
        dry_run: bool,
        before: Mapping[str, Any] | None = None,
    ) -> ExecuteResult:
        where = {
            "operation": operation,
            "action_type": action.type.value,
            "namespace": action.namespace,
            "target": action.target,
            "action_id": action_id,
            "workflow_id": workflow_id,
        }
        try:
            if self._core is None or self._apps is None:
                raise not_configured("Kubernetes", "KUBECONFIG")
            _check(action)
            async with _heartbeating():
                if before is None:
                    plan = await self._plan(action, action_id)
                else:
                    plan = await self._undo_plan(action, f"{action_id}/undo", before)
                result = await self._run(action_id, dry_run, plan)
        except ApplicationError as exc:
            log.warning("remediation_action_failed", **where, error_type=exc.type, error=exc.message)
            remediation_action(operation, action.type.value, exc.type)
            raise
        log.info("remediation_action", **where, mode=result.mode)
        remediation_action(operation, action.type.value, result.mode)
        return result

    async def _plan(self, action: Action, marker: str) -> _Plan:
        if action.type is ActionType.scale_up:
            return await self._scale(action, marker)
        if action.type is ActionType.rollout_restart:
            return await self._restart(action, marker)
        if action.type is ActionType.rollback:
            return await self._rollback(action, marker)
        if action.type is ActionType.raise_memory_limit:
            return await self._raise_memory(action, marker)
        if action.type is ActionType.delete_pod:
            return await self._delete_pod(action, marker)
        if action.type is ActionType.cordon_node:
            return await self._cordon(action, marker)
        raise _rejected(f"the executor does not know how to {action.type.value}")

    async def _undo_plan(self, action: Action, marker: str, before: Mapping[str, Any]) -> _Plan:
        if action.type is ActionType.scale_up:
            return await self._unscale(action, marker, before)
        if action.type is ActionType.raise_memory_limit:
            return await self._restore_limits(action, marker, before)
        if action.type in (ActionType.rollback, ActionType.rollout_restart):
            return await self._restore_template(action, marker, before)
        if action.type is ActionType.cordon_node:
            return await self._uncordon(action, marker, before)
        if action.type is ActionType.delete_pod:
            raise _rejected(
                f"a deleted pod cannot be brought back: its controller has already replaced {action.target}; "
                "there is nothing of the agent's to undo"
            )
        raise _rejected(f"the executor does not know how to undo {action.type.value}")

    # ---- the common run: already done, dry run, apply ---------------------------------------------------------

    async def _run(self, action_id: str, dry_run: bool, plan: _Plan) -> ExecuteResult:
        if plan.done:
            result = ExecuteResult(
                action_id=action_id,
                mode="already_applied",
                detail=f"already applied: {plan.target} carries {ACTION_ID_ANNOTATION}={plan.marker}; nothing changed",
                before=plan.before,
                after=plan.after(plan.current),
            )
        else:
            answer: dict[str, Any] = {}
            for step in plan.steps:
                answer = await self._call(step.what, step.method, **step.params, dry_run="All")
            if dry_run:
                after = plan.after(answer)
                result = ExecuteResult(
                    action_id=action_id,
                    mode="dry_run",
                    detail=f"dry run, nothing changed: would {plan.describe}; the API server accepted it "
                    f"(dryRun=All){_words(after)}",
                    before=plan.before,
                    after=after,
                )
            else:
                for step in plan.steps:
                    answer = await self._call(step.what, step.method, **step.params)
                after = plan.after(answer)
                result = ExecuteResult(
                    action_id=action_id,
                    mode="applied",
                    detail=f"{plan.describe[:1].upper()}{plan.describe[1:]}{_words(after)}; "
                    f"recorded as {ACTION_ID_ANNOTATION}={plan.marker}",
                    before=plan.before,
                    after=after,
                )
        return result

    # ---- execute: one plan per action -------------------------------------------------------------------------

    async def _scale(self, action: Action, marker: str) -> _Plan:
        deployment = await self._deployment(action)
        current = _replicas(deployment)
        plan = _plan_on(deployment, "Deployment", action, marker, lambda doc: {"replicas": _replicas(doc)})
        if plan.done:
            return plan
        wanted = _scale_target(action.params, current)
        plan.before = {"replicas": current}
        plan.describe = f"scale {plan.target} from {current} to {wanted} replicas"
        body = _merge_record(deployment, marker, plan.before) | {"spec": {"replicas": wanted}}
        plan.steps = [self._patch_deployment(action, body, MERGE_PATCH)]
        return plan

    async def _restart(self, action: Action, marker: str) -> _Plan:
        deployment = await self._deployment(action)
        plan = _plan_on(deployment, "Deployment", action, marker, lambda doc: {"restarted_at": _restarted(doc)})
        if plan.done:
            return plan
        _not_paused(deployment, plan.target, "restart")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        plan.before = {"template": _deployment_template(deployment), "restarted_at": _restarted(deployment)}
        plan.describe = f"restart the pods of {plan.target} (pod template annotation {RESTARTED_AT}={now})"
        body = _merge_record(deployment, marker, plan.before)
        body["spec"] = {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}
        plan.steps = [self._patch_deployment(action, body, MERGE_PATCH)]
        return plan

    async def _rollback(self, action: Action, marker: str) -> _Plan:
        deployment = await self._deployment(action)
        plan = _plan_on(deployment, "Deployment", action, marker, lambda doc: {"images": _images(_spec_tpl(doc))})
        if plan.done:
            return plan
        _not_paused(deployment, plan.target, "roll back")
        current = _int(_annotations(deployment).get(REVISION))
        if current is None:
            raise _rejected(f"{plan.target} has no {REVISION} annotation: the deployment controller has not synced it")
        assert self._apps is not None
        ns = action.namespace
        selector = _selector_string((deployment.get("spec") or {}).get("selector") or {})
        listed = await self._call(
            _Call("list", "replicasets", namespace=ns),
            self._apps.list_namespaced_replica_set,
            namespace=ns,
            label_selector=selector,
        )
        revisions = sorted(
            (
                (revision, rs)
                for rs in _items(listed)
                if _owned_by(rs, deployment) and (revision := _int(_annotations(rs).get(REVISION))) is not None
            ),
            key=lambda item: item[0],
        )
        older = [(revision, rs) for revision, rs in revisions if revision < current]
        if not older:
            kept = ", ".join(str(revision) for revision, _ in revisions) or "none"
            raise _rejected(
                f"{plan.target} has no revision before its current revision {current} to roll back to "
                f"(revisions kept: {kept})"
            )
        previous, rs = older[-1]
        template = _template(rs)  # without the pod-template-hash label, as the controller wants it
        now = _deployment_template(deployment)
        if template == now:
            raise _rejected(f"the pod template of revision {previous} is already {plan.target}'s: nothing to roll back")
        plan.before = {"template": now, "revision": current}
        plan.describe = (
            f"roll back {plan.target} from revision {current} ({_few(_images(now))}) to the pod template of "
            f"revision {previous} ({_few(_images(template))}, ReplicaSet {_name(rs)})"
        )
        operations = [*_json_record(deployment, marker, plan.before)]
        operations.append({"op": "replace", "path": "/spec/template", "value": template})
        plan.steps = [self._patch_deployment(action, operations, JSON_PATCH)]
        plan.after = lambda doc: {"revision": previous, "images": _images(_spec_tpl(doc))}
        return plan

    async def _raise_memory(self, action: Action, marker: str) -> _Plan:
        deployment = await self._deployment(action)
        plan = _plan_on(deployment, "Deployment", action, marker, lambda doc: {"limits": _memory_limits(doc)})
        if plan.done:
            return plan
        _not_paused(deployment, plan.target, "change the memory limits of")
        factor = _factor(action.params)
        if factor <= 1:
            raise _rejected(f"raise_memory_limit needs a factor above 1, not {factor}")
        operations: list[dict[str, Any]] = []
        limits: dict[str, str] = {}
        requests: dict[str, str] = {}
        changes: list[str] = []
        containers = _spec_tpl(deployment).get("spec", {}).get("containers") or []
        for index, container in enumerate(containers):
            name = str(container.get("name", index))
            resources = container.get("resources") or {}
            limit = (resources.get("limits") or {}).get("memory")
            if limit is None:
                continue
            new_bytes = math.ceil(_quantity(limit, name) * factor / _MI) * _MI
            new = f"{new_bytes // _MI}Mi"
            path = f"/spec/template/spec/containers/{index}/resources"
            operations.append({"op": "replace", "path": f"{path}/limits/memory", "value": new})
            limits[name] = str(limit)
            changes.append(f"{name} {limit} -> {new}")
            request = (resources.get("requests") or {}).get("memory")
            if request is not None and _quantity(request, name) > new_bytes:
                operations.append({"op": "replace", "path": f"{path}/requests/memory", "value": new})
                requests[name] = str(request)
                changes.append(f"{name} request {request} -> {new}")
        if not limits:
            raise _rejected(f"no container of {plan.target} has a memory limit to raise")
        plan.before = {"limits": limits} | ({"requests": requests} if requests else {})
        plan.describe = f"raise the memory limits of {plan.target} by x{factor}: {'; '.join(changes)}"
        plan.steps = [self._patch_deployment(action, [*_json_record(deployment, marker, plan.before), *operations])]
        return plan

    async def _delete_pod(self, action: Action, marker: str) -> _Plan:
        assert self._core is not None
        ns, name = action.namespace, action.target
        target = f"Pod {ns}/{name}"

        def after(_: dict[str, Any]) -> dict[str, Any]:
            return {"pod": name, "deleted": True}

        try:
            pod = await self._call(
                _Call("get", "pods", name, ns), self._core.read_namespaced_pod, name=name, namespace=ns
            )
        except ApplicationError as exc:
            if exc.type != TARGET_NOT_FOUND:
                raise
            holder = await self._recorded_deletion(action, marker)
            if holder is None:
                raise
            return _Plan(
                target=f"{target} (gone) and Deployment {ns}/{_name(holder)}",
                marker=marker,
                done=True,
                describe="",
                before=_recorded_before(holder),
                after=after,
            )
        owner = await self._owning_deployment(pod, ns)
        holder, kind = (owner, "Deployment") if owner is not None else (pod, "Pod")
        holder_name = f"{kind} {ns}/{_name(holder)}"
        recorded = _annotations(holder).get(ACTION_ID_ANNOTATION) == marker
        terminating = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
        before = {"pod": name} | ({"deployment": _name(owner)} if owner is not None else {})
        if recorded and terminating:
            return _Plan(
                target=holder_name,
                marker=marker,
                done=True,
                describe="",
                before=_recorded_before(holder) or before,
                after=after,
            )
        plan = _Plan(target=target, marker=marker, done=False, describe="", before=before, after=after)
        if not recorded:
            body = _merge_record(holder, marker, before)
            if owner is not None:
                step = self._patch_deployment(
                    Action(type=action.type, namespace=ns, target=_name(owner)), body, MERGE_PATCH
                )
            else:
                step = _Step(
                    _Call("patch", "pods", name, ns),
                    self._core.patch_namespaced_pod,
                    _patch_params(name=name, namespace=ns, body=body, content_type=MERGE_PATCH),
                )
            plan.steps.append(step)
        uid = (pod.get("metadata") or {}).get("uid")
        options = k8s_client.V1DeleteOptions(preconditions=k8s_client.V1Preconditions(uid=uid) if uid else None)
        plan.steps.append(
            _Step(
                _Call("delete", "pods", name, ns),
                self._core.delete_namespaced_pod,
                {"name": name, "namespace": ns, "body": options},
            )
        )
        owned = f"Deployment {_name(owner)}" if owner is not None else "its controller, if it has one,"
        plan.describe = f"delete {target} ({owned} creates a replacement; action recorded on {holder_name})"
        return plan

    async def _cordon(self, action: Action, marker: str) -> _Plan:
        node = await self._node(action)
        plan = _plan_on(node, "Node", action, marker, lambda doc: {"unschedulable": _unschedulable(doc)})
        if plan.done:
            return plan
        old = _unschedulable(node)
        plan.before = {"unschedulable": old}
        plan.describe = (
            f"cordon {plan.target} (no new pods are scheduled there; its pods keep running)"
            if not old
            else f"record the action on {plan.target}, which was already cordoned"
        )
        body = _merge_record(node, marker, plan.before) | {"spec": {"unschedulable": True}}
        plan.steps = [self._patch_node(action, body)]
        return plan

    # ---- undo ---------------------------------------------------------------------------------------------

    async def _unscale(self, action: Action, marker: str, before: Mapping[str, Any]) -> _Plan:
        replicas = before.get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise _rejected(f"cannot undo scale_up of {action.target}: before has no replica count ({before!r})")
        deployment = await self._deployment(action)
        plan = _plan_on(deployment, "Deployment", action, marker, lambda doc: {"replicas": _replicas(doc)})
        if plan.done:
            return plan
        plan.before = {"replicas": _replicas(deployment)}
        plan.describe = f"scale {plan.target} back from {_replicas(deployment)} to {replicas} replicas"
        body = _merge_record(deployment, marker, None) | {"spec": {"replicas": replicas}}
        plan.steps = [self._patch_deployment(action, body, MERGE_PATCH)]
        return plan

    async def _restore_template(self, action: Action, marker: str, before: Mapping[str, Any]) -> _Plan:
        template = before.get("template")
        if not isinstance(template, dict) or not template:
            raise _rejected(f"cannot undo {action.type.value} of {action.target}: before has no pod template")
        deployment = await self._deployment(action)
        plan = _plan_on(deployment, "Deployment", action, marker, lambda doc: {"images": _images(_spec_tpl(doc))})
        if plan.done:
            return plan
        _not_paused(deployment, plan.target, "restore the pod template of")
        revision = f" (revision {before['revision']})" if before.get("revision") is not None else ""
        plan.before = {"template": _deployment_template(deployment)}
        plan.describe = (
            f"restore the pod template of {plan.target} to what it was before the agent's {action.type.value}{revision}"
        )
        operations = [*_json_record(deployment, marker, None)]
        operations.append({"op": "replace", "path": "/spec/template", "value": copy.deepcopy(template)})
        plan.steps = [self._patch_deployment(action, operations)]
        return plan

    async def _restore_limits(self, action: Action, marker: str, before: Mapping[str, Any]) -> _Plan:
        limits, requests = before.get("limits"), before.get("requests") or {}
        if not isinstance(limits, dict) or not limits or not isinstance(requests, dict):
            raise _rejected(f"cannot undo raise_memory_limit of {action.target}: before has no memory limits")
        deployment = await self._deployment(action)
        plan = _plan_on(deployment, "Deployment", action, marker, lambda doc: {"limits": _memory_limits(doc)})
        if plan.done:
            return plan
        _not_paused(deployment, plan.target, "change the memory limits of")
        containers = _spec_tpl(deployment).get("spec", {}).get("containers") or []
        index_of = {str(c.get("name")): i for i, c in enumerate(containers)}
        operations: list[dict[str, Any]] = []
        for name in {**limits, **requests}:
            if name not in index_of:
                raise _rejected(f"cannot undo raise_memory_limit: {plan.target} has no container {name} any more")
            wanted = {f: {"memory": str(v[name])} for f, v in (("limits", limits), ("requests", requests)) if name in v}
            resources = containers[index_of[name]].get("resources")
            path = f"/spec/template/spec/containers/{index_of[name]}/resources"
            if not isinstance(resources, dict):
                operations.append({"op": "add", "path": path, "value": wanted})
                continue
            for field_name, value in wanted.items():
                if isinstance(resources.get(field_name), dict):
                    operations.append({"op": "add", "path": f"{path}/{field_name}/memory", "value": value["memory"]})
                else:
                    operations.append({"op": "add", "path": f"{path}/{field_name}", "value": value})
        plan.before = {"limits": _memory_limits(deployment)}
        plan.describe = f"restore the memory limits of {plan.target}: " + "; ".join(
            f"{n} {v}" for n, v in limits.items()
        )
        plan.steps = [self._patch_deployment(action, [*_json_record(deployment, marker, None), *operations])]
        return plan

    async def _uncordon(self, action: Action, marker: str, before: Mapping[str, Any]) -> _Plan:
        old = before.get("unschedulable")
        if not isinstance(old, bool):
            raise _rejected(f"cannot undo cordon_node of {action.target}: before has no unschedulable flag")
        node = await self._node(action)
        plan = _plan_on(node, "Node", action, marker, lambda doc: {"unschedulable": _unschedulable(doc)})
        if plan.done:
            return plan
        plan.before = {"unschedulable": _unschedulable(node)}
        plan.describe = (
            f"uncordon {plan.target}" if not old else f"leave {plan.target} cordoned, as it was before the agent's"
        )
        # false is the field's default and the API omits it; null removes it, as an uncordon leaves the node.
        body = _merge_record(node, marker, None) | {"spec": {"unschedulable": True if old else None}}
        plan.steps = [self._patch_node(action, body)]
        return plan

    # ---- reads and requests -------------------------------------------------------------------------------

    async def _deployment(self, action: Action) -> dict[str, Any]:
        assert self._apps is not None
        ns, name = action.namespace, action.target
        return await self._call(
            _Call("get", "deployments", name, ns), self._apps.read_namespaced_deployment, name=name, namespace=ns
        )

    async def _node(self, action: Action) -> dict[str, Any]:
        assert self._core is not None
        return await self._call(_Call("get", "nodes", action.target), self._core.read_node, name=action.target)

    def _patch_deployment(self, action: Action, body: Any, content_type: str = JSON_PATCH) -> _Step:
        assert self._apps is not None
        ns, name = action.namespace, action.target
        return _Step(
            _Call("patch", "deployments", name, ns),
            self._apps.patch_namespaced_deployment,
            _patch_params(name=name, namespace=ns, body=body, content_type=content_type),
        )

    def _patch_node(self, action: Action, body: dict[str, Any]) -> _Step:
        assert self._core is not None
        return _Step(
            _Call("patch", "nodes", action.target),
            self._core.patch_node,
            _patch_params(name=action.target, body=body, content_type=MERGE_PATCH),
        )

    async def _owning_deployment(self, pod: dict[str, Any], namespace: str) -> dict[str, Any] | None:
        """The Deployment that owns ``pod`` through its ReplicaSet, or None (another owner, or none)."""
        assert self._apps is not None
        owner = _controller(pod)
        if owner is None or owner.get("kind") != "ReplicaSet":
            return None
        rs_name = str(owner.get("name", ""))
        try:
            rs = await self._call(
                _Call("get", "replicasets", rs_name, namespace),
                self._apps.read_namespaced_replica_set,
                name=rs_name,
                namespace=namespace,
            )
            owner = _controller(rs)
            if owner is None or owner.get("kind") != "Deployment":
                return None
            name = str(owner.get("name", ""))
            deployment = await self._call(
                _Call("get", "deployments", name, namespace),
                self._apps.read_namespaced_deployment,
                name=name,
                namespace=namespace,
            )
        except ApplicationError as exc:
            if exc.type == TARGET_NOT_FOUND:
                return None
            raise
        uid = owner.get("uid")
        return deployment if not uid or uid == (deployment.get("metadata") or {}).get("uid") else None

    async def _recorded_deletion(self, action: Action, marker: str) -> dict[str, Any] | None:
        """The Deployment of the namespace recording that this action deleted this pod, if any."""
        assert self._apps is not None
        ns = action.namespace
        try:
            listed = await self._call(
                _Call("list", "deployments", namespace=ns), self._apps.list_namespaced_deployment, namespace=ns
            )
        except ApplicationError:
            return None  # the pod's absence is the answer to give, not this lookup's failure
        for deployment in _items(listed):
            if (
                _annotations(deployment).get(ACTION_ID_ANNOTATION) == marker
                and _recorded_before(deployment).get("pod") == action.target
            ):
                return deployment
        return None

    async def _call(self, what: _Call, method: Callable[..., Any], **params: Any) -> dict[str, Any]:
        """One request in a worker thread; the raw JSON answer (no model deserialisation to trip on)."""
        mutating = what.verb not in ("get", "list")
        return await call_for_json(
            method,
            params,
            what=str(what),
            host=self._host,
            timeout_s=self._timeout_s,
            deadline_s=self._deadline_s,
            api_error=lambda exc: _api_error(what, exc, self._host),
            retry_note=" (a retry re-reads the target first, so it never applies twice)" if mutating else "",
            empty_is_object=True,
        )


# ---- errors -------------------------------------------------------------------------------------------------


def _check(action: Action) -> None:
    if not action.type.mutating:
        raise _rejected(f"{action.type.value} is not a change to the cluster: nothing to execute")
    if not action.target:
        raise _rejected(f"{action.type.value} names no target")
    if (action.type in _DEPLOYMENT_ACTIONS or action.type is ActionType.delete_pod) and not action.namespace:
        raise _rejected(f"{action.type.value} of {action.target} names no namespace")


def _rejected(message: str) -> ApplicationError:
    return ApplicationError(message, type=ACTION_REJECTED, non_retryable=True)


def _api_error(what: _Call, exc: ApiException, host: str) -> ApplicationError:
    status = int(exc.status or 0)
    detail = _server_message(exc)
    if status == 403:
        return ApplicationError(
            f"forbidden: the agent may not {what}: {detail}", type=SOURCE_FORBIDDEN, non_retryable=True
        )
    if status == 401:
        return ApplicationError(
            f"unauthorized: {what} (the API server rejected the credentials): {detail}",
            type=SOURCE_FORBIDDEN,
            non_retryable=True,
        )
    if status == 404:
        return ApplicationError(f"not found: {what}: {detail}", type=TARGET_NOT_FOUND, non_retryable=True)
    if status == 409:
        return ApplicationError(
            f"conflict: {what}: {detail} (the target changed since it was read; a retry reads it again)",
            type=TARGET_CONFLICT,
        )
    if status == 422:
        return ApplicationError(
            f"the API server refused {what} as invalid: {detail}", type=ACTION_REJECTED, non_retryable=True
        )
    if status in (408, 429) or status >= 500:
        return ApplicationError(f"Kubernetes API answered {status} to {what}: {detail}", type=SOURCE_UNAVAILABLE)
    if status == 0:
        return ApplicationError(
            f"Kubernetes API at {host}: {what} failed before an answer: {detail}",
            type=SOURCE_MISCONFIGURED,
            non_retryable=True,
        )
    return ApplicationError(
        f"Kubernetes API at {host} answered {status} to {what}: {detail}", type=SOURCE_MISCONFIGURED, non_retryable=True
    )


def _plan_on(
    obj: dict[str, Any],
    kind: str,
    action: Action,
    marker: str,
    after: Callable[[dict[str, Any]], dict[str, Any]],
) -> _Plan:
    where = f"{action.namespace}/{action.target}" if kind != "Node" else action.target
    done = _annotations(obj).get(ACTION_ID_ANNOTATION) == marker
    before = _recorded_before(obj) if done and not marker.endswith("/undo") else {}
    return _Plan(
        target=f"{kind} {where}", marker=marker, done=done, describe="", before=before, after=after, current=obj
    )


# ---- the record on the target -------------------------------------------------------------------------------


def _before_json(before: Mapping[str, Any] | None) -> str | None:
    if before is None:
        return None
    text = json.dumps(before, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= _BEFORE_MAX else None


def _merge_record(obj: Mapping[str, Any], marker: str, before: Mapping[str, Any] | None) -> dict[str, Any]:
    """The merge-patch part that writes the marker (and ``before``) under the optimistic lock."""
    annotations: dict[str, str | None] = {ACTION_ID_ANNOTATION: marker}
    recorded = _before_json(before)
    if recorded is not None:
        annotations[BEFORE_ANNOTATION] = recorded
    elif before is not None:
        annotations[BEFORE_ANNOTATION] = None  # too large to record: null removes a stale one
    meta: dict[str, Any] = {"annotations": annotations}
    version = (obj.get("metadata") or {}).get("resourceVersion")
    if version:
        meta["resourceVersion"] = version
    return {"metadata": meta}


def _json_record(obj: Mapping[str, Any], marker: str, before: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The JSON-patch operations that write the marker (and ``before``) under the optimistic lock."""
    operations: list[dict[str, Any]] = []
    meta = obj.get("metadata") or {}
    if meta.get("resourceVersion"):
        operations.append({"op": "add", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]})
    wanted: dict[str, str] = {ACTION_ID_ANNOTATION: marker}
    recorded = _before_json(before)
    if recorded is not None:
        wanted[BEFORE_ANNOTATION] = recorded
    existing = meta.get("annotations")
    if not isinstance(existing, dict):
        operations.append({"op": "add", "path": "/metadata/annotations", "value": wanted})
        return operations
    for key, value in wanted.items():
        operations.append({"op": "add", "path": f"/metadata/annotations/{_escape(key)}", "value": value})
    if recorded is None and before is not None and BEFORE_ANNOTATION in existing:
        operations.append({"op": "remove", "path": f"/metadata/annotations/{_escape(BEFORE_ANNOTATION)}"})
    return operations


def _recorded_before(obj: Mapping[str, Any]) -> dict[str, Any]:
    try:
        before = json.loads(_annotations(obj).get(BEFORE_ANNOTATION) or "{}")
    except ValueError:
        return {}
    return before if isinstance(before, dict) else {}


def _escape(key: str) -> str:
    """An RFC 6901 pointer segment: incident-agent/action-id -> incident-agent~1action-id."""
    return key.replace("~", "~0").replace("/", "~1")


def _patch_params(*, body: Any, content_type: str, **where: str) -> dict[str, Any]:
    # The content type is always explicit: the client's default for every patch is json-patch+json.
    return {**where, "body": body, "_content_type": content_type, "field_manager": FIELD_MANAGER}


# ---- reading objects ----------------------------------------------------------------------------------------


def _items(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [item for item in document.get("items") or [] if isinstance(item, dict)]


def _controller(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((o for o in owners if isinstance(o, dict) and o.get("controller")), None)


def _replicas(deployment: Mapping[str, Any]) -> int:
    replicas = (deployment.get("spec") or {}).get("replicas")
    return int(replicas) if isinstance(replicas, int) else 1  # the API's default


def _spec_tpl(deployment: Mapping[str, Any]) -> dict[str, Any]:
    template = (deployment.get("spec") or {}).get("template")
    return template if isinstance(template, dict) else {}


def _deployment_template(deployment: Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(_spec_tpl(deployment))


def _restarted(deployment: Mapping[str, Any]) -> str | None:
    annotations = (_spec_tpl(deployment).get("metadata") or {}).get("annotations") or {}
    value = annotations.get(RESTARTED_AT)
    return str(value) if value is not None else None


def _memory_limits(deployment: Mapping[str, Any]) -> dict[str, str]:
    limits: dict[str, str] = {}
    for container in (_spec_tpl(deployment).get("spec") or {}).get("containers") or []:
        memory = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        if memory is not None:
            limits[str(container.get("name"))] = str(memory)
    return limits


def _unschedulable(node: Mapping[str, Any]) -> bool:
    return bool((node.get("spec") or {}).get("unschedulable"))


def _not_paused(deployment: Mapping[str, Any], target: str, doing: str) -> None:
    if (deployment.get("spec") or {}).get("paused"):
        raise _rejected(f"{target} is paused: a pod template change would not roll out; cannot {doing} it")


# ---- parameters ---------------------------------------------------------------------------------------------


def _factor(params: Mapping[str, Any]) -> Decimal:
    raw = params.get("factor", DEFAULT_FACTOR)
    if isinstance(raw, bool):
        raise _rejected(f"factor must be a number, not {raw!r}")
    try:
        factor = Decimal(str(raw))
    except InvalidOperation:
        raise _rejected(f"factor must be a number, not {raw!r}") from None
    if not factor.is_finite():
        raise _rejected(f"factor must be a finite number, not {raw!r}")
    return factor


def _scale_target(params: Mapping[str, Any], current: int) -> int:
    if params.get("replicas") is not None:
        raw = params["replicas"]
        if isinstance(raw, bool) or not (isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit())):
            raise _rejected(f"replicas must be a whole number, not {raw!r}")
        wanted = int(raw)
    else:
        wanted = math.ceil(current * _factor(params))
    ceiling = params.get("max_replicas")
    if isinstance(ceiling, int) and not isinstance(ceiling, bool):
        # The policy bounds a factor it could not turn into a count (the current size was unknown to it).
        wanted = min(wanted, ceiling)
    if wanted <= current:
        raise _rejected(f"scale_up to {wanted} replicas is not an increase over the current {current}")
    return wanted


def _quantity(value: Any, container: str) -> Decimal:
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, TypeError, InvalidOperation):
        raise _rejected(f"container {container}: cannot read the memory quantity {value!r}") from None


def _words(after: Mapping[str, Any]) -> str:
    shown = [f"{key}={value}" for key, value in after.items() if not isinstance(value, dict | list)]
    shown += [f"{key}={json.dumps(value, sort_keys=True)}" for key, value in after.items() if isinstance(value, dict)]
    shown += [f"{key}={', '.join(map(str, value))}" for key, value in after.items() if isinstance(value, list)]
    return f"; result: {'; '.join(shown)}" if shown else ""


def _few(images: list[str]) -> str:
    return ", ".join(image.rsplit("/", 1)[-1] for image in images[:3]) or "no image"


@contextlib.asynccontextmanager
async def _heartbeating(every_s: float = HEARTBEAT_EVERY_S) -> AsyncIterator[None]:
    """Heartbeat while the action runs, so that a worker that dies mid-action is noticed within the workflow's
    heartbeat timeout (and the action retried elsewhere, where its annotation keeps it from applying twice)."""
    if not activity.in_activity():
        yield
        return

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every_s)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
