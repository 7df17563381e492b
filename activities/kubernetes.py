"""Kubernetes API, read side only: rollout history, pod and node state, Warning events.

Safety: every call here is a ``get``/``list`` through the official ``kubernetes`` client (no watch, no
create/patch/delete, no command-line tool, no subprocess, no shell). The client is synchronous, so each call runs in a
worker thread with its own request timeout; independent calls run concurrently.

Which pieces are required and which are optional (decides what a 401/403 does):

* required: Deployments, ReplicaSets and Pods of the namespace. They are the substance of the evidence and a
  namespace-scoped Role that grants the agent read access names them together; a 401/403 on any of them fails
  the activity with ``SourceForbidden`` (non-retryable: a retry gets the same answer), naming the verb,
  resource and namespace that were refused.
* optional: Nodes (cluster-scoped, so a namespace Role never grants them) and Events (often left out of
  read-only Roles). A 401/403, a 404 or another 4xx on those becomes a line in ``notes`` and the rest of the
  evidence is kept.
* a request without a namespace (a node alert) reads the nodes, required there since they are all there is,
  and, when the request names a node, the pods on it across namespaces (optional).

Transport failures (connection refused, timeouts, 408/429/5xx) on any piece fail the whole activity as a
retryable ``SourceUnavailable``: half the picture from a flapping API server is worse than a retry.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import SOURCE_FORBIDDEN, SOURCE_MISCONFIGURED, SOURCE_UNAVAILABLE, not_configured
from models.evidence import EvidenceRequest, KubeEvent, KubernetesEvidence, NodeStatus, PodStatus, Rollout

log = structlog.get_logger(__name__)

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
CHANGE_CAUSE = "kubernetes.io/change-cause"
# The annotation a `rollout restart` stamps on the pod template (its name is Kubernetes', not a tool we run).
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
POD_TEMPLATE_HASH = "pod-template-hash"

# Server-side page size of the namespace-wide pod list; the workload's own pods are read separately by its
# selector, so a very large namespace never hides them.
POD_LIST_LIMIT = 500
PRESSURE_CONDITIONS = ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")
_DETAIL_MAX = 3  # names listed per change detail, e.g. the env variables that changed


def load_kubernetes_client() -> k8s_client.ApiClient | None:
    """An API client for the cluster the worker can reach, or None when nothing is configured.

    In a pod (``KUBERNETES_SERVICE_HOST`` set) the service account is used; otherwise ``KUBECONFIG`` (its
    files, as the standard tooling reads them: when set, ``~/.kube/config`` is not consulted) or
    ``~/.kube/config``. A kubeconfig
    that exists but cannot be loaded raises: that is a misconfiguration to see at start-up, not a quiet gap.
    """
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = _configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException as exc:
            # e.g. automountServiceAccountToken: false; fall through to a kubeconfig, if any.
            log.warning("kubernetes_in_cluster_config_unusable", error=str(exc))
        else:
            return k8s_client.ApiClient(configuration)
    paths = _kubeconfig_paths()
    if not paths:
        return None
    configuration = _configuration()
    k8s_config.load_kube_config(
        config_file=os.pathsep.join(paths), client_configuration=configuration, persist_config=False
    )
    return k8s_client.ApiClient(configuration)


def _configuration() -> k8s_client.Configuration:
    configuration = k8s_client.Configuration()
    # Temporal's retry policy is the retrier: one quick reconnect for a stale pooled connection, never a
    # re-read after a read timeout (that would multiply the timeout).
    configuration.retries = urllib3.Retry(total=1, connect=1, read=0, redirect=0, status=0, other=0)
    return configuration


def _kubeconfig_paths() -> list[str]:
    variable = os.environ.get("KUBECONFIG")
    if variable:
        candidates = [os.path.expanduser(p) for p in variable.split(os.pathsep) if p]
        paths = [p for p in candidates if os.path.isfile(p)]
        if not paths:
            log.warning("kubeconfig_missing", KUBECONFIG=variable)
        return paths
    default = Path.home() / ".kube" / "config"
    return [str(default)] if default.is_file() else []


@dataclass(frozen=True)
class _Read:
    """One API read, described the way an RBAC denial would be."""

    verb: str
    resource: str
    namespace: str | None = None  # None: cluster-scoped, "*": every namespace

    def __str__(self) -> str:
        where = (
            ""
            if not self.namespace
            else " in all namespaces"
            if self.namespace == "*"
            else f" in namespace {self.namespace}"
        )
        return f"{self.verb} {self.resource}{where}"


class KubernetesActivities:
    """Holds the API client for the worker's lifetime; constructed with None when nothing is configured."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient | None,
        *,
        timeout_s: float = 10.0,
        max_events: int = 30,
        max_pods: int = 50,
        max_rollouts: int = 5,
        max_nodes: int = 20,
    ) -> None:
        self._api_client = api_client
        self._core = k8s_client.CoreV1Api(api_client) if api_client is not None else None
        self._apps = k8s_client.AppsV1Api(api_client) if api_client is not None else None
        self._timeout_s = timeout_s
        # A hard ceiling per call, above the client's own timeout, for clients built elsewhere whose urllib3
        # pool retries reads (new_client_from_config's default) and would otherwise take several timeouts.
        self._deadline_s = timeout_s * 1.5 + 1.0
        self._max_events = max_events
        self._max_pods = max_pods
        self._max_rollouts = max_rollouts
        self._max_nodes = max_nodes

    @property
    def _host(self) -> str:
        return str(getattr(getattr(self._api_client, "configuration", None), "host", "") or "?")

    @activity.defn
    async def gather_kubernetes_evidence(self, request: EvidenceRequest) -> KubernetesEvidence:
        """Rollouts of the workload (and of its neighbours in the window), pods, nodes, Warning events."""
        if self._core is None or self._apps is None:
            raise not_configured("Kubernetes", "KUBECONFIG")
        notes: list[str] = []
        if not request.namespace:
            evidence = await self._cluster_only(request, notes)
        else:
            evidence = await self._namespace(request, notes)
        log.info(
            "kubernetes_evidence",
            namespace=request.namespace,
            workload=request.workload,
            rollouts=len(evidence.rollouts),
            pods=len(evidence.pods),
            nodes=len(evidence.nodes),
            events=len(evidence.events),
            notes=len(evidence.notes),
        )
        return evidence

    # ---- the two shapes of a request ------------------------------------------------------------------

    async def _namespace(self, request: EvidenceRequest, notes: list[str]) -> KubernetesEvidence:
        assert self._core is not None and self._apps is not None
        ns = request.namespace
        deployments_doc, replicasets_doc, pods_doc, events_doc, nodes_doc = await asyncio.gather(
            self._read(_Read("list", "deployments", ns), self._apps.list_namespaced_deployment, namespace=ns),
            self._read(_Read("list", "replicasets", ns), self._apps.list_namespaced_replica_set, namespace=ns),
            self._read(_Read("list", "pods", ns), self._core.list_namespaced_pod, namespace=ns, limit=POD_LIST_LIMIT),
            self._optional(
                _Read("list", "events", ns),
                notes,
                self._core.list_namespaced_event,
                namespace=ns,
                field_selector="type=Warning",
            ),
            self._optional(_Read("list", "nodes"), notes, self._core.list_node),
        )
        deployments = _items(deployments_doc)
        replicasets = _items(replicasets_doc)
        pods = _items(pods_doc)
        if _continues(pods_doc):
            notes.append(f"namespace {ns} has more than {POD_LIST_LIMIT} pods: only the first page was read")

        workload = next((d for d in deployments if _name(d) == request.workload), None) if request.workload else None
        workload_pods: list[dict[str, Any]] = []
        if workload is not None:
            selector = _selector_string(workload.get("spec", {}).get("selector") or {})
            if selector:
                workload_pods = _items(
                    await self._read(
                        _Read("list", "pods", ns),
                        self._core.list_namespaced_pod,
                        namespace=ns,
                        label_selector=selector,
                        limit=POD_LIST_LIMIT,
                    )
                )
        elif request.workload:
            notes.append(
                f"{ns}/{request.workload} is not a Deployment (none of that name in the namespace): "
                "no rollout history; its pods are matched by owner name"
            )

        rollouts = self._rollouts(request, workload, deployments, replicasets, notes)
        pod_statuses, hosting = self._pods(request, workload_pods, pods, replicasets, deployments, notes)
        nodes = self._nodes(request, nodes_doc, hosting, notes) if nodes_doc is not None else []
        events = self._events(ns, events_doc, notes) if events_doc is not None else []
        return KubernetesEvidence(rollouts=rollouts, pods=pod_statuses, nodes=nodes, events=events, notes=notes)

    async def _cluster_only(self, request: EvidenceRequest, notes: list[str]) -> KubernetesEvidence:
        """No namespace in the alert (a node alert, say): the nodes, and the pods on the alert's node.

        Here the nodes are all there is to see, so a refusal to list them fails the activity."""
        assert self._core is not None
        notes.append("no namespace in the request: nodes only (and the pods on the alert's node, if named)")
        reads: list[Coroutine[Any, Any, dict[str, Any] | None]] = [
            self._read(_Read("list", "nodes"), self._core.list_node)
        ]
        if request.node:
            reads.append(
                self._optional(
                    _Read("list", "pods", "*"),
                    notes,
                    self._core.list_pod_for_all_namespaces,
                    field_selector=f"spec.nodeName={request.node}",
                    limit=POD_LIST_LIMIT,
                )
            )
            # What happened to the node and to its pods (NodeNotReady, evictions) is told in Warning events of
            # every namespace the pods live in.
            reads.append(
                self._optional(
                    _Read("list", "events", "*"),
                    notes,
                    self._core.list_event_for_all_namespaces,
                    field_selector="type=Warning",
                    limit=POD_LIST_LIMIT,
                )
            )
        docs = await asyncio.gather(*reads)
        nodes_doc = docs[0] or {}
        pods = _items(docs[1]) if len(docs) > 1 else []
        statuses, hosting = self._pods(request, [], pods, [], [], notes)
        nodes = self._nodes(request, nodes_doc, hosting, notes)
        on_node = {("Node", request.node)} | {("Pod", _name(pod)) for pod in pods}
        events_doc = {"items": [e for e in _items(docs[2] if len(docs) > 2 else None) if _involves(e, on_node)]}
        events = self._events("", events_doc, notes)
        return KubernetesEvidence(pods=statuses, nodes=nodes, events=events, notes=notes)

    # ---- API access -------------------------------------------------------------------------------------

    async def _read(self, what: _Read, method: Callable[..., Any], **params: Any) -> dict[str, Any]:
        """One get/list in a worker thread; the raw JSON document (no model deserialisation to trip on)."""
        return await call_for_json(
            method,
            params,
            what=str(what),
            host=self._host,
            timeout_s=self._timeout_s,
            deadline_s=self._deadline_s,
            api_error=lambda exc: _api_error(what, exc, self._host),
        )

    async def _optional(
        self, what: _Read, notes: list[str], method: Callable[..., Any], **params: Any
    ) -> dict[str, Any] | None:
        """A read whose refusal is a gap in the evidence, not a failure of the activity."""
        try:
            return await self._read(what, method, **params)
        except ApplicationError as exc:
            if exc.type not in (SOURCE_FORBIDDEN, SOURCE_MISCONFIGURED):
                raise
            notes.append(f"{what.resource} not gathered: {exc.message}")
            log.info("kubernetes_optional_read_refused", read=str(what), error_type=exc.type)
            return None

    # ---- rollouts ---------------------------------------------------------------------------------------

    def _rollouts(
        self,
        request: EvidenceRequest,
        workload: dict[str, Any] | None,
        deployments: list[dict[str, Any]],
        replicasets: list[dict[str, Any]],
        notes: list[str],
    ) -> list[Rollout]:
        rollouts: list[Rollout] = []
        at, onset = _aware(request.at), _aware(request.onset)
        if workload is not None:
            history = _history(workload, replicasets, at, own=True)
            if not history:
                notes.append(f"Deployment {request.namespace}/{request.workload} has no ReplicaSet with a revision")
            if len(history) > self._max_rollouts:
                notes.append(
                    f"Deployment {request.workload}: {len(history) - self._max_rollouts} older revisions not shown"
                )
            rollouts.extend(sorted(history, key=lambda r: r.revision, reverse=True)[: self._max_rollouts])

        # Rollouts of the other Deployments of the namespace inside [onset - baseline, at]: a dependency's bad
        # deploy is a common root cause. (A rollback re-uses an old ReplicaSet, whose creationTimestamp is old,
        # so a rollback of a neighbour is not seen here.)
        start = onset - timedelta(seconds=request.baseline_s)
        neighbours: list[Rollout] = []
        for deployment in deployments:
            if workload is not None and _name(deployment) == _name(workload):
                continue
            neighbours.extend(
                r for r in _history(deployment, replicasets, at, own=False) if r.at is not None and start <= r.at <= at
            )
        neighbours.sort(key=lambda r: r.at or start, reverse=True)
        if len(neighbours) > self._max_rollouts:
            notes.append(f"{len(neighbours) - self._max_rollouts} more rollouts of other Deployments not shown")
        rollouts.extend(neighbours[: self._max_rollouts])
        return rollouts

    # ---- pods -------------------------------------------------------------------------------------------

    def _pods(
        self,
        request: EvidenceRequest,
        workload_pods: list[dict[str, Any]],
        pods: list[dict[str, Any]],
        replicasets: list[dict[str, Any]],
        deployments: list[dict[str, Any]],
        notes: list[str],
    ) -> tuple[list[PodStatus], dict[str, set[str]]]:
        """Pod statuses (the alert's pod, then the workload's, then the least healthy) and pod -> node use."""
        owner_of_rs = _replicaset_owners(replicasets, deployments)
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for pod in [*workload_pods, *pods]:
            meta = pod.get("metadata", {})
            seen.setdefault((meta.get("namespace", request.namespace), meta.get("name", "")), pod)
        workload_keys = {(p.get("metadata", {}).get("namespace", request.namespace), _name(p)) for p in workload_pods}
        statuses: list[tuple[int, PodStatus]] = []
        hosting: dict[str, set[str]] = {}  # node -> workloads with a pod there
        for key, pod in seen.items():
            status = _pod_status(pod, request.namespace, owner_of_rs)
            if status.node:
                hosting.setdefault(status.node, set()).add(status.workload)
            if request.pod and status.name == request.pod:
                rank = 0
            elif key in workload_keys or (request.workload and status.workload == request.workload):
                rank = 1
            else:
                rank = 2
            statuses.append((rank, status))
        statuses.sort(key=lambda item: (item[0], -_trouble(item[1]), -item[1].restarts, item[1].name))
        if len(statuses) > self._max_pods:
            notes.append(
                f"{len(statuses) - self._max_pods} more pods not shown "
                "(shown: the alert's pod, the workload's, then the least healthy)"
            )
        return [status for _, status in statuses[: self._max_pods]], hosting

    # ---- nodes ------------------------------------------------------------------------------------------

    def _nodes(
        self,
        request: EvidenceRequest,
        nodes_doc: dict[str, Any],
        hosting: dict[str, set[str]],
        notes: list[str],
    ) -> list[NodeStatus]:
        """Nodes that host the pods seen, any NotReady node, and the alert's node; troubled ones first."""
        ranked: list[tuple[tuple[int, int, str], NodeStatus]] = []
        for node in _items(nodes_doc):
            status = _node_status(node)
            wanted = status.name == request.node or status.name in hosting or not status.ready
            if not wanted:
                continue
            troubled = (not status.ready) or bool(status.pressure) or status.unschedulable
            workload_there = bool(request.workload) and request.workload in hosting.get(status.name, set())
            rank = 0 if status.name == request.node else 1 if troubled else 2 if workload_there else 3
            ranked.append(((rank, 0 if troubled else 1, status.name), status))
        ranked.sort(key=lambda item: item[0])
        if len(ranked) > self._max_nodes:
            notes.append(f"{len(ranked) - self._max_nodes} more nodes not shown")
        return [status for _, status in ranked[: self._max_nodes]]

    # ---- events -----------------------------------------------------------------------------------------

    def _events(self, namespace: str, events_doc: dict[str, Any], notes: list[str]) -> list[KubeEvent]:
        """Warning events, one per (kind, name, reason) with the counts summed, newest first."""
        merged: dict[tuple[str, str, str], KubeEvent] = {}
        for event in _items(events_doc):
            if event.get("type") != "Warning":  # the field selector asked for these only; belt and braces
                continue
            involved = event.get("involvedObject") or event.get("regarding") or {}
            key = (str(involved.get("kind", "")), str(involved.get("name", "")), str(event.get("reason", "")))
            series = event.get("series") or {}
            count = _int(event.get("count")) or _int(series.get("count")) or 1
            seen = _time(
                event.get("lastTimestamp")
                or series.get("lastObservedTime")
                or event.get("eventTime")
                or event.get("firstTimestamp")
            )
            message = " ".join(str(event.get("message") or event.get("note") or "").split())[:500]
            previous = merged.get(key)
            if previous is None:
                merged[key] = KubeEvent(
                    namespace=str(event.get("metadata", {}).get("namespace") or namespace),
                    kind=key[0],
                    name=key[1],
                    reason=key[2],
                    message=message,
                    count=count,
                    last_seen=seen,
                )
                continue
            previous.count += count
            if seen is not None and (previous.last_seen is None or seen > previous.last_seen):
                previous.last_seen = seen
                previous.message = message
        events = sorted(
            merged.values(),
            key=lambda e: (e.last_seen or datetime.min.replace(tzinfo=UTC), e.count),
            reverse=True,
        )
        if len(events) > self._max_events:
            notes.append(f"{len(events) - self._max_events} more Warning events (older) not shown")
        return events[: self._max_events]


