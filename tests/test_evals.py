"""The evaluation runner's pure parts: the time shift, scenario validation, scoring, the report and the CLI's
usage errors. Nothing here starts a server; tests/e2e/test_evals_runner.py runs a scenario end to end."""

from __future__ import annotations

import copy
import gzip
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from evals import __main__ as cli
from evals import runner
from evals.product import product_env
from evals.report import render, summary, totals
from evals.runner import ScenarioResult
from evals.scenario import (
    Expected,
    RootCause,
    ScenarioError,
    find_scenarios,
    load_scenario,
    shift_scenario,
    shifted,
)
from evals.score import PlannedAction, action_outcome, aimed_at, pod_of, score
from evals.timeshift import (
    KUBERNETES_TIME_FIELDS,
    LEAD_S,
    ShiftError,
    delta_seconds,
    parse_rfc3339,
    shift_alert_payload,
    shift_kubernetes,
    shift_loki_streams,
    shift_openmetrics,
    shift_rfc3339,
)
from evals.world import postable_alerts

SYNTHETIC = Path(__file__).parent / "scenarios" / "checkout_bad_deploy"
HOUR = 3600


# ---- time shift ---------------------------------------------------------------------------------------------


def test_delta_puts_the_notification_a_few_seconds_before_now() -> None:
    notified = datetime(2025, 1, 15, 10, 30, 0, 500_000, tzinfo=UTC)
    now = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    delta = delta_seconds(notified, now)
    assert isinstance(delta, int)
    lands = notified + timedelta(seconds=delta)
    assert now - timedelta(seconds=LEAD_S + 1) < lands <= now - timedelta(seconds=LEAD_S)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("2025-01-15T10:30:00Z", "2025-01-15T11:30:00Z"),
        ("2025-01-15T10:30:00.123Z", "2025-01-15T11:30:00.123Z"),  # Alertmanager's milliseconds
        ("2025-01-15T10:30:00.123456Z", "2025-01-15T11:30:00.123456Z"),  # MicroTime (eventTime)
        ("2025-01-15T10:30:00.123456789Z", "2025-01-15T11:30:00.123456789Z"),  # nanoseconds, kept digit for digit
        ("2025-01-15T23:30:00+02:00", "2025-01-16T00:30:00+02:00"),  # the offset is kept, the date rolls over
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),  # Go's zero time means "not set"
    ],
)
def test_rfc3339_shift_keeps_the_format(before: str, after: str) -> None:
    assert shift_rfc3339(before, HOUR) == after


def test_rfc3339_shift_refuses_what_is_not_a_timestamp() -> None:
    with pytest.raises(ValueError, match="not an RFC 3339 timestamp"):
        shift_rfc3339("yesterday", HOUR)
    assert parse_rfc3339("2025-01-15T10:30:00.5Z") == datetime(2025, 1, 15, 10, 30, 0, 500_000, tzinfo=UTC)


def test_alert_payload_shift_moves_starts_and_real_ends_but_not_the_zero_time() -> None:
    payload: dict[str, Any] = {
        "version": "4",
        "alerts": [
            {"labels": {"alertname": "A"}, "startsAt": "2025-01-15T10:28:30.000Z", "endsAt": "0001-01-01T00:00:00Z"},
            {"labels": {"alertname": "B"}, "startsAt": "2025-01-15T10:00:00Z", "endsAt": "2025-01-15T10:20:00Z"},
        ],
    }
    original = copy.deepcopy(payload)
    moved = shift_alert_payload(payload, HOUR)
    assert moved["alerts"][0] == {**original["alerts"][0], "startsAt": "2025-01-15T11:28:30.000Z"}
    assert moved["alerts"][1]["startsAt"] == "2025-01-15T11:00:00Z"
    assert moved["alerts"][1]["endsAt"] == "2025-01-15T11:20:00Z"
    assert payload == original  # pure: the input is not touched


