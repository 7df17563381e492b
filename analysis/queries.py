"""PromQL for the evidence an on-call engineer would pull up, for a namespace and its workloads.

The templates use what a standard kube-prometheus-stack cluster exposes (cAdvisor, kube-state-metrics,
node-exporter, blackbox, CoreDNS) and application RED metrics in either of the two conventions found in real
clusters. Which RED convention a namespace speaks is discovered, never assumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from string import Template
from typing import Literal

from triage.runbooks import RunbookQuery

RedConvention = Literal["classic", "otel"]

CLASSIC_REQUESTS = "http_requests_total"
OTEL_REQUESTS = "http_server_request_duration_seconds_count"


@dataclass(frozen=True)
class MetricQuery:
    metric: str  # the finding's name
    expr: str
    subject: str  # the label that names what the series is about (service, pod, deployment, ...)
    description: str  # what a person calls it
    absolute_floor: float  # the smallest shift worth a finding, in the metric's unit
    unit: str = ""
    # The same measure over only the last scrape interval, for a query smoothed over minutes: a 5-minute rate
    # still shows a burst that ended a minute ago, and an alert on it keeps firing; this tells which it is.
    now_expr: str | None = None


def quote(value: str) -> str:
    """A PromQL string literal: label values come from alerts and must not break (or inject into) a query."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def red_discovery(namespace: str) -> str:
    """Which request counters the namespace's services expose, per service."""
    names = f"{CLASSIC_REQUESTS}|{OTEL_REQUESTS}"
    return f'count by (__name__, service) ({{__name__=~"{names}", namespace={quote(namespace)}}})'


def red_queries(namespace: str, convention: RedConvention) -> list[MetricQuery]:
    ns = quote(namespace)
    if convention == "classic":
        total = f"{CLASSIC_REQUESTS}{{namespace={ns}}}"
        errors = f'{CLASSIC_REQUESTS}{{namespace={ns}, code=~"5.."}}'
        buckets = f"http_request_duration_seconds_bucket{{namespace={ns}}}"
    else:
        total = f"{OTEL_REQUESTS}{{namespace={ns}}}"
        errors = f'{OTEL_REQUESTS}{{namespace={ns}, http_response_status_code=~"5.."}}'
        buckets = f"http_server_request_duration_seconds_bucket{{namespace={ns}}}"
    by = "namespace, service"
    return [
        MetricQuery(
            "error_ratio",
            # "or ... * 0": a service with no 5xx at all has no error series; its ratio is 0, not missing.
            f"(sum by ({by}) (rate({errors}[5m])) or sum by ({by}) (rate({total}[5m])) * 0)"
            f" / sum by ({by}) (rate({total}[5m]))",
            "service",
            "share of requests failing with 5xx",
            0.01,
            now_expr=f"(sum by ({by}) (irate({errors}[3m])) or sum by ({by}) (irate({total}[3m])) * 0)"
            f" / sum by ({by}) (irate({total}[3m]))",
        ),
        MetricQuery(
            "latency_p99",
            f"histogram_quantile(0.99, sum by ({by}, le) (rate({buckets}[5m])))",
            "service",
            "p99 request latency",
            0.01,
            "s",
            now_expr=f"histogram_quantile(0.99, sum by ({by}, le) (irate({buckets}[3m])))",
        ),
        MetricQuery("request_rate", f"sum by ({by}) (rate({total}[5m]))", "service", "requests per second", 0.1, "/s"),
    ]


def saturation_queries(namespace: str) -> list[MetricQuery]:
    ns = quote(namespace)
    by = "namespace, pod"
    return [
        MetricQuery(
            "cpu_usage",
            f'sum by ({by}) (rate(container_cpu_usage_seconds_total{{namespace={ns}, container!=""}}[5m]))',
            "pod",
            "CPU used",
            0.01,
            " cores",
        ),
        MetricQuery(
            "cpu_throttling",
            f"sum by ({by}) (rate(container_cpu_cfs_throttled_periods_total{{namespace={ns}}}[5m]))"
            f" / sum by ({by}) (rate(container_cpu_cfs_periods_total{{namespace={ns}}}[5m]))",
            "pod",
            "share of CPU periods throttled",
            0.02,
            now_expr=f"sum by ({by}) (irate(container_cpu_cfs_throttled_periods_total{{namespace={ns}}}[3m]))"
            f" / sum by ({by}) (irate(container_cpu_cfs_periods_total{{namespace={ns}}}[3m]))",
        ),
        MetricQuery(
            "memory_of_limit",
            f'sum by ({by}) (container_memory_working_set_bytes{{namespace={ns}, container!=""}})'
            f' / sum by ({by}) (kube_pod_container_resource_limits{{namespace={ns}, resource="memory"}})',
            "pod",
            "memory working set as a share of the limit",
            0.02,
        ),
        MetricQuery(
            # The running total, not a rate: a restart is a step that stays, which the change detector can see.
            "restarts",
            f"sum by ({by}) (kube_pod_container_status_restarts_total{{namespace={ns}}})",
            "pod",
            "container restarts (total)",
            0.5,
        ),
        MetricQuery(
            "replicas_available",
            f"sum by (namespace, deployment) (kube_deployment_status_replicas_available{{namespace={ns}}})"
            f" / sum by (namespace, deployment) (kube_deployment_spec_replicas{{namespace={ns}}})",
            "deployment",
            "available replicas as a share of desired",
            0.05,
        ),
        MetricQuery(
            "pool_usage",
            f'sum by (namespace, service, pool_name) (db_client_connections_usage{{namespace={ns}, state="used"}})'
            f" / sum by (namespace, service, pool_name) (db_client_connections_max{{namespace={ns}}})",
            "service",
            "connection pool in use",
            0.02,
        ),
        MetricQuery(
            "pool_pending",
            f"sum by (namespace, service, pool_name) (db_client_connections_pending_requests{{namespace={ns}}})",
            "service",
            "requests waiting for a pooled connection",
            0.5,
        ),
        MetricQuery(
            "volume_free",
            f"sum by (namespace, persistentvolumeclaim) (kubelet_volume_stats_available_bytes{{namespace={ns}}})"
            f" / sum by (namespace, persistentvolumeclaim) (kubelet_volume_stats_capacity_bytes{{namespace={ns}}})",
            "persistentvolumeclaim",
            "free share of the volume",
            0.01,
        ),
        MetricQuery(
            "probe_success",
            f"min by (namespace, service) (probe_success{{namespace={ns}}})",
            "service",
            "blackbox probe success",
            0.2,  # an indicator: a full flip (1 -> 0) must score well past the threshold
        ),
    ]