# ---- errors ---------------------------------------------------------------------------------------------


async def call_for_json(
    method: Callable[..., Any],
    params: Mapping[str, Any],
    *,
    what: str,
    host: str,
    timeout_s: float,
    deadline_s: float,
    api_error: Callable[[ApiException], ApplicationError],
    retry_note: str = "",
    empty_is_object: bool = False,
) -> dict[str, Any]:
    """One official-client call in a worker thread, its raw JSON answer, and every failure as a typed error.

    The read side and the remediation executor share it: an API error goes through the caller's own mapping,
    a timeout or an unreachable server is a retryable ``SourceUnavailable`` (``retry_note`` says what a retry
    does), and an answer that is not a JSON object means the URL is not a Kubernetes API.
    """

    def call() -> bytes:
        response = method(**params, _preload_content=False, _request_timeout=timeout_s)
        try:
            return bytes(response.data)
        finally:
            response.release_conn()

    try:
        body = await asyncio.wait_for(asyncio.to_thread(call), timeout=deadline_s)
    except ApiException as exc:
        raise api_error(exc) from exc
    except TimeoutError as exc:
        raise ApplicationError(
            f"Kubernetes API at {host} did not answer {what} within {deadline_s:.1f}s (timeout){retry_note}",
            type=SOURCE_UNAVAILABLE,
        ) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        failure = "timed out" if _is_timeout(exc) else "unreachable"
        raise ApplicationError(
            f"Kubernetes API at {host} {failure} for {what}: {type(exc).__name__}: {exc}{retry_note}",
            type=SOURCE_UNAVAILABLE,
        ) from exc
    try:
        document = json.loads(body) if body or not empty_is_object else {}
    except ValueError as exc:
        raise ApplicationError(
            f"Kubernetes API at {host} answered {what} with something that is not JSON",
            type=SOURCE_MISCONFIGURED,
            non_retryable=True,
        ) from exc
    if not isinstance(document, dict):
        raise ApplicationError(
            f"Kubernetes API at {host} answered {what} with a JSON {type(document).__name__}",
            type=SOURCE_MISCONFIGURED,
            non_retryable=True,
        )
    return document