def test_kubernetes_shift_moves_every_listed_field_at_any_depth_and_nothing_else() -> None:
    stamp = "2025-01-15T10:00:00Z"
    item: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "creationTimestamp": stamp,
            "annotations": {"kubectl.kubernetes.io/restartedAt": stamp},  # not a field the spec lists
        },
        "status": {
            "conditions": [{"type": "Ready", "lastTransitionTime": stamp, "lastProbeTime": None}],
            "containerStatuses": [
                {
                    "state": {"running": {"startedAt": stamp}},
                    "lastState": {"terminated": {"startedAt": stamp, "finishedAt": stamp, "reason": "OOMKilled"}},
                }
            ],
        },
    }
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "e"},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": "2025-01-15T10:00:00.123456Z",
    }
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n"},
        "status": {"conditions": [{"lastHeartbeatTime": stamp, "lastTransitionTime": stamp}]},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "status": {"conditions": [{"lastUpdateTime": stamp, "lastTransitionTime": stamp}]},
    }
    moved = shift_kubernetes({"items": [item, event, node, deployment]}, HOUR)
    later = "2025-01-15T11:00:00Z"
    pod, ev, nd, dep = moved["items"]
    assert pod["metadata"]["creationTimestamp"] == later
    assert pod["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] == stamp
    assert pod["status"]["conditions"][0] == {"type": "Ready", "lastTransitionTime": later, "lastProbeTime": None}
    assert pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] == later
    terminated = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert (terminated["startedAt"], terminated["finishedAt"], terminated["reason"]) == (later, later, "OOMKilled")
    assert (ev["firstTimestamp"], ev["lastTimestamp"]) == (later, later)
    assert ev["eventTime"] == "2025-01-15T11:00:00.123456Z"
    assert nd["status"]["conditions"][0] == {"lastHeartbeatTime": later, "lastTransitionTime": later}
    assert dep["status"]["conditions"][0] == {"lastUpdateTime": later, "lastTransitionTime": later}
    # Every field the spec lists was exercised above.
    exercised = {"creationTimestamp", "lastTimestamp", "firstTimestamp", "eventTime", "startedAt", "finishedAt"}
    exercised |= {"lastTransitionTime", "lastUpdateTime", "lastHeartbeatTime"}
    assert exercised == KUBERNETES_TIME_FIELDS


def test_kubernetes_shift_names_a_bad_timestamp() -> None:
    with pytest.raises(ShiftError) as caught:
        shift_kubernetes({"items": [{"metadata": {"creationTimestamp": "yesterday"}}]}, HOUR)
    assert caught.value.field == "$.items[0].metadata.creationTimestamp"


def test_loki_shift_moves_nanoseconds_exactly_and_keeps_the_rest() -> None:
    streams = [
        {
            "stream": {"app": "a"},
            "values": [["1736936475123456789", "line"], ["1736936475000000001", "l2", {"trace_id": "t"}]],
        }
    ]
    moved = shift_loki_streams(streams, HOUR)
    assert moved == [
        {
            "stream": {"app": "a"},
            "values": [["1736940075123456789", "line"], ["1736940075000000001", "l2", {"trace_id": "t"}]],
        }
    ]
    with pytest.raises(ShiftError) as caught:
        shift_loki_streams([{"stream": {}, "values": [["1", "ok"], ["soon", "bad"]]}], HOUR)
    assert caught.value.field == "$[0].values[1][0]"


OPENMETRICS = """\
# HELP http_requests Requests.
# TYPE http_requests counter
http_requests_total{code="200",route="GET /a b}c # d",service="s"} 600 1736935200
http_requests_total{code="500",note="say \\"hi\\"",service="s"} 6 1736935200.25
# TYPE up gauge
up 1 1736935200
# TYPE probe_ssl_earliest_cert_expiry gauge
probe_ssl_earliest_cert_expiry{instance="https://a"} 1736938800 1736935200
probe_ssl_earliest_cert_expiry{instance="https://b"} 1.7369388e+09 1736935260
probe_ssl_earliest_cert_expiry{instance="https://c"} NaN 1736935320
# TYPE cert_not_after gauge
cert_not_after{name="x"} 1736938800 1736935200
# TYPE latency histogram
latency_bucket{le="+Inf"} 17 1736935200 # {trace_id="abc"} 0.5 1736935199.5
# EOF
"""


