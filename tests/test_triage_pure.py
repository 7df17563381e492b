"""Unit tests of the pure logic: identity, labels, PromQL, runbooks, alerts, planning, summaries, config.

No Temporal, no network. Payloads come from ``tests/payloads/`` (copies; see its README for provenance).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from config.durations import format_duration, parse_duration
from config.settings import PROJECT_ROOT, Settings
from models.alertmanager import AlertmanagerWebhook
from models.evidence import PodStatus
from models.incident import (
    Action,
    ActionType,
    Alert,
    AlertNotification,
    Category,
    DecisionRecord,
    Diagnosis,
    Evidence,
    EvidenceGap,
    IncidentState,
    Phase,
    Plan,
    Severity,
    VerificationRecord,
)
from triage.alerts import merge_notification, notification_from_webhook
from triage.identity import group_key_from_fingerprints, incident_workflow_id, labels_fingerprint
from triage.labels import highest_severity, namespace_of, pod_of, severity_of, workload_of
from triage.planning import diagnose, lead_alert, triage
from triage.promql import expr_from_generator_url, series_of_alerts
from triage.runbooks import Runbook, RunbookError, find_runbook, load_runbook, load_runbooks
from triage.summary import details_markdown, one_line_summary

PAYLOADS = Path(__file__).parent / "payloads"
SHIPPED_RUNBOOKS = PROJECT_ROOT / "runbooks"

FIRING_GROUP_KEY = '{}/{severity=~"critical|warning"}:{alertname="HighErrorRate", namespace="food"}'
HIGH_ERROR_RATE_EXPR = (
    'sum by (namespace, service) (rate(http_requests_total{code=~"5.."}[5m]))'
    " / sum by (namespace, service) (rate(http_requests_total[5m])) > 0.05"
)
T0 = datetime(2025, 6, 3, 14, 2, 17, tzinfo=UTC)
RECEIVED = datetime(2025, 6, 3, 14, 3, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------- helpers


def load_payload(name: str) -> dict[str, Any]:
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


def webhook(name: str) -> AlertmanagerWebhook:
    return AlertmanagerWebhook.model_validate(load_payload(name))


def make_alert(
    fingerprint: str = "fp-1",
    status: str = "firing",
    starts_at: datetime = T0,
    generator_url: str = "",
    annotations: dict[str, str] | None = None,
    **labels: str,
) -> Alert:
    return Alert(
        fingerprint=fingerprint,
        status=status,
        labels=labels,
        annotations=annotations or {},
        starts_at=starts_at,
        generator_url=generator_url,
    )


def make_notification(*alerts: Alert, group_key: str = "gk", status: str = "firing") -> AlertNotification:
    return AlertNotification(group_key=group_key, status=status, alerts=list(alerts), received_at=RECEIVED)


def shipped_runbooks() -> list[Runbook]:
    return load_runbooks(SHIPPED_RUNBOOKS)


def valid_runbook(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "test-runbook",
        "title": "A test runbook",
        "match": {"alertnames": ["TestAlert"]},
        "hypotheses": [
            {"category": "bad_deploy", "prior": 0.6, "summary": "a rollout broke it"},
            {"category": "dependency_failure", "prior": 0.4, "summary": "a dependency broke it"},
        ],
        "actions": [
            {"type": "rollback", "target": "workload", "addresses": ["bad_deploy"], "reason": "undo it"},
            {"type": "escalate", "target": "none", "risk": "low", "addresses": ["dependency_failure"]},
        ],
    }
    data.update(overrides)
    return data


def write_runbook(directory: Path, name: str, data: Any) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def runbook_error(path: Path) -> str:
    with pytest.raises(RunbookError) as excinfo:
        load_runbook(path)
    return str(excinfo.value)


# ---------------------------------------------------------------------------------------------- identity


def test_incident_workflow_id_is_prefix_plus_16_hex_of_sha256_of_group_key() -> None:
    # Pinned value computed independently (printf '%s' KEY | sha256sum).
    assert incident_workflow_id(FIRING_GROUP_KEY) == "incident-1034dd478d60df36"
    assert incident_workflow_id("{}:{}") == "incident-cc9772a1ec901d26"
    assert incident_workflow_id("x") == "incident-" + hashlib.sha256(b"x").hexdigest()[:16]


def test_incident_workflow_id_is_stable_and_distinguishes_group_keys() -> None:
    first = incident_workflow_id(FIRING_GROUP_KEY)
    assert first == incident_workflow_id(FIRING_GROUP_KEY)
    assert re.fullmatch(r"incident-[0-9a-f]{16}", first)
    other = FIRING_GROUP_KEY.replace("food", "pay")
    assert incident_workflow_id(other) != first


def test_labels_fingerprint_is_order_independent_16_hex() -> None:
    a = labels_fingerprint({"alertname": "X", "namespace": "food", "severity": "critical"})
    b = labels_fingerprint({"severity": "critical", "namespace": "food", "alertname": "X"})
    assert a == b
    assert re.fullmatch(r"[0-9a-f]{16}", a)


def test_labels_fingerprint_changes_with_any_label_value_or_name() -> None:
    base = {"alertname": "X", "namespace": "food"}
    fingerprints = {
        labels_fingerprint(base),
        labels_fingerprint({**base, "namespace": "pay"}),
        labels_fingerprint({"alertname": "X", "namespac": "food"}),
        labels_fingerprint({**base, "pod": "p"}),
        labels_fingerprint({}),
    }
    assert len(fingerprints) == 5


def test_labels_fingerprint_does_not_confuse_key_value_boundaries() -> None:
    # A naive "k=v,k=v" join would make these equal.
    assert labels_fingerprint({"a": "b,c=d"}) != labels_fingerprint({"a": "b", "c": "d"})
    assert labels_fingerprint({"ab": "c"}) != labels_fingerprint({"a": "bc"})


def test_group_key_from_fingerprints_is_sorted_and_deduplicated() -> None:
    assert group_key_from_fingerprints(["c", "a", "b", "a"]) == "a,b,c"
    assert group_key_from_fingerprints(iter(["b", "a"])) == group_key_from_fingerprints(["a", "b"])
    assert group_key_from_fingerprints([]) == ""


# ---------------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"severity": "critical"}, Severity.critical),
        ({"severity": "CRITICAL "}, Severity.critical),
        ({"severity": "page"}, Severity.high),
        ({"severity": "severe"}, Severity.high),
        ({"severity": "error"}, Severity.high),
        ({"severity": "warning"}, Severity.medium),
        ({"severity": "info"}, Severity.low),
        ({"severity": "none"}, Severity.low),
        ({"priority": "P1"}, Severity.critical),
        ({"priority": "p4"}, Severity.low),
        ({"severity": "info", "priority": "p1"}, Severity.low),  # severity wins over priority
        ({"severity": "some"}, Severity.medium),  # unknown words default to medium
        ({}, Severity.medium),
    ],
)
def test_severity_of(labels: dict[str, str], expected: Severity) -> None:
    assert severity_of(labels) is expected


def test_highest_severity_picks_the_most_severe() -> None:
    assert highest_severity([{"severity": "info"}, {"severity": "critical"}, {"severity": "warning"}]) is (
        Severity.critical
    )
    assert highest_severity([{"severity": "info"}, {"severity": "warning"}]) is Severity.medium
    assert highest_severity([{"severity": "info"}, {"severity": "minor"}]) is Severity.low
    assert highest_severity([{"severity": "high"}, {"severity": "low"}]) is Severity.high


def test_highest_severity_of_nothing_is_the_default() -> None:
    assert highest_severity([]) is Severity.medium


def test_namespace_of_prefers_namespace_and_skips_empty_values() -> None:
    assert namespace_of({"namespace": "food", "exported_namespace": "other"}) == "food"
    assert namespace_of({"namespace": "", "exported_namespace": "shop"}) == "shop"
    assert namespace_of({"kubernetes_namespace": "default"}) == "default"
    assert namespace_of({"k8s_namespace_name": "otel"}) == "otel"
    assert namespace_of({"alertname": "X"}) == ""


def test_pod_of_reads_the_usual_pod_labels() -> None:
    assert pod_of({"pod": "a-0", "kubernetes_pod_name": "b-0"}) == "a-0"
    assert pod_of({"kubernetes_pod_name": "prometheus-0"}) == "prometheus-0"
    assert pod_of({"pod_name": "c-1"}) == "c-1"
    assert pod_of({"pod": ""}) == ""


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"pod": "search-894587957d-x7k2p"}, "search"),
        ({"pod": "payment-api-7d4b9c8f6-zb2xw"}, "payment-api"),
        ({"pod": "db-0"}, "db"),
        ({"pod": "redis-master-12"}, "redis-master"),
        ({"kubernetes_pod_name": "prometheus-0"}, "prometheus"),
        ({"pod": "standalone"}, "standalone"),  # unrecognised pod names are returned whole
        ({"pod": "search-894587957d-x7k2p", "deployment": "search-v2"}, "search-v2"),
        ({"statefulset": "db", "pod": "other-0"}, "db"),
        ({"pod": "db-0", "service": "db-svc"}, "db"),  # the pod beats the service label
        ({"service": "search", "job": "blackbox"}, "search"),
        ({"app": "cart", "container": "main"}, "cart"),
        ({"job": "docker_nodes"}, "docker_nodes"),
        ({"job": "kube-state-metrics", "node": "ip-10-0-1-2"}, ""),  # an exporter reporting on a node
        ({"job": "kubelet", "persistentvolumeclaim": "data-db-0"}, ""),
        ({"alertname": "X", "namespace": "food"}, ""),
    ],
)
def test_workload_of(labels: dict[str, str], expected: str) -> None:
    assert workload_of(labels) == expected


@pytest.mark.parametrize("pod", ["kube-proxy-x7k2p", "node-exporter-x7k2p"])
def test_workload_of_daemonset_pod_is_not_truncated_to_another_workload(pod: str) -> None:
    # DaemonSet pods are named <daemonset>-<5 char suffix>. "proxy"/"exporter" cannot be a ReplicaSet hash
    # (Kubernetes draws those from "bcdfghjklmnpqrstvwxz2456789": no vowels), so "kube"/"node" is a wrong
    # and possibly existing Deployment to roll back. The DaemonSet name or the whole pod name are both fine.
    name = pod.rsplit("-", 1)[0]
    assert workload_of({"pod": pod, "namespace": "kube-system"}) in {name, pod}


# ---------------------------------------------------------------------------------------------- promql


def test_expr_from_generator_url_decodes_url_encoded_expression() -> None:
    url = load_payload("alertmanager_firing.json")["alerts"][0]["generatorURL"]
    assert expr_from_generator_url(url) == HIGH_ERROR_RATE_EXPR


def test_expr_from_generator_url_after_go_json_escaping_of_ampersand() -> None:
    # Go's encoding/json writes "&" as \u0026; the JSON layer must give back a plain "&" separator.
    raw = '{"u": "http://p:9090/graph?g0.expr=up+%3D%3D+0\\u0026g0.tab=1"}'
    assert "\\u0026" in raw
    assert expr_from_generator_url(json.loads(raw)["u"]) == "up == 0"


def test_expr_from_generator_url_of_real_resolved_payload_with_u0026() -> None:
    text = (PAYLOADS / "resolved_with_notification_reason.json").read_text(encoding="utf-8")
    assert "\\u0026g0.tab=1" in text  # the copy kept Go's escaping
    url = json.loads(text)["alerts"][0]["generatorURL"]
    assert expr_from_generator_url(url) == 'increase(checks_total{status="error"}[5m]) > 2'


def test_expr_from_generator_url_of_unencoded_url() -> None:
    url = load_payload("devopsext_alertmanager.json")["alerts"][0]["generatorURL"]
    assert expr_from_generator_url(url) == "rate(process_cpu_seconds_total[1m]) > 0.004"


def test_expr_from_generator_url_ignores_other_panels_and_html_escaped_ampersand() -> None:
    url = "http://p/graph?g1.expr=down&g0.expr=up%7Bjob%3D%22api%22%7D&amp;g0.tab=0"
    assert expr_from_generator_url(url) == 'up{job="api"}'


@pytest.mark.parametrize(
    "url",
    [
        "",
        "my.prometheusserver.url",
        "http://prometheus:9090/graph",
        "http://prometheus:9090/graph?g0.tab=1",
        "http://prometheus:9090/graph?g0.expr=&g0.tab=1",
        "http://prometheus:9090/graph?g0.expr=+++&g0.tab=1",
        "http://prometheus:9090/graph?g1.expr=up",
    ],
)
def test_expr_from_generator_url_without_expression_is_none(url: str) -> None:
    assert expr_from_generator_url(url) is None


def test_series_of_alerts_keeps_only_series_of_the_incident() -> None:
    alerts = [{"alertname": "HighErrorRate", "severity": "critical", "namespace": "food", "service": "search"}]
    ours = {"namespace": "food", "service": "search"}
    theirs = {"namespace": "pay", "service": "checkout"}
    same_ns_other_service = {"namespace": "food", "service": "cart"}
    assert series_of_alerts([theirs, ours, same_ns_other_service], alerts) == [ours]


def test_series_of_alerts_ignores_alert_only_labels() -> None:
    alerts = [{"alertname": "A", "severity": "critical", "team": "core", "namespace": "food"}]
    series = {"namespace": "food", "severity": "warning", "team": "other", "alertname": "B"}
    assert series_of_alerts([series], alerts) == [series]


def test_series_of_alerts_matches_any_alert_once_and_keeps_order() -> None:
    alerts = [{"namespace": "food"}, {"namespace": "pay"}, {"instance": "x"}]
    series = [{"namespace": "pay"}, {"namespace": "shop", "instance": "y"}, {"namespace": "food"}]
    # The pay series matches two alerts (the second, and vacuously the third) but is listed once; the shop
    # series conflicts with every alert (namespace with the first two, instance with the third).
    assert series_of_alerts(series, alerts) == [{"namespace": "pay"}, {"namespace": "food"}]


def test_series_of_alerts_aggregate_without_labels_belongs_to_the_alert() -> None:
    assert series_of_alerts([{}], [{"alertname": "X", "namespace": "food"}]) == [{}]
    assert series_of_alerts([{"namespace": "food"}], []) == []


# ---------------------------------------------------------------------------------------------- runbooks


def test_every_shipped_runbook_loads() -> None:
    files = sorted(SHIPPED_RUNBOOKS.glob("*.yaml"))
    assert files, "no runbooks shipped"
    for path in files:
        assert isinstance(load_runbook(path), Runbook), path.name
    runbooks = shipped_runbooks()
    assert len(runbooks) == len(files)
    assert len({runbook.id for runbook in runbooks}) == len(runbooks)


def test_shipped_mutating_actions_have_a_target() -> None:
    for runbook in shipped_runbooks():
        categories = [h.category for h in runbook.hypotheses]
        assert len(set(categories)) == len(categories), f"{runbook.id}: a category is listed twice"
        for action in runbook.actions:
            if action.type.mutating:
                # A mutating action aimed at nothing could never run: it would always degrade to escalate.
                assert action.target != "none", f"{runbook.id}: {action.type} has no target"


def test_shipped_high_error_rate_runbook_covers_high_error_rate() -> None:
    runbook = find_runbook(shipped_runbooks(), "HighErrorRate", {"namespace": "food"})
    assert runbook is not None
    assert runbook.id == "high-error-rate"
    assert find_runbook(shipped_runbooks(), "KubePodCrashLooping", {}).id == "kube-pod-crash-looping"
    assert find_runbook(shipped_runbooks(), "NoSuchAlert", {}) is None


def test_load_runbook_valid_file(tmp_path: Path) -> None:
    runbook = load_runbook(write_runbook(tmp_path, "ok.yaml", valid_runbook()))
    assert runbook.id == "test-runbook"
    assert [h.category for h in runbook.hypotheses] == [Category.bad_deploy, Category.dependency_failure]
    assert runbook.actions[0].type is ActionType.rollback
    assert runbook.actions[0].risk == "medium"  # the default
    assert runbook.actions[1].target == "none"


def test_bad_category_names_file_and_key(tmp_path: Path) -> None:
    data = valid_runbook()
    data["hypotheses"][0]["category"] = "cosmic_rays"
    path = write_runbook(tmp_path, "bad-category.yaml", data)
    message = runbook_error(path)
    assert str(path) in message
    assert "hypotheses.0.category" in message


def test_bad_prior_names_file_and_key(tmp_path: Path) -> None:
    data = valid_runbook()
    data["hypotheses"][1]["prior"] = 1.5
    path = write_runbook(tmp_path, "bad-prior.yaml", data)
    message = runbook_error(path)
    assert str(path) in message
    assert "hypotheses.1.prior" in message


def test_bad_action_type_names_file_and_key(tmp_path: Path) -> None:
    data = valid_runbook()
    data["actions"][0]["type"] = "reboot_datacenter"
    path = write_runbook(tmp_path, "bad-action.yaml", data)
    message = runbook_error(path)
    assert str(path) in message
    assert "actions.0.type" in message


def test_unknown_key_is_rejected_and_named(tmp_path: Path) -> None:
    path = write_runbook(tmp_path, "extra.yaml", valid_runbook(severity="high"))
    message = runbook_error(path)
    assert str(path) in message
    assert "severity" in message


def test_bad_id_is_rejected(tmp_path: Path) -> None:
    path = write_runbook(tmp_path, "bad-id.yaml", valid_runbook(id="High_Error"))
    message = runbook_error(path)
    assert str(path) in message
    assert re.search(r"\bid\b", message)


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    data = valid_runbook()
    del data["match"]
    path = write_runbook(tmp_path, "no-match.yaml", data)
    message = runbook_error(path)
    assert str(path) in message
    assert "match" in message


def test_empty_hypotheses_are_rejected(tmp_path: Path) -> None:
    path = write_runbook(tmp_path, "empty.yaml", valid_runbook(hypotheses=[], actions=[]))
    message = runbook_error(path)
    assert "hypotheses" in message


def test_action_addressing_unknown_category_is_rejected(tmp_path: Path) -> None:
    data = valid_runbook()
    data["actions"][1]["addresses"] = ["dependency_failure", "oom_kill"]
    path = write_runbook(tmp_path, "unknown-address.yaml", data)
    message = runbook_error(path)
    assert str(path) in message
    assert "actions.1.addresses" in message
    assert "oom_kill" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("- just\n- a list\n", "mapping"),
        ("", "mapping"),
        ("id: [unclosed\n", "cannot read"),
    ],
)
def test_unreadable_or_non_mapping_runbook(tmp_path: Path, content: str, expected: str) -> None:
    path = write_runbook(tmp_path, "weird.yaml", content)
    message = runbook_error(path)
    assert str(path) in message
    assert expected in message


def test_missing_runbook_file_raises_runbook_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert str(path) in runbook_error(path)


def test_load_runbooks_rejects_duplicate_ids_naming_both_files(tmp_path: Path) -> None:
    first = write_runbook(tmp_path, "a.yaml", valid_runbook())
    second = write_runbook(tmp_path, "b.yaml", valid_runbook(title="same id, other file"))
    with pytest.raises(RunbookError) as excinfo:
        load_runbooks(tmp_path)
    message = str(excinfo.value)
    assert str(second) in message
    assert str(first) in message
    assert "test-runbook" in message


def test_load_runbooks_stops_at_a_bad_file_and_names_it(tmp_path: Path) -> None:
    write_runbook(tmp_path, "a-good.yaml", valid_runbook())
    bad = valid_runbook(id="other")
    bad["hypotheses"][0]["category"] = "nope"
    bad_path = write_runbook(tmp_path, "b-bad.yaml", bad)
    with pytest.raises(RunbookError) as excinfo:
        load_runbooks(tmp_path)
    assert str(bad_path) in str(excinfo.value)
    assert "hypotheses.0.category" in str(excinfo.value)


def test_load_runbooks_reads_only_yaml_files_in_sorted_order(tmp_path: Path) -> None:
    write_runbook(tmp_path, "b.yaml", valid_runbook(id="bbb"))
    write_runbook(tmp_path, "a.yaml", valid_runbook(id="aaa"))
    (tmp_path / "README.md").write_text("not a runbook: [", encoding="utf-8")
    assert [runbook.id for runbook in load_runbooks(tmp_path)] == ["aaa", "bbb"]


def test_load_runbooks_of_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(RunbookError, match="does not exist"):
        load_runbooks(tmp_path / "nowhere")


def test_load_runbooks_of_empty_directory_is_empty(tmp_path: Path) -> None:
    assert load_runbooks(tmp_path) == []


def test_find_runbook_prefers_label_matchers_regardless_of_order() -> None:
    generic = Runbook.model_validate(valid_runbook(id="generic"))
    specific = Runbook.model_validate(
        valid_runbook(id="payments", match={"alertnames": ["TestAlert"], "labels": {"team": "payments"}})
    )
    for order in ([generic, specific], [specific, generic]):
        assert find_runbook(order, "TestAlert", {"team": "payments", "namespace": "pay"}).id == "payments"
        assert find_runbook(order, "TestAlert", {"team": "search"}).id == "generic"
        assert find_runbook(order, "TestAlert", {}).id == "generic"
        assert find_runbook(order, "OtherAlert", {"team": "payments"}) is None


def test_find_runbook_label_matcher_needs_every_label() -> None:
    specific = Runbook.model_validate(
        valid_runbook(id="s", match={"alertnames": ["TestAlert"], "labels": {"team": "p", "env": "prod"}})
    )
    assert find_runbook([specific], "TestAlert", {"team": "p"}) is None
    assert find_runbook([specific], "TestAlert", {"team": "p", "env": "prod"}).id == "s"


# ---------------------------------------------------------------------------------------------- webhook model


def test_firing_payload_parses() -> None:
    hook = webhook("alertmanager_firing.json")
    assert hook.version == "4"
    assert hook.status == "firing"
    assert hook.group_key == FIRING_GROUP_KEY
    assert hook.truncated_alerts == 0
    assert hook.receiver == "incident-agent"
    assert hook.group_labels == {"alertname": "HighErrorRate", "namespace": "food"}
    [alert] = hook.alerts
    assert alert.status == "firing"
    assert alert.labels == {
        "alertname": "HighErrorRate",
        "namespace": "food",
        "service": "search",
        "severity": "critical",
    }
    assert alert.annotations["summary"]
    assert alert.fingerprint == "5c7a5e0b1f3d9a42"
    assert alert.starts_at == datetime(2025, 6, 3, 14, 2, 17, 421000, tzinfo=UTC)
    assert alert.ends_at is None  # 0001-01-01T00:00:00Z
    assert "g0.expr=" in alert.generator_url


def test_msteams_payload_parses_and_alerts_inherit_status() -> None:
    hook = webhook("msteams_prom_post_request.json")
    assert hook.status == "firing"
    assert hook.truncated_alerts == 0  # absent -> default
    [alert] = hook.alerts
    assert alert.status == "firing"  # absent in the alert: inherited
    assert alert.fingerprint is None
    assert alert.generator_url == ""
    assert alert.ends_at is None
    assert alert.starts_at.utcoffset() == timedelta(hours=-5)


def test_prom2teams_payload_without_status_is_rejected_naming_status() -> None:
    data = load_payload("prom2teams_without_status.json")
    assert "status" not in data
    with pytest.raises(ValidationError) as excinfo:
        AlertmanagerWebhook.model_validate(data)
    errors = excinfo.value.errors()
    assert [error["loc"] for error in errors] == [("status",)]
    assert errors[0]["type"] == "missing"


def test_resolved_payload_with_notification_reason_parses() -> None:
    hook = webhook("resolved_with_notification_reason.json")
    assert hook.status == "resolved"
    assert hook.group_key == "{}:{}"
    [alert] = hook.alerts
    assert alert.status == "resolved"
    assert alert.ends_at == datetime(2026, 8, 7, 7, 36, 13, 599000, tzinfo=UTC)
    assert not hasattr(hook, "notification_reason")


def test_devopsext_payload_parses() -> None:
    hook = webhook("devopsext_alertmanager.json")
    [alert] = hook.alerts
    assert alert.status == "firing"
    assert alert.ends_at is None
    assert alert.fingerprint == "f8767e67485c740c"
    assert hook.group_key == '{}/{}:{alertname="Process Open FDS"}'


def test_prom2teams_multiple_payload_parses() -> None:
    hook = webhook("prom2teams_all_ok_multiple.json")
    assert hook.status == "resolved"
    assert hook.group_key is None
    assert [alert.status for alert in hook.alerts] == ["resolved", "resolved"]
    # 07:01:37.803000000Z and 07:01:37.803000Z are the same instant.
    assert hook.alerts[0].starts_at == hook.alerts[1].starts_at
    assert hook.alerts[1].ends_at is not None


def test_every_payload_in_the_folder_is_accounted_for() -> None:
    expected_valid = {
        "alertmanager_firing.json",
        "msteams_prom_post_request.json",
        "resolved_with_notification_reason.json",
        "devopsext_alertmanager.json",
        "prom2teams_all_ok_multiple.json",
    }
    expected_invalid = {"prom2teams_without_status.json": ("status",)}
    # Other sources keep their fixtures here too, prefixed by source (kube_, loki_): they are not webhook bodies.
    names = {path.name for path in PAYLOADS.glob("*.json") if not path.name.startswith(("kube_", "loki_"))}
    assert names == expected_valid | set(expected_invalid)
    for name in sorted(expected_valid):
        assert webhook(name).alerts, name
    for name, loc in expected_invalid.items():
        with pytest.raises(ValidationError) as excinfo:
            webhook(name)
        assert loc in [error["loc"] for error in excinfo.value.errors()], name


def _minimal(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": "4",
        "status": "firing",
        "alerts": [{"labels": {"alertname": "X"}, "startsAt": "2025-01-01T00:00:00Z"}],
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize("version", ["3", "5", 4, None])
def test_webhook_version_must_be_4(version: Any) -> None:
    with pytest.raises(ValidationError) as excinfo:
        AlertmanagerWebhook.model_validate(_minimal(version=version))
    assert ("version",) in [error["loc"] for error in excinfo.value.errors()]


def test_webhook_empty_alerts_rejected() -> None:
    with pytest.raises(ValidationError) as excinfo:
        AlertmanagerWebhook.model_validate(_minimal(alerts=[]))
    assert [error["loc"] for error in excinfo.value.errors()] == [("alerts",)]


def test_webhook_unknown_status_rejected() -> None:
    with pytest.raises(ValidationError) as excinfo:
        AlertmanagerWebhook.model_validate(_minimal(status="pending"))
    assert ("status",) in [error["loc"] for error in excinfo.value.errors()]
    body = _minimal()
    body["alerts"][0]["status"] = "pending"
    with pytest.raises(ValidationError) as excinfo:
        AlertmanagerWebhook.model_validate(body)
    assert ("alerts", 0, "status") in [error["loc"] for error in excinfo.value.errors()]


def test_webhook_alert_needs_labels_and_starts_at() -> None:
    with pytest.raises(ValidationError) as excinfo:
        AlertmanagerWebhook.model_validate(_minimal(alerts=[{"annotations": {}}]))
    locs = {error["loc"] for error in excinfo.value.errors()}
    assert ("alerts", 0, "labels") in locs
    assert ("alerts", 0, "startsAt") in locs


def test_webhook_alert_status_inherits_or_keeps_its_own() -> None:
    body = _minimal(status="resolved")
    body["alerts"] = [
        {"labels": {"a": "1"}, "startsAt": "2025-01-01T00:00:00Z"},
        {"status": "firing", "labels": {"a": "2"}, "startsAt": "2025-01-01T00:00:00Z"},
    ]
    hook = AlertmanagerWebhook.model_validate(body)
    assert [alert.status for alert in hook.alerts] == ["resolved", "firing"]


def test_webhook_zero_end_time_is_none_but_real_end_is_kept() -> None:
    body = _minimal()
    body["alerts"] = [
        {"labels": {"a": "1"}, "startsAt": "2025-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z"},
        {"labels": {"a": "2"}, "startsAt": "2025-01-01T00:00:00Z", "endsAt": "2025-01-01T00:05:00Z"},
    ]
    hook = AlertmanagerWebhook.model_validate(body)
    assert hook.alerts[0].ends_at is None
    assert hook.alerts[1].ends_at == datetime(2025, 1, 1, 0, 5, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------- alerts


def test_notification_from_firing_webhook() -> None:
    notification = notification_from_webhook(webhook("alertmanager_firing.json"), RECEIVED)
    assert notification.source == "alertmanager"
    assert notification.group_key == FIRING_GROUP_KEY
    assert notification.status == "firing"
    assert notification.receiver == "incident-agent"
    assert notification.common_labels["service"] == "search"
    assert notification.external_url == "http://alertmanager:9093"
    assert notification.received_at == RECEIVED
    [alert] = notification.alerts
    assert alert.fingerprint == "5c7a5e0b1f3d9a42"
    assert alert.status == "firing"
    assert alert.alertname == "HighErrorRate"
    assert alert.ends_at is None
    assert expr_from_generator_url(alert.generator_url) == HIGH_ERROR_RATE_EXPR


def test_notification_fills_missing_fingerprint_and_status() -> None:
    hook = webhook("msteams_prom_post_request.json")
    notification = notification_from_webhook(hook, RECEIVED)
    [alert] = notification.alerts
    assert alert.fingerprint == labels_fingerprint(hook.alerts[0].labels)
    assert alert.status == "firing"
    assert notification.group_key == '{}:{alertname="high_memory_load"}'


def test_notification_without_group_key_derives_one_from_fingerprints() -> None:
    notification = notification_from_webhook(webhook("prom2teams_all_ok_multiple.json"), RECEIVED)
    assert notification.group_key == "dd19ae3d4e06ac55"  # both alerts share it: deduplicated
    assert notification.status == "resolved"
    assert len(notification.alerts) == 2

    body = _minimal()
    body["alerts"] = [
        {"labels": {"alertname": "B"}, "startsAt": "2025-01-01T00:00:00Z", "fingerprint": "bbbb"},
        {"labels": {"alertname": "A"}, "startsAt": "2025-01-01T00:00:00Z"},
    ]
    derived = notification_from_webhook(AlertmanagerWebhook.model_validate(body), RECEIVED)
    assert derived.group_key == ",".join(sorted(["bbbb", labels_fingerprint({"alertname": "A"})]))


def test_merge_first_notification_opens_the_incident() -> None:
    state = IncidentState()
    notification = notification_from_webhook(webhook("alertmanager_firing.json"), RECEIVED)
    firing, resolved = merge_notification(state, notification)
    assert firing == ["5c7a5e0b1f3d9a42"]
    assert resolved == []
    assert state.notifications == 1
    assert state.group_key == FIRING_GROUP_KEY
    assert state.source == "alertmanager"
    assert [alert.status for alert in state.firing_alerts] == ["firing"]
    assert not state.all_resolved


def test_merge_duplicate_is_idempotent() -> None:
    state = IncidentState()
    notification = notification_from_webhook(webhook("alertmanager_firing.json"), RECEIVED)
    merge_notification(state, notification)
    snapshot = state.alerts.copy()
    assert merge_notification(state, notification) == ([], [])
    assert merge_notification(state, notification.model_copy(deep=True)) == ([], [])
    assert state.alerts == snapshot
    assert state.notifications == 3


def test_merge_resolved_marks_the_alert_resolved() -> None:
    state = IncidentState()
    merge_notification(state, make_notification(make_alert("a"), make_alert("b")))
    resolved_a = make_alert("a", status="resolved").model_copy(update={"ends_at": T0 + timedelta(minutes=9)})
    firing, resolved = merge_notification(state, make_notification(resolved_a, make_alert("b")))
    assert (firing, resolved) == ([], ["a"])
    assert state.alerts["a"].status == "resolved"
    assert state.alerts["a"].ends_at == T0 + timedelta(minutes=9)
    assert [alert.fingerprint for alert in state.firing_alerts] == ["b"]
    assert not state.all_resolved

    assert merge_notification(state, make_notification(make_alert("b", status="resolved"))) == ([], ["b"])
    assert state.all_resolved
    # A repeated resolution says nothing new.
    assert merge_notification(state, make_notification(make_alert("b", status="resolved"))) == ([], [])


def test_merge_late_firing_duplicate_does_not_reopen_a_resolved_alert() -> None:
    state = IncidentState()
    merge_notification(state, make_notification(make_alert("a")))
    merge_notification(state, make_notification(make_alert("a", status="resolved"), status="resolved"))
    firing, resolved = merge_notification(state, make_notification(make_alert("a")))
    assert (firing, resolved) == ([], [])
    assert state.alerts["a"].status == "resolved"
    assert state.all_resolved
    assert state.notifications == 3


def test_merge_refire_with_later_starts_at_reopens() -> None:
    state = IncidentState()
    merge_notification(state, make_notification(make_alert("a")))
    merge_notification(state, make_notification(make_alert("a", status="resolved")))
    later = T0 + timedelta(minutes=30)
    firing, resolved = merge_notification(state, make_notification(make_alert("a", starts_at=later)))
    assert (firing, resolved) == (["a"], [])
    assert state.alerts["a"].status == "firing"
    assert state.alerts["a"].starts_at == later


def test_merge_ignores_a_delivery_about_an_older_instance() -> None:
    state = IncidentState()
    later = T0 + timedelta(minutes=30)
    merge_notification(state, make_notification(make_alert("a", starts_at=later)))
    # The resolution of the previous instance (older startsAt) arrives late: the re-fire stays open.
    firing, resolved = merge_notification(state, make_notification(make_alert("a", status="resolved")))
    assert (firing, resolved) == ([], [])
    assert state.alerts["a"].status == "firing"
    assert state.alerts["a"].starts_at == later


def test_merge_updates_a_firing_alert_silently() -> None:
    state = IncidentState()
    merge_notification(state, make_notification(make_alert("a", annotations={"summary": "old"})))
    again = make_alert("a", annotations={"summary": "new"})
    assert merge_notification(state, make_notification(again)) == ([], [])
    assert state.alerts["a"].annotations == {"summary": "new"}


def test_merge_resolved_alert_first_seen_is_reported_resolved() -> None:
    state = IncidentState()
    firing, resolved = merge_notification(state, make_notification(make_alert("z", status="resolved")))
    assert (firing, resolved) == ([], ["z"])
    assert state.alerts["z"].status == "resolved"


def test_merge_keeps_the_first_group_key() -> None:
    state = IncidentState()
    merge_notification(state, make_notification(make_alert("a"), group_key="first"))
    merge_notification(state, make_notification(make_alert("b"), group_key="second"))
    assert state.group_key == "first"
    assert set(state.alerts) == {"a", "b"}


# ---------------------------------------------------------------------------------------------- triage


def test_triage_of_the_firing_payload() -> None:
    notification = notification_from_webhook(webhook("alertmanager_firing.json"), RECEIVED)
    result = triage(notification.alerts, shipped_runbooks())
    assert result.severity is Severity.critical
    assert result.alertname == "HighErrorRate"
    assert result.namespace == "food"
    assert result.service == "search"
    assert result.title == "search in food returns more than 5% HTTP 5xx responses"
    assert result.alert_expr == HIGH_ERROR_RATE_EXPR
    assert result.runbook_id == "high-error-rate"
    assert result.runbook_title == "High HTTP 5xx error rate"


def test_triage_of_a_sender_without_generator_url_or_runbook() -> None:
    notification = notification_from_webhook(webhook("msteams_prom_post_request.json"), RECEIVED)
    result = triage(notification.alerts, shipped_runbooks())
    assert result.severity is Severity.medium
    assert result.alertname == "high_memory_load"
    assert result.namespace == ""
    assert result.title == "Server High Memory usage"
    assert result.alert_expr is None
    assert result.runbook_id is None
    assert result.runbook_title is None


def test_triage_of_kubernetes_sd_labels() -> None:
    notification = notification_from_webhook(webhook("devopsext_alertmanager.json"), RECEIVED)
    result = triage(notification.alerts, shipped_runbooks())
    assert result.namespace == "default"
    assert result.service == "prometheus"  # from kubernetes_pod_name prometheus-0
    assert result.alert_expr == "rate(process_cpu_seconds_total[1m]) > 0.004"


def test_triage_of_a_resolved_only_group_uses_all_alerts() -> None:
    notification = notification_from_webhook(webhook("resolved_with_notification_reason.json"), RECEIVED)
    result = triage(notification.alerts, shipped_runbooks())
    assert result.severity is Severity.critical
    assert result.alertname == "TargetDown"
    assert result.title == "Target 19 has failed repeatedly in the last 5 minutes"
    assert result.alert_expr == 'increase(checks_total{status="error"}[5m]) > 2'


def test_triage_severity_comes_from_the_most_severe_firing_alert() -> None:
    alerts = [
        make_alert("w", alertname="HighErrorRate", severity="warning", namespace="food", service="search"),
        make_alert("c", alertname="HighErrorRate", severity="critical", namespace="pay", service="checkout"),
        make_alert("i", alertname="HighErrorRate", severity="info", namespace="shop", service="cart"),
    ]
    result = triage(alerts, shipped_runbooks())
    assert result.severity is Severity.critical
    # The critical alert leads: its place names the incident.
    assert (result.namespace, result.service) == ("pay", "checkout")


def test_triage_ignores_resolved_alerts_while_some_fire() -> None:
    alerts = [
        make_alert("c", status="resolved", alertname="HighErrorRate", severity="critical", namespace="pay"),
        make_alert("w", alertname="HighErrorRate", severity="warning", namespace="food", service="search"),
    ]
    result = triage(alerts, shipped_runbooks())
    assert result.severity is Severity.medium
    assert result.namespace == "food"


def test_triage_lead_is_earliest_among_equally_severe() -> None:
    alerts = [
        make_alert(
            "late",
            starts_at=T0 + timedelta(minutes=5),
            alertname="HighErrorRate",
            severity="critical",
            namespace="late-ns",
        ),
        make_alert("early", alertname="HighErrorRate", severity="critical", namespace="early-ns"),
    ]
    assert lead_alert(alerts).fingerprint == "early"
    assert triage(alerts, []).namespace == "early-ns"


def test_triage_title_fallbacks() -> None:
    described = make_alert(annotations={"description": "a description"}, alertname="X")
    assert triage([described], []).title == "a description"
    bare = make_alert(alertname="X")
    assert triage([bare], []).title == "X"
    multiline = make_alert(annotations={"summary": "\n  first line\nsecond line"}, alertname="X")
    assert triage([multiline], []).title == "first line"
    long = make_alert(annotations={"summary": "y" * 500}, alertname="X")
    assert triage([long], []).title == "y" * 200
    blank = make_alert(annotations={"summary": "   "}, alertname="X")
    assert triage([blank], []).title == "X"


def test_triage_takes_the_expression_of_any_firing_alert() -> None:
    url = "http://p/graph?g0.expr=up+%3D%3D+0&g0.tab=1"
    alerts = [
        make_alert("a", alertname="X", severity="critical"),
        make_alert("b", generator_url=url, alertname="X"),
    ]
    assert triage(alerts, []).alert_expr == "up == 0"


def test_triage_without_alerts_fails() -> None:
    with pytest.raises(ValueError, match="at least one alert"):
        triage([], shipped_runbooks())


# ---------------------------------------------------------------------------------------------- summary


def _state(**overrides: Any) -> IncidentState:
    state = IncidentState(
        severity=Severity.critical,
        alertname="HighErrorRate",
        namespace="food",
        service="search",
        title="search returns 5xx",
        notifications=3,
        alerts={
            "a": make_alert("a", alertname="HighErrorRate"),
            "b": make_alert("b", status="resolved", alertname="HighErrorRate"),
        },
    )
    return state.model_copy(update=overrides)


def test_one_line_summary() -> None:
    assert one_line_summary(_state()) == "[critical] HighErrorRate food/search: search returns 5xx"
    assert one_line_summary(_state(namespace="")) == "[critical] HighErrorRate search: search returns 5xx"
    assert one_line_summary(_state(title="")) == "[critical] HighErrorRate food/search"
    # A sender's huge label cannot make the UI's, Slack's or PagerDuty's one-liner huge.
    long = one_line_summary(_state(service="s" * 5_000))
    assert len(long) == 300 and long.endswith("…") and long.startswith("[critical] HighErrorRate food/sss")
    assert one_line_summary(IncidentState()) == "[medium] alert"


def test_details_markdown_early_phase_has_no_diagnosis() -> None:
    text = details_markdown(_state(phase=Phase.investigating))
    assert text.splitlines()[0] == f"**{one_line_summary(_state())}**"
    assert "- phase: `investigating`" in text
    assert "- alerts: 1 firing, 1 resolved, 3 notification(s)" in text
    assert "diagnosis" not in text
    assert "plan" not in text


def test_details_markdown_mentions_phase_plan_and_gaps() -> None:
    plan = Plan(
        id="plan-abc123",
        actions=[
            Action(type=ActionType.rollback, namespace="food", target="search"),
            Action(type=ActionType.escalate, requires_approval=False),
        ],
    )
    deadline = datetime(2025, 6, 3, 14, 20, 0, tzinfo=UTC)
    state = _state(
        phase=Phase.awaiting_approval,
        plan=plan,
        approval_deadline=deadline,
        diagnosis=Diagnosis(
            category=Category.bad_deploy,
            confidence=0.45,
            runbook="high-error-rate",
            summary="A rollout broke it.",
        ),
        evidence=Evidence(gaps=[EvidenceGap(source="loki", reason="LOKI_URL is not set")]),
    )
    text = details_markdown(state)
    assert "- phase: `awaiting_approval`" in text
    assert "- diagnosis: `bad_deploy` at 45% (runbook `high-error-rate`): A rollout broke it." in text
    assert "- plan `plan-abc123`: rollback food/search, escalate" in text
    assert "- awaiting approval until 2025-06-03 14:20:00Z" in text
    assert "- could not see loki: LOKI_URL is not set" in text
    assert "escalated" not in text


def test_details_markdown_outcome_decision_verification_escalation() -> None:
    state = _state(
        phase=Phase.escalated,
        outcome="escalated",
        decision=DecisionRecord(approve=False, by="alice", reason="too risky", at=RECEIVED),
        verification=[
            VerificationRecord(at=RECEIVED, method="promql", outcome="inconclusive", detail="no data"),
            VerificationRecord(at=RECEIVED, method="promql", outcome="still_failing", detail="5% errors"),
        ],
        escalation_reason="the rollback was rejected",
    )
    text = details_markdown(state)
    assert "- phase: `escalated` (outcome: escalated)" in text
    assert "- rejected by alice: too risky" in text
    assert "- verification: still_failing (5% errors)" in text
    assert "inconclusive" not in text  # only the last verification is shown
    assert "- escalated: the rollback was rejected" in text
    approved = details_markdown(_state(decision=DecisionRecord(approve=True, by="bob", at=RECEIVED)))
    assert "- approved by bob" in approved


# ---------------------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("2d", 172800.0),
        ("30", 30.0),
        ("1.5h", 5400.0),
        (" 5M ", 300.0),
        ("1m30s", 90.0),
        (45, 45.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "   ", "5x", "-1", "0", "0s", "m5", "1m30", "5 m", "1h-30m", "abc", -5, 0])
def test_parse_duration_rejects(text: str | int) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_duration(text)
    assert repr(text) in str(excinfo.value)


@pytest.mark.parametrize(("seconds", "text"), [(90, "1m30s"), (0, "0s"), (3600, "1h"), (3661, "1h1m1s"), (59.6, "1m")])
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    if seconds >= 1:
        assert parse_duration(text) == round(seconds)


# ---------------------------------------------------------------------------------------------- settings


_SETTINGS_ENV = (
    "APPROVAL_TIMEOUT",
    "VERIFY_AFTER",
    "RESOLVE_WAIT",
    "FEEDBACK_WINDOW",
    "APPROVERS",
    "PROMETHEUS_URL",
    "DRY_RUN",
    "RUNBOOKS_DIR",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None)
    assert settings.approval_timeout == 900.0
    assert settings.verify_after == 300.0
    assert settings.resolve_wait == 86400.0
    assert settings.feedback_window == 86400.0
    assert settings.approvers == []
    assert settings.dry_run is None  # unset: the policy file decides (dry run in the shipped policy.yaml)
    assert settings.runbooks_dir == SHIPPED_RUNBOOKS


def test_settings_reads_durations_and_approvers(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("APPROVAL_TIMEOUT", "90s")
    clean_env.setenv("VERIFY_AFTER", "2m")
    clean_env.setenv("RESOLVE_WAIT", "1h30m")
    clean_env.setenv("APPROVERS", "alice, bob")
    settings = Settings(_env_file=None)
    assert settings.approval_timeout == 90.0
    assert settings.verify_after == 120.0
    assert settings.resolve_wait == 5400.0
    assert settings.approvers == ["alice", "bob"]
    incident = settings.incident_settings()
    assert (incident.approval_timeout_s, incident.verify_after_s, incident.resolve_wait_s) == (
        90.0,
        120.0,
        5400.0,
    )
    assert incident.approvers == ["alice", "bob"]


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("0s", 0.0), ("2h", 7200.0), ("90", 90.0)])
def test_settings_feedback_window_may_be_zero(clean_env: pytest.MonkeyPatch, value: str, seconds: float) -> None:
    # Zero is a choice here (no window: an incident completes when it closes), unlike the other durations.
    clean_env.setenv("FEEDBACK_WINDOW", value)
    assert Settings(_env_file=None).incident_settings().feedback_window_s == seconds


def test_settings_approvers_drop_blanks(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("APPROVERS", " , alice,,bob , ")
    assert Settings(_env_file=None).approvers == ["alice", "bob"]
    clean_env.setenv("APPROVERS", "")
    assert Settings(_env_file=None).approvers == []


def test_settings_blank_url_is_unset(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PROMETHEUS_URL", "  ")
    assert Settings(_env_file=None).prometheus_url is None


def test_settings_blank_llm_variables_leave_the_llm_off(clean_env: pytest.MonkeyPatch) -> None:
    # `make eval --no-llm` blanks them so that a .env file cannot fill them in: blank means unset.
    for variable in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_MODEL"):
        clean_env.setenv(variable, "")
    settings = Settings(_env_file=None)
    assert (settings.openai_api_key, settings.llm_model, settings.llm_configured) == (None, None, False)
    assert settings.incident_settings().llm is False
    clean_env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")  # Ollama needs no key
    assert Settings(_env_file=None).incident_settings().llm is True


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("APPROVAL_TIMEOUT", "5x", "approval_timeout"),
        ("VERIFY_AFTER", "0", "verify_after"),
        ("RESOLVE_WAIT", "-1", "resolve_wait"),
        ("FEEDBACK_WINDOW", "-1", "feedback_window"),
        ("FEEDBACK_WINDOW", "soon", "feedback_window"),
    ],
)
def test_settings_bad_duration_names_the_field(
    clean_env: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(ValidationError) as excinfo:
        Settings(_env_file=None)
    assert [error["loc"] for error in excinfo.value.errors()] == [(field,)]
    assert field in str(excinfo.value)
    assert value in str(excinfo.value)


def test_settings_read_a_dotenv_file_in_the_working_directory(tmp_path, monkeypatch) -> None:
    from config.settings import Settings

    for name in ("APPROVAL_TIMEOUT", "APPROVERS", "WEBHOOK_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("APPROVAL_TIMEOUT=2m\nAPPROVERS=alice,U024BE7LH\nWEBHOOK_TOKEN=from-dotenv\n")
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.approval_timeout == 120.0
    assert settings.approvers == ["alice", "U024BE7LH"]
    assert settings.webhook_token is not None and settings.webhook_token.get_secret_value() == "from-dotenv"
    monkeypatch.setenv("APPROVAL_TIMEOUT", "30s")  # the environment wins over the file
    assert Settings().approval_timeout == 30.0


def test_a_runbooks_verify_check_is_validated_and_filled_for_the_root_cause(tmp_path) -> None:
    bad = valid_runbook(verify="up{namespace=$namespace, job=$jobname} == 0")
    with pytest.raises(RunbookError, match=r"t\.yaml: verify: Value error, promql has an unknown .*'jobname'"):
        load_runbook(write_runbook(tmp_path, "t.yaml", bad))
    crash = find_runbook(shipped_runbooks(), "KubePodCrashLooping", {})
    assert crash is not None and crash.verify is not None
    alerts = [make_alert(alertname="KubePodCrashLooping", namespace='we"ird', pod="cart-7d9fb-x2k4p")]
    evidence = Evidence(
        pods=[
            PodStatus(namespace='we"ird', name="cart-7d9fb-x2k4p", workload="cart", waiting_reason="CrashLoopBackOff")
        ]
    )
    result = diagnose(alerts, triage(alerts, shipped_runbooks()), evidence, shipped_runbooks())
    assert result.diagnosis.category is Category.crash_loop
    assert result.verify_query == (
        'kube_deployment_status_replicas_unavailable{namespace="we\\"ird", deployment="cart"} > 0'
    )


def test_runbook_queries_are_validated_and_filled_with_quoted_values(tmp_path) -> None:
    from analysis.queries import runbook_queries
    from triage.runbooks import RunbookError, load_runbook

    base = (
        "id: custom\ntitle: Custom\nmatch: {alertnames: [X]}\n"
        "hypotheses:\n  - {category: application_error, prior: 0.5, summary: s}\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "queries:\n  - {metric: depth, description: d, promql: 'queue{cluster=$cluster}'}\n")
    with pytest.raises(RunbookError) as info:
        load_runbook(bad)
    assert "bad.yaml" in str(info.value) and "queries.0" in str(info.value) and "cluster" in str(info.value)

    good = tmp_path / "good.yaml"
    good.write_text(
        base + "queries:\n  - {metric: depth, description: d, promql: 'q{namespace=$namespace, x=\"$$1\"}'}\n"
    )
    [query] = runbook_queries(load_runbook(good).queries, 'we"ird', "w", "p")
    # The value is a quoted PromQL string: it cannot close the matcher and add one of its own.
    assert query.expr == 'q{namespace="we\\"ird", x="$1"}'