def _api_error(what: _Read, exc: ApiException, host: str) -> ApplicationError:
    status = int(exc.status or 0)
    detail = _server_message(exc)
    if status == 403:
        return ApplicationError(f"forbidden: {what}: {detail}", type=SOURCE_FORBIDDEN, non_retryable=True)
    if status == 401:
        return ApplicationError(
            f"unauthorized: {what} (the API server rejected the credentials): {detail}",
            type=SOURCE_FORBIDDEN,
            non_retryable=True,
        )
    if status in (408, 429) or status >= 500:
        return ApplicationError(f"Kubernetes API answered {status} to {what}: {detail}", type=SOURCE_UNAVAILABLE)
    if status == 0:  # the client's own failure before any answer, e.g. a TLS verification error
        return ApplicationError(
            f"Kubernetes API at {host}: {what} failed before an answer: {detail}",
            type=SOURCE_MISCONFIGURED,
            non_retryable=True,
        )
    hint = " (is the kubeconfig pointing at a Kubernetes API?)" if status == 404 else ""
    return ApplicationError(
        f"Kubernetes API at {host} answered {status} to {what}{hint}: {detail}",
        type=SOURCE_MISCONFIGURED,
        non_retryable=True,
    )


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError subclass, for history
        return False
    reason = getattr(exc, "reason", None)  # urllib3's MaxRetryError wraps the last attempt's error
    return isinstance(exc, TimeoutError | urllib3.exceptions.TimeoutError) or (
        isinstance(reason, BaseException) and _is_timeout(reason)
    )