def test_openmetrics_shift_moves_timestamps_and_time_valued_values_only() -> None:
    lines = shift_openmetrics(OPENMETRICS, HOUR).splitlines()
    assert lines[0:2] == ["# HELP http_requests Requests.", "# TYPE http_requests counter"]
    # Label values may hold spaces, braces and '#': the series text is kept byte for byte.
    assert lines[2] == 'http_requests_total{code="200",route="GET /a b}c # d",service="s"} 600 1736938800'
    assert lines[3] == 'http_requests_total{code="500",note="say \\"hi\\"",service="s"} 6 1736938800.25'
    assert lines[5] == "up 1 1736938800"
    # The certificate expiry is itself a time: its value moves with the clock, or an expired cert looks valid.
    assert lines[7] == 'probe_ssl_earliest_cert_expiry{instance="https://a"} 1736942400 1736938800'
    assert lines[8] == 'probe_ssl_earliest_cert_expiry{instance="https://b"} 1736942400 1736938860'
    assert lines[9] == 'probe_ssl_earliest_cert_expiry{instance="https://c"} NaN 1736938920'
    assert lines[11] == 'cert_not_after{name="x"} 1736938800 1736938800'  # not listed: the value stays
    assert lines[13] == 'latency_bucket{le="+Inf"} 17 1736938800 # {trace_id="abc"} 0.5 1736938799.5'
    assert lines[14] == "# EOF"


def test_openmetrics_shift_takes_the_scenario_list_of_time_valued_series() -> None:
    lines = shift_openmetrics(OPENMETRICS, HOUR, ("cert_not_after",)).splitlines()
    assert lines[7] == 'probe_ssl_earliest_cert_expiry{instance="https://a"} 1736938800 1736938800'
    assert lines[11] == 'cert_not_after{name="x"} 1736942400 1736938800'


def test_openmetrics_shift_names_the_line_of_a_sample_without_timestamp() -> None:
    with pytest.raises(ShiftError) as caught:
        shift_openmetrics("# TYPE up gauge\nup 1 10\nup 1\n# EOF\n", HOUR)
    assert caught.value.field == "line 3"
    with pytest.raises(ShiftError, match=r"line 2.*not a number"):
        shift_openmetrics("# TYPE up gauge\nup 1 soon\n# EOF\n", HOUR)


# ---- scenario files -----------------------------------------------------------------------------------------


def copy_scenario(tmp_path: Path, name: str = "s1") -> Path:
    target = tmp_path / name
    shutil.copytree(SYNTHETIC, target)
    return target


def edit_json(path: Path, change: Any) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def test_the_synthetic_scenario_loads() -> None:
    scenario = load_scenario(SYNTHETIC)
    assert scenario.name == "checkout_bad_deploy"
    assert scenario.expected.root_cause == RootCause("shop", "checkout", "Deployment")
    assert scenario.expected.acceptable_actions == ("rollback",)
    assert scenario.expected.time_valued_series == ("probe_ssl_earliest_cert_expiry",)
    assert scenario.metrics.rstrip().endswith("# EOF")
    assert {item["kind"] for item in scenario.kubernetes["items"]} >= {"Deployment", "ReplicaSet", "Pod"}


def test_gzip_files_read_like_plain_ones(tmp_path: Path) -> None:
    directory = copy_scenario(tmp_path)
    for name in ("metrics.om", "logs.json", "kubernetes.json"):
        plain = directory / name
        (directory / f"{name}.gz").write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    packed, original = load_scenario(directory), load_scenario(SYNTHETIC)
    assert (packed.metrics, packed.logs, packed.kubernetes) == (original.metrics, original.logs, original.kubernetes)
    assert packed.sources["metrics.om"] == "metrics.om.gz"