def cluster_queries() -> list[MetricQuery]:
    """Shared infrastructure whose failure shows up in every namespace: DNS and nodes."""
    return [
        MetricQuery(
            "dns_servfail",
            'sum(rate(coredns_dns_responses_total{rcode="SERVFAIL"}[5m]))',
            "",
            "CoreDNS SERVFAIL answers per second",
            0.05,
            "/s",
        ),
        MetricQuery(
            # Packet loss or a path MTU problem shows as retransmits on the nodes involved.
            "node_tcp_retransmits",
            "sum by (instance) (rate(node_netstat_Tcp_RetransSegs[5m]))",
            "instance",
            "TCP segments retransmitted per second",
            1.0,
            "/s",
        ),
        MetricQuery(
            "node_not_ready",
            'sum by (node) (kube_node_status_condition{condition="Ready", status=~"false|unknown"})',
            "node",
            "node not Ready",
            0.2,
        ),
    ]


@dataclass(frozen=True)
class ConditionQuery:
    """A state that matters now whether or not it changed lately; the expression returns only offending series."""

    metric: str
    expr: str
    subject: str
    description: str  # completes "<subject>: <description> <value>"
    unit: str = ""
    scale: float = 1.0  # divide the value by this for display (e.g. seconds -> hours)
    past_description: str = ""  # for a negative value, e.g. "TLS certificate expired ... ago"


def condition_queries(namespace: str) -> list[ConditionQuery]:
    ns = quote(namespace)
    return [
        ConditionQuery(
            "cert_expires_in",
            f"min by (namespace, service, instance) (probe_ssl_earliest_cert_expiry{{namespace={ns}}} - time())"
            " < 7 * 86400",
            "service",
            "TLS certificate expires in",
            "h",
            3600.0,
            "TLS certificate expired, ago:",
        ),
        ConditionQuery(
            "volume_free_now",
            f"sum by (namespace, persistentvolumeclaim) (kubelet_volume_stats_available_bytes{{namespace={ns}}})"
            f" / sum by (namespace, persistentvolumeclaim) (kubelet_volume_stats_capacity_bytes{{namespace={ns}}})"
            " < 0.10",
            "persistentvolumeclaim",
            "free share of the volume is",
        ),
        ConditionQuery(
            "node_not_ready_now",
            'max by (node) (kube_node_status_condition{condition="Ready", status=~"false|unknown"}) > 0',
            "node",
            "node is not Ready",
        ),
        ConditionQuery(
            "node_filesystem_free_now",
            'min by (instance, mountpoint) (node_filesystem_avail_bytes{fstype!~"tmpfs|overlay"}'
            ' / node_filesystem_size_bytes{fstype!~"tmpfs|overlay"}) < 0.10',
            "instance",
            "free share of the node filesystem is",
        ),
    ]


def fill(promql: str, namespace: str, workload: str, pod: str) -> str:
    """A runbook's PromQL template with ``$namespace``, ``$workload`` and ``$pod`` as quoted PromQL strings."""
    return Template(promql).substitute(namespace=quote(namespace), workload=quote(workload), pod=quote(pod))


def runbook_queries(queries: Sequence[RunbookQuery], namespace: str, workload: str, pod: str) -> list[MetricQuery]:
    """A runbook's own templates, filled in with quoted values."""
    return [
        MetricQuery(
            query.metric,
            fill(query.promql, namespace, workload, pod),
            query.subject,
            query.description,
            query.absolute_floor or 1e-9,
            query.unit,
        )
        for query in queries
    ]


def pod_owner_queries(namespace: str) -> tuple[str, str]:
    """(pod -> ReplicaSet, ReplicaSet -> Deployment) from kube-state-metrics."""
    ns = quote(namespace)
    return (
        f'max by (pod, owner_name) (kube_pod_owner{{namespace={ns}, owner_kind="ReplicaSet"}})',
        f'max by (replicaset, owner_name) (kube_replicaset_owner{{namespace={ns}, owner_kind="Deployment"}})',
    )