def _server_message(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            status = json.loads(body)
        except ValueError:
            return " ".join(body.split())[:300]
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])[:300]
    return str(exc.reason or "no detail")[:300]


# ---- rollout history ------------------------------------------------------------------------------------


def _history(
    deployment: dict[str, Any], replicasets: list[dict[str, Any]], now: datetime, *, own: bool
) -> list[Rollout]:
    """Every revision of ``deployment`` that has a ReplicaSet, oldest first, each compared to the one before."""
    namespace = str(deployment.get("metadata", {}).get("namespace", ""))
    name = _name(deployment)
    current = _int(_annotations(deployment).get(REVISION))
    revisions: list[tuple[int, dict[str, Any]]] = []
    for rs in replicasets:
        revision = _int(_annotations(rs).get(REVISION))
        if revision is not None and _owned_by(rs, deployment):
            revisions.append((revision, rs))
    revisions.sort(key=lambda item: item[0])
    history: list[Rollout] = []
    previous: dict[str, Any] | None = None
    for revision, rs in revisions:
        template = _template(rs)
        images = _images(template)
        if previous is None:
            changed: list[str] = []
            shown = ", ".join(_short(i) for i in images) or "none"
            first = "first revision" if revision == 1 else "oldest revision still kept (nothing to compare with)"
            details = [f"{first}, images {shown}"]
            previous_images: list[str] = []
        else:
            changed, details = _template_changes(previous, template)
            previous_images = _images(previous)
        when = _time(rs.get("metadata", {}).get("creationTimestamp"))
        cause = _annotations(rs).get(CHANGE_CAUSE) or None
        reused = _annotations(rs).get(REVISION_HISTORY)
        history.append(
            Rollout(
                namespace=namespace,
                deployment=name,
                revision=revision,
                replicaset=_name(rs),
                at=when,
                images=images,
                previous_images=previous_images,
                changed=changed,
                change_cause=cause,
                current=current is not None and revision == current,
                summary=_summary(
                    namespace, name, revision, rs, when, now, details, cause, current == revision, reused, own
                ),
            )
        )
        previous = template
    return history