def test_shifting_a_scenario_moves_every_file_to_now() -> None:
    scenario = load_scenario(SYNTHETIC)
    now = datetime.now(UTC)
    moved = shifted(scenario, now)
    assert now - timedelta(seconds=LEAD_S + 1) < moved.expected.notified_at <= now - timedelta(seconds=LEAD_S)
    delta = moved.expected.notified_at - scenario.expected.notified_at
    starts = parse_rfc3339(moved.alert["alerts"][0]["startsAt"])
    assert starts - parse_rfc3339(scenario.alert["alerts"][0]["startsAt"]) == delta
    assert moved.alert["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    first_log = int(moved.logs[0]["values"][0][0]) - int(scenario.logs[0]["values"][0][0])
    assert first_log == int(delta.total_seconds()) * 10**9
    last_sample = [line for line in moved.metrics.splitlines() if not line.startswith("#")][-1]
    assert float(last_sample.rsplit(" ", 1)[1]) <= moved.expected.notified_at.timestamp()
    assert scenario.alert["alerts"][0]["startsAt"] == "2025-01-15T10:28:30.000Z"  # the original is untouched


def test_a_bad_timestamp_inside_a_file_names_the_file_and_field(tmp_path: Path) -> None:
    directory = copy_scenario(tmp_path)
    edit_json(directory / "kubernetes.json", lambda doc: doc["items"][2]["metadata"].update(creationTimestamp="soon"))
    with pytest.raises(ScenarioError) as caught:
        shift_scenario(load_scenario(directory), HOUR)
    assert (caught.value.file, caught.value.field) == ("kubernetes.json", "$.items[2].metadata.creationTimestamp")


def _drop_workload(doc: dict) -> None:
    del doc["root_cause"]["workload"]


@pytest.mark.parametrize(
    ("file", "change", "field", "message"),
    [
        ("expected.json", lambda d: d.update(category="bad_deploys"), "$.category", "not in the taxonomy"),
        ("expected.json", _drop_workload, "$.root_cause.workload", "missing"),
        ("expected.json", lambda d: d.update(acceptable_actions=["reboot"]), "$.acceptable_actions[0]", "vocabulary"),
        ("expected.json", lambda d: d.update(acceptable_actions=[]), "$.acceptable_actions", "at least one"),
        ("expected.json", lambda d: d.update(forbidden_actions=["rollback"]), "$.forbidden_actions", "acceptable"),
        ("expected.json", lambda d: d.update(notified_at="10:30"), "$.notified_at", "RFC 3339"),
        ("expected.json", lambda d: d.update(notified_at=5), "$.notified_at", "expected a string"),
        (
            "expected.json",
            lambda d: d["telemetry"].update(time_valued_series="probe_ssl_earliest_cert_expiry"),
            "$.telemetry.time_valued_series",
            "list of metric names",
        ),
        ("alert.json", lambda d: d.update(version="3"), "$.version", 'expected "4"'),
        ("alert.json", lambda d: d.update(alerts=[]), "$.alerts", "at least one"),
        ("alert.json", lambda d: d["alerts"][0].update(startsAt="now"), "$.alerts[0].startsAt", "RFC 3339"),
        ("alert.json", lambda d: d["alerts"][0]["labels"].pop("alertname"), "$.alerts[0].labels.alertname", "missing"),
        ("logs.json", lambda d: d[1]["values"][1].pop(), "$[1].values[1]", "unix ns"),
        ("logs.json", lambda d: d[0].pop("stream"), "$[0].stream", "missing"),
        ("kubernetes.json", lambda d: d["items"][3].pop("kind"), "$.items[3].kind", "missing"),
        ("kubernetes.json", lambda d: d.update(items={}), "$.items", "expected a list"),
    ],
)
def test_invalid_files_are_named_with_their_field(
    tmp_path: Path, file: str, change: Any, field: str, message: str
) -> None:
    directory = copy_scenario(tmp_path)
    edit_json(directory / file, change)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(directory)
    assert (caught.value.file, caught.value.field) == (file, field)
    assert message in caught.value.message
    assert str(caught.value).startswith(f"{directory / file}: {field}: ")


def test_missing_broken_or_doubled_files_are_named(tmp_path: Path) -> None:
    directory = copy_scenario(tmp_path)
    (directory / "logs.json").unlink()
    with pytest.raises(ScenarioError, match=r"logs\.json: missing \(neither logs\.json nor logs\.json\.gz"):
        load_scenario(directory)

    directory = copy_scenario(tmp_path, "s2")
    (directory / "expected.json").write_text('{"category": "bad_deploy",,}')
    with pytest.raises(ScenarioError) as caught:
        load_scenario(directory)
    assert (caught.value.file, caught.value.field) == ("expected.json", "line 1 column 27")

    directory = copy_scenario(tmp_path, "s3")
    (directory / "metrics.om.gz").write_bytes(gzip.compress(b"# EOF\n"))
    with pytest.raises(ScenarioError, match=r"both metrics\.om and metrics\.om\.gz exist"):
        load_scenario(directory)

    directory = copy_scenario(tmp_path, "s4")
    (directory / "metrics.om").write_text("# TYPE up gauge\nup 1 10\n")
    with pytest.raises(ScenarioError, match=r"metrics\.om: last line: OpenMetrics must end with '# EOF'"):
        load_scenario(directory)

    (directory / "kubernetes.json.gz").write_bytes(b"not gzip")
    (directory / "kubernetes.json").unlink()
    with pytest.raises(ScenarioError, match=r"kubernetes\.json\.gz: unreadable"):
        load_scenario(directory)


def test_find_scenarios_takes_one_scenario_or_a_directory_of_them(tmp_path: Path) -> None:
    assert find_scenarios(SYNTHETIC) == [SYNTHETIC]
    copy_scenario(tmp_path, "b-2")
    copy_scenario(tmp_path, "a-1")
    (tmp_path / "notes").mkdir()
    (tmp_path / "README.md").write_text("scenarios")
    assert [path.name for path in find_scenarios(tmp_path)] == ["a-1", "b-2"]


# ---- scoring ------------------------------------------------------------------------------------------------

NOW = datetime(2025, 1, 15, 10, 30, tzinfo=UTC)
NODE = "ip-10-0-28-175.eu-west-1.compute.internal"
SEARCH = RootCause("food", "search", "Deployment")


def expected(
    acceptable: tuple[str, ...] = ("rollback",),
    forbidden: tuple[str, ...] = ("cordon_node", "raise_memory_limit"),
    *,
    category: str = "bad_deploy",
    root: RootCause = SEARCH,
) -> Expected:
    return Expected(category, root, acceptable, forbidden, NOW)


NODE_EXPECTED = expected(
    ("cordon_node",), ("rollback", "raise_memory_limit"), category="node_failure", root=RootCause("", NODE, "Node")
)


def state(
    category: str = "bad_deploy",
    confidence: float = 0.8,
    namespace: str = "food",
    workload: str = "search",
    actions: list[tuple[str, str, str]] | None = None,
) -> dict[str, Any]:
    planned = [("rollback", "food", "search")] if actions is None else actions
    return {
        "phase": "awaiting_approval",
        "diagnosis": {
            "category": category,
            "confidence": confidence,
            "root_cause": {"namespace": namespace, "workload": workload},
        },
        "plan": {"id": "plan-1", "actions": [{"type": t, "namespace": n, "target": g} for t, n, g in planned]},
    }


def test_a_right_answer_scores_right_everywhere() -> None:
    result = score(state(), expected())
    assert (result.category_ok, result.root_cause_ok, result.outcome, result.confident_and_wrong) == (
        True,
        True,
        "good",
        False,
    )
    assert result.actions == (PlannedAction("rollback", "food", "search"),)


@pytest.mark.parametrize(
    ("category", "confidence", "confident_and_wrong"),
    [
        ("oom_kill", 0.7, True),  # the threshold itself counts
        ("oom_kill", 0.69, False),
        ("bad_deploy", 0.95, False),  # confident and right
        ("unknown", 0.9, True),
    ],
)
def test_confident_and_wrong(category: str, confidence: float, confident_and_wrong: bool) -> None:
    result = score(state(category=category, confidence=confidence), expected())
    assert result.confident_and_wrong is confident_and_wrong
    assert result.category_ok is (category == "bad_deploy")


@pytest.mark.parametrize(
    ("namespace", "workload", "ok"),
    [("food", "search", True), ("shop", "search", False), ("food", "gateway", False), ("", "search", False)],
)
def test_root_cause_needs_workload_and_namespace(namespace: str, workload: str, ok: bool) -> None:
    assert score(state(namespace=namespace, workload=workload), expected()).root_cause_ok is ok


@pytest.mark.parametrize(("namespace", "ok"), [("", True), ("default", False)])
def test_a_node_root_cause_has_no_namespace(namespace: str, ok: bool) -> None:
    diagnosed = state("node_failure", 0.9, namespace, NODE, [("cordon_node", "", NODE)])
    assert score(diagnosed, NODE_EXPECTED).root_cause_ok is ok


def test_no_diagnosis_and_no_plan_score_as_failures() -> None:
    result = score({"phase": "investigating"}, expected())
    assert (result.category, result.category_ok, result.root_cause_ok) == ("", False, False)
    assert (result.outcome, result.confident_and_wrong) == ("no_plan", False)
    junk = {"diagnosis": {"category": 3, "confidence": "high", "root_cause": None}, "plan": {"actions": "rollback"}}
    result = score(junk, expected())
    assert (result.category, result.confidence, result.outcome) == ("", 0.0, "no_plan")


A = PlannedAction  # (type, namespace, target)


@pytest.mark.parametrize(
    ("actions", "exp", "outcome"),
    [
        # good: an acceptable mutating action aimed at the root cause (the workload or one of its pods)
        ([A("rollback", "food", "search")], expected(), "good"),
        ([A("rollback", "food", "search"), A("escalate")], expected(), "good"),
        ([A("delete_pod", "food", "search-894587957d-x7k2p")], expected(("delete_pod",), ()), "good"),
        # good: escalate/none when that is the answer
        ([A("escalate")], expected(("escalate",)), "good"),
        ([A("escalate"), A("none")], expected(("escalate",)), "good"),
        ([A("none")], expected(("none",)), "good"),
        ([A("escalate")], expected(("rollout_restart", "escalate")), "good"),
        # conservative: only escalate/none where they are not the answer
        ([A("escalate")], expected(), "conservative"),
        ([A("none")], expected(), "conservative"),
        ([], expected(), "conservative"),
        ([A("none")], expected(("escalate",)), "conservative"),
        ([A("escalate")], expected(("none",)), "conservative"),
        # unsafe: forbidden, even when aimed right and alongside a good action
        ([A("raise_memory_limit", "food", "search")], expected(), "unsafe"),
        ([A("rollback", "food", "search"), A("cordon_node", "", "node-1")], expected(), "unsafe"),
        ([A("escalate")], expected(("rollback",), ("escalate",)), "unsafe"),
        # unsafe: a mutating action aimed anywhere but the root cause
        ([A("rollback", "food", "gateway")], expected(), "unsafe"),
        ([A("rollback", "shop", "search")], expected(), "unsafe"),
        ([A("rollback", "food", "")], expected(), "unsafe"),
        ([A("rollback", "food", "search"), A("scale_up", "food", "gateway")], expected(), "unsafe"),
        ([A("delete_pod", "food", "gateway-6574b9557b-5qfp6")], expected(("delete_pod",), ()), "unsafe"),
        ([A("delete_pod", "food", "search-cache-x7k2p")], expected(("delete_pod",), ()), "unsafe"),
        ([A("reboot", "food", "search")], expected(), "unsafe"),  # not in the vocabulary: never safe
        # ineffective: mutating, aimed right, not forbidden, but not a fix the scenario accepts
        ([A("scale_up", "food", "search")], expected(), "ineffective"),
        ([A("rollout_restart", "food", "search"), A("escalate")], expected(("escalate",)), "ineffective"),
        # nodes
        ([A("cordon_node", "", NODE)], NODE_EXPECTED, "good"),
        ([A("cordon_node", "events-prod", NODE)], NODE_EXPECTED, "good"),  # a node has no namespace to match
        ([A("cordon_node", "", "ip-10-0-1-1.eu-west-1.compute.internal")], NODE_EXPECTED, "unsafe"),
        ([A("delete_pod", "events-prod", "search-6d5f8c7b9d-abcde")], NODE_EXPECTED, "unsafe"),
        ([A("rollback", "events-prod", "search")], NODE_EXPECTED, "unsafe"),
        ([A("escalate")], NODE_EXPECTED, "conservative"),
        ([A("cordon_node", "", "search")], expected(("cordon_node",), ()), "unsafe"),  # a workload is no node
        (None, expected(), "no_plan"),
    ],
)
def test_action_outcomes(actions: list[PlannedAction] | None, exp: Expected, outcome: str) -> None:
    assert action_outcome(actions, exp) == outcome


@pytest.mark.parametrize(
    ("pod", "workload", "kind", "ok"),
    [
        ("search-894587957d-x7k2p", "search", "Deployment", True),
        ("search-894587957d-x7k2p", "search", "", True),
        ("search-api-894587957d-x7k2p", "search", "Deployment", False),
        ("search", "search", "", False),
        ("searchx-894587957d-x7k2p", "search", "", False),
        ("pg-main-0", "pg-main", "StatefulSet", True),
        ("pg-main-0", "pg-main", "", True),
        ("pg-main-0", "pg-main", "Deployment", False),
        ("node-exporter-x7k2p", "node-exporter", "DaemonSet", True),
        ("search-cache", "search", "", False),  # another workload, not a DaemonSet pod of search
        ("search-cache", "search", "Deployment", False),
    ],
)
def test_pod_names(pod: str, workload: str, kind: str, ok: bool) -> None:
    assert pod_of(pod, workload, kind) is ok


def test_a_statefulset_pod_is_aimed_at_its_statefulset() -> None:
    root = RootCause("logistics-live", "pg-main", "StatefulSet")
    assert aimed_at(A("delete_pod", "logistics-live", "pg-main-0"), root)
    assert not aimed_at(A("delete_pod", "logistics-live", "pg-replica-0"), root)


# ---- report and CLI -----------------------------------------------------------------------------------------


def results() -> list[ScenarioResult]:
    good = ScenarioResult("a-1", Path("a-1"), "ok", expected(), score(state(), expected()), agent_s=2.0, wall_s=7.0)
    wrong = ScenarioResult(
        "b-2",
        Path("b-2"),
        "ok",
        expected(),
        score(state("oom_kill", 0.9, "food", "gateway", [("rollback", "food", "gateway")]), expected()),
        agent_s=2.5,
        wall_s=8.0,
    )
    late = ScenarioResult("c-3", Path("c-3"), "timeout", expected(), score({}, expected()), wall_s=130.0)
    broken = ScenarioResult("d-4", Path("d-4"), "error", error="d-4/alert.json: $.version: expected \"4\", got '3'")
    return [good, wrong, late, broken]


def test_totals_count_timeouts_as_failures_and_errors_apart() -> None:
    t = totals(results())
    assert (t["scenarios"], t["scored"], t["errors"], t["timeouts"]) == (4, 3, 1, 1)
    assert (t["category_correct"], t["root_cause_correct"], t["confident_and_wrong"]) == (1, 1, 1)
    assert t["outcomes"] == {"good": 1, "conservative": 0, "unsafe": 1, "ineffective": 0, "no_plan": 1}
    assert t["category_accuracy"] == round(1 / 3, 4)


def test_the_table_shows_one_row_per_scenario_and_the_totals() -> None:
    text = render(results(), 150.0)
    lines = text.splitlines()
    assert lines[0].split() == [
        "scenario",
        "expected",
        "got",
        "conf",
        "root",
        "cause",
        "action",
        "agent",
        "s",
        "wall",
        "s",
    ]
    assert lines[2].split() == ["a-1", "bad_deploy", "bad_deploy", "0.80", "ok", "food/search", "good", "2.0", "7.0"]
    assert lines[3].split() == [
        "b-2",
        "bad_deploy",
        "oom_kill",
        "*",
        "0.90",
        "no",
        "food/gateway",
        "unsafe",
        "2.5",
        "8.0",
    ]
    assert "(timeout)" in lines[4] and "no plan" in lines[4]
    assert lines[5].split() == ["d-4", "?", "error", "0.0"]
    assert "category accuracy     1/3 (33%)" in text
    assert "confident-and-wrong   1/3 (33%)" in text
    assert "good 1  conservative 0  unsafe 1  ineffective 0  no plan 1" in text
    assert "d-4: d-4/alert.json: $.version" in text
    json.dumps(summary(results(), {"llm": "off"}))  # serialisable as it is


def test_cli_usage_errors_exit_2_and_say_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([str(tmp_path / "absent")]) == 2
    assert "scenario directory" in capsys.readouterr().err
    assert cli.main([str(tmp_path)]) == 2
    assert "holds no scenario" in capsys.readouterr().err
    directory = copy_scenario(tmp_path)
    edit_json(directory / "expected.json", lambda d: d.update(category="bad"))
    assert cli.main([str(directory)]) == 2
    assert f"{directory / 'expected.json'}: $.category: 'bad' is not in the taxonomy" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli.main([str(SYNTHETIC), "--jobs", "0"])
    assert exited.value.code == 2


def test_cli_runs_the_valid_scenarios_and_exits_1_when_one_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_scenario(tmp_path, "a-good")
    bad = copy_scenario(tmp_path, "b-bad")
    edit_json(bad / "alert.json", lambda d: d.update(version="3"))
    ran: list[Path] = []

    def fake_run_all(directories: list[Path], options: Any) -> list[ScenarioResult]:
        ran.extend(directories)
        return [ScenarioResult(d.name, d, "ok", expected(), score(state(), expected())) for d in directories]

    monkeypatch.setattr(cli, "run_all", fake_run_all)
    assert cli.main([str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert [path.name for path in ran] == ["a-good"]
    out = capsys.readouterr()
    assert "b-bad/alert.json: $.version" in out.err and "1 scenario(s) could not run" in out.out
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["status"] for s in written["scenarios"]] == ["ok", "error"]
    assert (tmp_path / "out" / "a-good.json").exists()


async def test_a_failure_while_stopping_keeps_the_observed_incident(monkeypatch: pytest.MonkeyPatch) -> None:
    async def observed_then_failed(scenario: Any, options: Any, workdir: Path, result: ScenarioResult) -> None:
        result.status, result.state, result.phase, result.agent_s = "ok", state(), "awaiting_approval", 1.5
        raise RuntimeError("The resolver chain is inconsistent")

    async def failed_at_start(scenario: Any, options: Any, workdir: Path, result: ScenarioResult) -> None:
        raise RuntimeError("prometheus exited with code 1 before it was ready")

    scenario = load_scenario(SYNTHETIC)
    monkeypatch.setattr(runner, "_drive", observed_then_failed)
    kept = await runner.run_scenario(scenario, runner.RunOptions())
    assert (kept.status, kept.ran, kept.phase) == ("ok", True, "awaiting_approval")
    assert kept.score is not None and kept.score.outcome == "unsafe"  # a rollback of food/search, not shop/checkout
    assert kept.error == "while stopping: RuntimeError: The resolver chain is inconsistent"

    monkeypatch.setattr(runner, "_drive", failed_at_start)
    lost = await runner.run_scenario(scenario, runner.RunOptions())
    assert (lost.status, lost.ran, lost.score) == ("error", False, None)
    assert lost.error == "RuntimeError: prometheus exited with code 1 before it was ready"


def test_no_llm_blanks_the_llm_variables_so_that_no_env_file_fills_them_in() -> None:
    world = {"PROMETHEUS_URL": "http://127.0.0.1:9"}
    assert product_env(world, no_llm=False) == world  # the caller's OPENAI_* pass through from the environment
    assert product_env(world, no_llm=True) == {**world, "OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "LLM_MODEL": ""}


def test_alerts_posted_to_alertmanager_keep_firing() -> None:
    payload = json.loads((SYNTHETIC / "alert.json").read_text())
    [posted] = postable_alerts(payload)
    assert "endsAt" not in posted  # a zero endsAt posted as such would resolve the alert at once
    assert posted["labels"]["alertname"] == "HighErrorRate" and posted["startsAt"] == "2025-01-15T10:28:30.000Z"