def _summary(
    namespace: str,
    deployment: str,
    revision: int,
    rs: dict[str, Any],
    when: datetime | None,
    now: datetime,
    details: list[str],
    cause: str | None,
    current: bool,
    reused: str | None,
    own: bool,
) -> str:
    prefix = "" if own else f"{namespace}/{deployment} "
    marker = ", current" if current else ""
    if when is None:
        at = "an unknown time"
    elif abs(now - when) < timedelta(hours=24):
        at = when.astimezone(UTC).strftime("%H:%MZ")
    else:
        at = when.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")
    text = (
        f"{prefix}revision {revision} ({_name(rs)}{marker}) at {at}: {'; '.join(details) or 'no pod template change'}"
    )
    if reused:
        text += f" (re-uses the ReplicaSet of revision {reused}: a rollback)"
    if cause:
        text += f' [change-cause: "{" ".join(cause.split())[:200]}"]'
    return text


def _owned_by(rs: dict[str, Any], deployment: dict[str, Any]) -> bool:
    meta = rs.get("metadata", {})
    controller = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if controller is not None:
        dep_meta = deployment.get("metadata", {})
        uid_ok = not controller.get("uid") or not dep_meta.get("uid") or controller["uid"] == dep_meta["uid"]
        return controller.get("kind") == "Deployment" and controller.get("name") == dep_meta.get("name") and uid_ok
    # An orphan (or a ReplicaSet adopted by nothing yet): the Deployment's selector decides.
    selector = deployment.get("spec", {}).get("selector") or {}
    labels = meta.get("labels") or rs.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
    return bool(selector) and _selector_matches(selector, labels)


def _template(rs: dict[str, Any]) -> dict[str, Any]:
    template = copy.deepcopy(rs.get("spec", {}).get("template") or {})
    labels = template.get("metadata", {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return template


def _containers(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = template.get("spec", {})
    containers = {str(c.get("name")): c for c in spec.get("containers") or []}
    containers.update({f"init:{c.get('name')}": c for c in spec.get("initContainers") or []})
    return containers


def _images(template: dict[str, Any]) -> list[str]:
    return [str(c.get("image", "")) for c in _containers(template).values()]


def _template_changes(before: dict[str, Any], after: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What changed between two pod templates: categories (image, env, args, resources, config, restart,
    containers, template) and one human detail per change."""
    changed: list[str] = []
    details: list[str] = []

    def note(category: str, detail: str) -> None:
        if category not in changed:
            changed.append(category)
        details.append(detail)

    old, new = _containers(before), _containers(after)
    added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    if added or removed:
        parts = [f"+{n}" for n in added] + [f"-{n}" for n in removed]
        note("containers", f"containers {' '.join(parts)}")
    both = [n for n in new if n in old]
    images = [(n, old[n].get("image"), new[n].get("image")) for n in both if old[n].get("image") != new[n].get("image")]
    if images:
        note("image", "image " + ", ".join(f"{_short(str(a))} -> {_short(str(b))}" for _, a, b in images))
    env_names: list[str] = []
    for n in both:
        env_names.extend(_env_changes(old[n], new[n]))
    if env_names:
        note("env", f"env {_few(sorted(set(env_names)))} changed")
    args = [
        n for n in both if (old[n].get("args"), old[n].get("command")) != (new[n].get("args"), new[n].get("command"))
    ]
    if args:
        note("args", f"args/command of {_few(args)} changed")
    resources: list[str] = []
    for n in both:
        resources.extend(_resource_changes(n, old[n].get("resources") or {}, new[n].get("resources") or {}))
    if resources:
        note("resources", f"resources {_few(resources)}")
    old_refs, new_refs = _config_refs(before), _config_refs(after)
    if old_refs != new_refs:
        parts = [f"+{r}" for r in sorted(new_refs - old_refs)] + [f"-{r}" for r in sorted(old_refs - new_refs)]
        note("config", f"config refs {' '.join(parts)}")
    old_restart = (before.get("metadata", {}).get("annotations") or {}).get(RESTARTED_AT)
    new_restart = (after.get("metadata", {}).get("annotations") or {}).get(RESTARTED_AT)
    if old_restart != new_restart:
        note("restart", f"restart requested at {new_restart}" if new_restart else "restart annotation removed")
    other = _other_changes(before, after)
    if other:
        note("template", f"pod template {_few(other)} changed")
    return changed, details


def _env_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    before = {str(e.get("name")): e for e in old.get("env") or []}
    after = {str(e.get("name")): e for e in new.get("env") or []}
    names = [k for k in before.keys() | after.keys() if before.get(k) != after.get(k)]
    if (old.get("envFrom") or []) != (new.get("envFrom") or []):
        names.append("envFrom")
    return names


def _resource_changes(container: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    changes = []
    for kind in ("requests", "limits"):
        before, after = old.get(kind) or {}, new.get(kind) or {}
        for resource in sorted(before.keys() | after.keys()):
            if before.get(resource) != after.get(resource):
                was, now = before.get(resource, "unset"), after.get(resource, "unset")
                changes.append(f"{container} {kind}.{resource} {was} -> {now}")
    return changes


def _config_refs(template: dict[str, Any]) -> set[str]:
    """ConfigMaps and Secrets the pod template points at (volumes, envFrom, env valueFrom)."""
    refs: set[str] = set()
    spec = template.get("spec", {})
    for volume in spec.get("volumes") or []:
        if volume.get("configMap"):
            refs.add(f"configMap/{volume['configMap'].get('name')}")
        if volume.get("secret"):
            refs.add(f"secret/{volume['secret'].get('secretName')}")
        for source in (volume.get("projected") or {}).get("sources") or []:
            if source.get("configMap"):
                refs.add(f"configMap/{source['configMap'].get('name')}")
            if source.get("secret"):
                refs.add(f"secret/{source['secret'].get('name')}")
    for container in _containers(template).values():
        for env_from in container.get("envFrom") or []:
            if env_from.get("configMapRef"):
                refs.add(f"configMap/{env_from['configMapRef'].get('name')}")
            if env_from.get("secretRef"):
                refs.add(f"secret/{env_from['secretRef'].get('name')}")
        for env in container.get("env") or []:
            value_from = env.get("valueFrom") or {}
            if value_from.get("configMapKeyRef"):
                refs.add(f"configMap/{value_from['configMapKeyRef'].get('name')}")
            if value_from.get("secretKeyRef"):
                refs.add(f"secret/{value_from['secretKeyRef'].get('name')}")
    return refs


_COMPARED_CONTAINER_FIELDS = ("image", "env", "envFrom", "args", "command", "resources")


def _other_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Template differences not covered by a named category, as short paths (e.g. search.readinessProbe)."""

    def strip(template: dict[str, Any]) -> dict[str, Any]:
        template = copy.deepcopy(template)
        annotations = template.get("metadata", {}).get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(RESTARTED_AT, None)
            if not annotations:
                template["metadata"].pop("annotations")
        spec = template.get("spec", {})
        for key in ("containers", "initContainers"):
            for container in spec.get(key) or []:
                for field in _COMPARED_CONTAINER_FIELDS:
                    container.pop(field, None)
        for volume in spec.get("volumes") or []:
            for kind, field in (("configMap", "name"), ("secret", "secretName")):
                if isinstance(volume.get(kind), dict):
                    volume[kind].pop(field, None)
            for source in (volume.get("projected") or {}).get("sources") or []:
                for kind in ("configMap", "secret"):
                    if isinstance(source.get(kind), dict):
                        source[kind].pop("name", None)
        return template

    old, new = strip(before), strip(after)
    if old == new:
        return []
    paths: list[str] = []
    for key in sorted((old.get("metadata") or {}).keys() | (new.get("metadata") or {}).keys()):
        if (old.get("metadata") or {}).get(key) != (new.get("metadata") or {}).get(key):
            paths.append(f"metadata.{key}")
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    old_c, new_c = _containers(old), _containers(new)
    for name in [n for n in new_c if n in old_c]:
        for key in sorted(old_c[name].keys() | new_c[name].keys()):
            if old_c[name].get(key) != new_c[name].get(key):
                paths.append(f"{name}.{key}")
    for key in sorted(old_spec.keys() | new_spec.keys()):
        if key not in ("containers", "initContainers") and old_spec.get(key) != new_spec.get(key):
            paths.append(f"spec.{key}")
    return paths or ["(elsewhere)"]


# ---- pods and nodes -------------------------------------------------------------------------------------


def _replicaset_owners(replicasets: list[dict[str, Any]], deployments: list[dict[str, Any]]) -> dict[str, str]:
    """ReplicaSet name -> the Deployment that controls it."""
    owners: dict[str, str] = {}
    for rs in replicasets:
        for owner in rs.get("metadata", {}).get("ownerReferences") or []:
            if owner.get("controller") and owner.get("kind") == "Deployment":
                owners[_name(rs)] = str(owner.get("name"))
        if _name(rs) not in owners:
            for deployment in deployments:
                if _owned_by(rs, deployment):
                    owners[_name(rs)] = _name(deployment)
                    break
    return owners


def _pod_workload(pod: dict[str, Any], owner_of_rs: Mapping[str, str]) -> str:
    meta = pod.get("metadata", {})
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner is None:
        return ""
    name = str(owner.get("name", ""))
    if owner.get("kind") != "ReplicaSet":
        return name  # StatefulSet, DaemonSet, Job, ...
    if name in owner_of_rs:
        return owner_of_rs[name]
    template_hash = (meta.get("labels") or {}).get(POD_TEMPLATE_HASH)
    if template_hash and name.endswith(f"-{template_hash}"):
        return name[: -len(template_hash) - 1]
    return name


def _pod_status(pod: dict[str, Any], namespace: str, owner_of_rs: Mapping[str, str]) -> PodStatus:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    restarts = sum(_int(c.get("restartCount")) or 0 for c in containers)

    last_reason: str | None = None
    last_code: int | None = None
    last_at: datetime | None = None
    for container in containers:
        for state in (container.get("lastState") or {}, container.get("state") or {}):
            terminated = state.get("terminated")
            if not terminated:
                continue
            finished = _time(terminated.get("finishedAt"))
            if last_reason is None or (finished is not None and (last_at is None or finished > last_at)):
                last_reason = terminated.get("reason") or (
                    f"exit code {terminated.get('exitCode')}" if terminated.get("exitCode") is not None else None
                )
                last_code = _int(terminated.get("exitCode"))
                last_at = finished

    # The most telling waiting reason: a container's (CrashLoopBackOff, ImagePullBackOff, ...), else the pod's
    # own reason (e.g. Evicted), else an unschedulable pod's.
    waiting = [
        str(c["state"]["waiting"].get("reason"))
        for c in containers
        if (c.get("state") or {}).get("waiting") and c["state"]["waiting"].get("reason")
    ]
    benign = {"ContainerCreating", "PodInitializing"}
    waiting_reason = next((w for w in waiting if w not in benign), waiting[0] if waiting else None)
    if waiting_reason is None and status.get("reason"):
        waiting_reason = str(status["reason"])
    scheduled = conditions.get("PodScheduled") or {}
    if waiting_reason is None and scheduled.get("status") == "False" and scheduled.get("reason"):
        waiting_reason = str(scheduled["reason"])

    return PodStatus(
        namespace=str(meta.get("namespace") or namespace),
        name=str(meta.get("name", "")),
        workload=_pod_workload(pod, owner_of_rs),
        node=str(spec.get("nodeName") or ""),
        phase=str(status.get("phase") or ""),
        ready=ready,
        restarts=restarts,
        last_termination_reason=last_reason,
        last_exit_code=last_code,
        last_terminated_at=last_at,
        waiting_reason=waiting_reason,
    )


def _trouble(pod: PodStatus) -> int:
    score = 0
    if pod.waiting_reason or pod.phase in ("Pending", "Failed", "Unknown"):
        score += 4
    if not pod.ready and pod.phase != "Succeeded":
        score += 2
    if pod.restarts:
        score += 1
    return score


def _node_status(node: dict[str, Any]) -> NodeStatus:
    conditions = {c.get("type"): c.get("status") for c in node.get("status", {}).get("conditions") or []}
    return NodeStatus(
        name=_name(node),
        ready=conditions.get("Ready") == "True",
        pressure=[c for c in PRESSURE_CONDITIONS if conditions.get(c) == "True"],
        unschedulable=bool(node.get("spec", {}).get("unschedulable")),
    )


# ---- selectors and small helpers ------------------------------------------------------------------------


def _selector_string(selector: Mapping[str, Any]) -> str:
    """A LabelSelector as the API's labelSelector query parameter (equality and set-based)."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif operator == "Exists":
            parts.append(str(key))
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def _selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        present = key in labels
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and present and labels.get(key) in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _involves(event: Mapping[str, Any], objects: set[tuple[str, str]]) -> bool:
    """About one of ``objects`` (kind, name), or from the node controller: its NodeNotReady and eviction events
    name the pods it marked or evicted, which may since have been recreated on other nodes."""
    involved = event.get("involvedObject") or event.get("regarding") or {}
    if (str(involved.get("kind", "")), str(involved.get("name", ""))) in objects:
        return True
    reporter = event.get("reportingComponent") or (event.get("source") or {}).get("component") or ""
    return reporter == "node-controller"


def _items(document: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    items = (document or {}).get("items") or []
    return [item for item in items if isinstance(item, dict)]


def _continues(document: Mapping[str, Any]) -> bool:
    return bool((document.get("metadata") or {}).get("continue"))


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _short(image: str) -> str:
    """registry.example.com/team/search:v2.23.1 -> search:v2.23.1 (a digest cut to 12 hex digits)."""
    short = image.rsplit("/", 1)[-1]
    if "@sha256:" in short:
        name, digest = short.split("@sha256:", 1)
        short = f"{name}@sha256:{digest[:12]}"
    return short


def _few(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_DETAIL_MAX])
    return shown + (f" (+{len(names) - _DETAIL_MAX} more)" if len(names) > _DETAIL_MAX else "")
