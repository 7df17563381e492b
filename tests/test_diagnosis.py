"""Unit tests of the diagnosis engine: every scoring rule, the weighing, the abstention and the action planning.

Pure and fast: each case is a few hand-made pieces of evidence that describe one failure mechanism generically
(namespace ``shop``; workloads ``checkout`` calling ``cart``, a ``db`` StatefulSet; nodes ``node-a``/``node-b``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from diagnosis import patterns
from diagnosis.actions import DEFAULT_ACTIONS, actions_for, allowed_actions
from diagnosis.engine import ABSTAIN_BELOW, UNSUPPORTED_CAP, weigh
from diagnosis.facts import Facts, facts_of
from diagnosis.rules import RULES, _names
from diagnosis.tally import Tally
from models.evidence import (
    Condition,
    EvidenceGap,
    EvidenceItem,
    KubeEvent,
    LogTemplate,
    NodeStatus,
    PodStatus,
    Rollout,
    SeriesChange,
)
from models.incident import (
    Action,
    ActionType,
    Alert,
    Category,
    DiagnoseResult,
    Diagnosis,
    Evidence,
    Workload,
)
from triage.planning import diagnose, triage
from triage.runbooks import Runbook, load_runbooks

RUNBOOKS = load_runbooks(Path(__file__).resolve().parents[1] / "runbooks")
NS = "shop"
ONSET = datetime(2030, 1, 15, 10, 0, tzinfo=UTC)  # when the lead alert began firing


# ---- builders ------------------------------------------------------------------------------------------------------


def ago(minutes: float) -> datetime:
    """A time ``minutes`` before the alert's onset (negative: after it)."""
    return ONSET - timedelta(minutes=minutes)


def mutating(actions: list[Action]) -> list[Action]:
    return [action for action in actions if action.type.mutating]


def alert(alertname: str, *, starts_at: datetime = ONSET, status: str = "firing", **labels: str) -> Alert:
    labels = {"alertname": alertname, "severity": "critical", **labels}
    fingerprint = "fp-" + "-".join(f"{key}={value}" for key, value in sorted(labels.items()))
    return Alert(fingerprint=fingerprint, status=status, labels=labels, starts_at=starts_at)


def change(
    metric: str,
    workload: str,
    baseline: float,
    recent: float,
    *,
    now: float | None = None,
    score: float = 8.0,
    began: datetime | None = None,
    namespace: str | None = NS,
    labels: dict[str, str] | None = None,
) -> SeriesChange:
    """A significant change of one series (``score`` is the magnitude; its sign follows the direction)."""
    direction = "up" if recent >= baseline else "down"
    ratio = recent / baseline if baseline else None
    verb = "rose" if direction == "up" else "fell"
    summary = f"{metric} of {workload} {verb} from {baseline:g} to {recent:g}"
    if now is not None:
        summary += f"; now {now:g}"
    return SeriesChange(
        metric=metric,
        workload=workload,
        labels={**({"namespace": namespace} if namespace else {}), **(labels or {})},
        query=f"{metric}{{namespace={namespace!r}}}",
        baseline=baseline,
        recent=recent,
        change=recent - baseline,
        ratio=ratio,
        score=score if direction == "up" else -score,
        direction=direction,
        onset=began if began is not None else ago(2),
        now=now,
        summary=summary,
    )


def errors_up(workload: str = "checkout", *, now: float | None = 0.3, began: datetime | None = None) -> SeriesChange:
    """The error ratio rose from 0.5% to 30%; ``now`` says whether it still is there."""
    return change("error_ratio", workload, 0.005, 0.3, now=now, began=began)


def rollout(
    workload: str, at: datetime, *, revision: int = 7, changed: tuple[str, ...] = ("image",), namespace: str = NS
) -> Rollout:
    return Rollout(
        namespace=namespace,
        deployment=workload,
        revision=revision,
        replicaset=f"{workload}-{revision}f9c8d",
        at=at,
        images=[f"registry.example/{workload}:1.{revision}"],
        previous_images=[f"registry.example/{workload}:1.{revision - 1}"],
        changed=list(changed),
        current=True,
        summary=f"{workload} revision {revision} at {at:%H:%MZ}: {', '.join(changed) or 'no pod template change'}",
    )


def pod(
    name: str,
    workload: str,
    *,
    ready: bool = True,
    restarts: int = 0,
    node: str = "node-a",
    reason: str | None = None,
    exit_code: int | None = None,
    terminated: datetime | None = None,
    waiting: str | None = None,
    namespace: str = NS,
) -> PodStatus:
    return PodStatus(
        namespace=namespace,
        name=name,
        workload=workload,
        node=node,
        phase="Running",
        ready=ready,
        restarts=restarts,
        last_termination_reason=reason,
        last_exit_code=exit_code,
        last_terminated_at=terminated,
        waiting_reason=waiting,
    )


def logs(template: str, *workloads: str, count: int = 120, new: bool = True, sample: str | None = None) -> LogTemplate:
    return LogTemplate(
        template=template,
        count=count,
        baseline_count=0 if new else count,
        new=new,
        sample=sample if sample is not None else template.replace("<*>", "x"),
        workloads=list(workloads),
    )


def condition(metric: str, workload: str, value: float, summary: str) -> Condition:
    return Condition(metric=metric, workload=workload, labels={"namespace": NS}, value=value, summary=summary)


def runbook(categories: dict[str, float], actions: list[dict[str, Any]] | None = None, **match: Any) -> Runbook:
    """A hand-made runbook for ``TestAlert`` (the shipped ones are used where their priors matter)."""
    return Runbook.model_validate(
        {
            "id": "test-runbook",
            "title": "A test runbook",
            "match": {"alertnames": ["TestAlert"], **match},
            "hypotheses": [
                {"category": category, "prior": prior, "summary": f"{category} (runbook's words)"}
                for category, prior in categories.items()
            ],
            "actions": actions or [],
        }
    )


# ---- running the engine --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    result: DiagnoseResult
    facts: Facts
    weighed: list[tuple[Tally, float]]
    runbook: Runbook | None

    @property
    def diagnosis(self) -> Diagnosis:
        return self.result.diagnosis

    @property
    def actions(self) -> list[Action]:
        return self.result.actions

    def probability(self, category: Category) -> float:
        return next((p for tally, p in self.weighed if tally.category == category), 0.0)

    def tally(self, category: Category) -> Tally:
        return next(tally for tally, _ in self.weighed if tally.category == category)

    def cited(self) -> str:
        """Every evidence line of the winning hypothesis, as one text."""
        return "\n".join(self.diagnosis.hypotheses[0].evidence)

    def explain(self) -> str:
        return "\n".join(f"{p:.3f} {t.category.value} {t.root_cause.workload}: {t.evidence}" for t, p in self.weighed)


def run(alerts: list[Alert] | Alert, evidence: Evidence, runbooks: list[Runbook] | None = None) -> Outcome:
    """Triage then diagnose, as the workflow does, keeping the intermediate steps for the assertions."""
    alerts = [alerts] if isinstance(alerts, Alert) else alerts
    runbooks = RUNBOOKS if runbooks is None else runbooks
    triaged = triage(alerts, runbooks)
    result = diagnose(alerts, triaged, evidence, runbooks)
    chosen = next((r for r in runbooks if r.id == triaged.runbook_id), None)
    facts = facts_of(alerts, triaged, evidence)
    return Outcome(result=result, facts=facts, weighed=weigh(facts, chosen), runbook=chosen)


def assert_diagnosed(outcome: Outcome, category: Category, workload: str, namespace: str = NS) -> None:
    diagnosis = outcome.diagnosis
    assert diagnosis.category == category, outcome.explain()
    assert diagnosis.root_cause == Workload(namespace=namespace, workload=workload), outcome.explain()
    assert diagnosis.confidence > ABSTAIN_BELOW, outcome.explain()
    assert diagnosis.hypotheses[0].category == category
    assert diagnosis.hypotheses[0].evidence


def mentions(lines: list[str], text: str) -> bool:
    return any(text in line for line in lines)


# ---- alerts --------------------------------------------------------------------------------------------------------


def error_alert(service: str = "checkout", **extra: str) -> Alert:
    return alert("HighErrorRate", namespace=NS, service=service, **extra)


def latency_alert(service: str = "checkout") -> Alert:
    return alert("HighLatency", namespace=NS, service=service)


def pod_alert(alertname: str, pod_name: str, container: str) -> Alert:
    return alert(alertname, namespace=NS, pod=pod_name, container=container, job="kube-state-metrics")


def node_alert(node: str = "node-a") -> Alert:
    return alert("KubeNodeNotReady", node=node, job="kube-state-metrics")


def volume_alert(claim: str = "data-db-0") -> Alert:
    return alert("KubePersistentVolumeFillingUp", namespace=NS, persistentvolumeclaim=claim, job="kubelet")


# ---- one case per cause --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One mechanism: its alerts and evidence, and what the engine must conclude from them."""

    alerts: list[Alert]
    evidence: Evidence
    category: Category
    root: Workload
    key_fact: str  # words the winning hypothesis must cite
    action: ActionType | None  # the first planned action (None: whatever the runbook lists, aimed at the root)
    runbooks: list[Runbook] | None = None  # None: the shipped runbooks

    def run(self) -> Outcome:
        return run(self.alerts, self.evidence, self.runbooks)


def bad_deploy_case() -> Case:
    return Case(
        alerts=[error_alert()],
        evidence=Evidence(
            findings=[errors_up(began=ago(3))],
            rollouts=[rollout("checkout", ago(9), revision=6), rollout("checkout", ago(8), revision=7)],
            log_templates=[logs("ERROR NullPointerException in PriceFormatter.format <*>", "checkout")],
        ),
        category=Category.bad_deploy,
        root=Workload(namespace=NS, workload="checkout"),
        key_fact="checkout revision",
        action=ActionType.rollback,
    )


def oom_kill_case() -> Case:
    return Case(
        alerts=[pod_alert("KubeContainerOOMKilled", "cart-7d9fb-x2k4p", "cart")],
        evidence=Evidence(
            findings=[change("memory_of_limit", "cart", 0.55, 0.97), change("restarts", "cart", 0, 3)],
            pods=[
                pod("cart-7d9fb-x2k4p", "cart", restarts=3, reason="OOMKilled", exit_code=137, terminated=ago(1)),
                pod("cart-7d9fb-q8n5w", "cart", restarts=2, reason="OOMKilled", exit_code=137, terminated=ago(6)),
            ],
        ),
        category=Category.oom_kill,
        root=Workload(namespace=NS, workload="cart"),
        key_fact="OOMKilled",
        action=ActionType.raise_memory_limit,
    )


def crash_loop_case(*, rolled_out: datetime | None = None) -> Case:
    pods = [
        pod(
            f"cart-6c4d8-{suffix}",
            "cart",
            ready=False,
            restarts=9,
            reason="Error",
            exit_code=1,
            terminated=ago(-2),
            waiting="CrashLoopBackOff",
        )
        for suffix in ("b7x2z", "k9m4n")
    ]
    return Case(
        alerts=[pod_alert("KubePodCrashLooping", "cart-6c4d8-b7x2z", "cart")],
        evidence=Evidence(
            findings=[change("restarts", "cart", 0, 9), change("replicas_available", "cart", 1.0, 0.0)],
            pods=pods,
            rollouts=[rollout("cart", rolled_out if rolled_out else ago(60 * 24 * 6))],
            log_templates=[logs("FATAL missing required env DATABASE_URL", "cart")],
        ),
        category=Category.crash_loop,
        root=Workload(namespace=NS, workload="cart"),
        key_fact="CrashLoopBackOff",
        action=ActionType.escalate,
    )


def cpu_saturation_case() -> Case:
    return Case(
        alerts=[pod_alert("CPUThrottlingHigh", "cart-7d9fb-x2k4p", "cart")],
        evidence=Evidence(
            findings=[
                change("cpu_throttling", "cart", 0.02, 0.6, now=0.62),
                change("latency_p99", "cart", 0.08, 0.9, now=0.85),
                change("request_rate", "cart", 50.0, 52.0, score=1.2),  # flat: below significance
            ],
        ),
        category=Category.cpu_saturation,
        root=Workload(namespace=NS, workload="cart"),
        key_fact="cpu_throttling of cart rose",
        action=ActionType.scale_up,
    )


def traffic_surge_case() -> Case:
    return Case(
        alerts=[pod_alert("CPUThrottlingHigh", "cart-7d9fb-x2k4p", "cart")],
        evidence=Evidence(
            findings=[
                change("cpu_throttling", "cart", 0.02, 0.6, now=0.62),
                change("request_rate", "cart", 50.0, 200.0, score=10.0),
            ],
        ),
        category=Category.traffic_surge,
        root=Workload(namespace=NS, workload="cart"),
        key_fact="x4",
        action=ActionType.scale_up,
    )


def pool_case() -> Case:
    return Case(
        alerts=[latency_alert("checkout")],
        evidence=Evidence(
            findings=[
                change("latency_p99", "checkout", 0.1, 2.5, now=2.4),
                change("pool_pending", "checkout", 0.0, 14.0),
                change("pool_usage", "checkout", 0.4, 1.0),
            ],
            log_templates=[logs("orders-pool: Connection is not available after waiting <*>ms", "checkout")],
        ),
        category=Category.connection_pool_exhaustion,
        root=Workload(namespace=NS, workload="checkout"),
        key_fact="pool_pending of checkout",
        action=ActionType.rollout_restart,
    )


def dependency_case() -> Case:
    return Case(
        alerts=[error_alert("checkout")],
        evidence=Evidence(
            findings=[errors_up("checkout"), change("replicas_available", "cart", 1.0, 0.0)],
            pods=[
                pod("checkout-5b8c9-d2f4h", "checkout"),
                pod("cart-7d9fb-x2k4p", "cart", ready=False, restarts=4),
                pod("cart-7d9fb-q8n5w", "cart", ready=False, restarts=1),
            ],
            rollouts=[rollout("checkout", ago(60 * 24 * 3)), rollout("cart", ago(60 * 24 * 4))],
            log_templates=[
                logs(
                    "upstream call failed upstream=cart error=<*> connection refused",
                    "checkout",
                    sample="upstream call failed upstream=cart error=dial tcp 10.1.2.3:8080: connection refused",
                )
            ],
        ),
        category=Category.dependency_failure,
        root=Workload(namespace=NS, workload="cart"),
        key_fact="upstream=cart",
        action=None,
    )


def application_error_case() -> Case:
    return Case(
        alerts=[error_alert("checkout")],
        evidence=Evidence(
            findings=[errors_up("checkout", now=0.29)],
            log_templates=[logs("ERROR order <*> failed: KeyError 'currency'", "checkout")],
        ),
        category=Category.application_error,
        root=Workload(namespace=NS, workload="checkout"),
        key_fact="error_ratio of checkout rose",
        action=ActionType.escalate,
    )


def noise_case(*, now: float = 0.006) -> Case:
    return Case(
        alerts=[error_alert("checkout")],
        evidence=Evidence(findings=[errors_up("checkout", now=now)]),
        category=Category.noise,
        root=Workload(namespace=NS, workload="checkout"),
        key_fact="already over",
        action=ActionType.none,
    )


def certificate_case() -> Case:
    return Case(
        alerts=[alert("SSLCertificateExpired", namespace=NS, service="checkout", job="blackbox")],
        evidence=Evidence(
            conditions=[condition("cert_expires_in", "checkout", -7200.0, "checkout: TLS certificate expired 2h ago")],
            log_templates=[logs("http: TLS handshake error from <*>: remote error: tls: bad certificate", "checkout")],
        ),
        category=Category.certificate_expiry,
        root=Workload(namespace=NS, workload="checkout"),
        key_fact="TLS certificate expired",
        action=ActionType.escalate,
    )


def dns_case() -> Case:
    return Case(
        alerts=[error_alert("checkout")],
        evidence=Evidence(
            findings=[
                errors_up("checkout"),
                change("dns_servfail", "dns_servfail", 0.0, 35.0, namespace=None),
            ],
            log_templates=[
                logs("error calling cart: dial tcp: lookup cart.shop.svc on 10.96.0.10:53: no such host", "checkout")
            ],
        ),
        category=Category.dns_failure,
        root=Workload(namespace="kube-system", workload="coredns"),
        key_fact="dns_servfail",
        action=ActionType.escalate,
    )


def node_case() -> Case:
    return Case(
        alerts=[node_alert("node-b")],
        evidence=Evidence(
            nodes=[NodeStatus(name="node-a", ready=True), NodeStatus(name="node-b", ready=False)],
            pods=[pod("cart-7d9fb-x2k4p", "cart", node="node-b", ready=False)],
        ),
        category=Category.node_failure,
        root=Workload(namespace="", workload="node-b"),
        key_fact="node node-b is not Ready",
        action=ActionType.cordon_node,
    )


def disk_case() -> Case:
    return Case(
        alerts=[volume_alert("data-db-0")],
        evidence=Evidence(
            conditions=[condition("volume_free_now", "data-db-0", 0.01, "data-db-0: free share of the volume is 0.01")],
            findings=[change("volume_free", "data-db-0", 0.3, 0.01)],
            pods=[pod("db-0", "db"), pod("cart-7d9fb-x2k4p", "cart")],
            log_templates=[logs("could not write to file <*>: No space left on device", "db")],
        ),
        category=Category.disk_pressure,
        root=Workload(namespace=NS, workload="db"),
        key_fact="data-db-0: free share",
        action=ActionType.escalate,
    )


def network_case() -> Case:
    return Case(
        alerts=[latency_alert("checkout")],
        evidence=Evidence(
            findings=[
                change("latency_p99", "checkout", 0.1, 1.4, now=1.3),
                change("node_tcp_retransmits", "10.0.0.11:9100", 2.0, 180.0, namespace=None),
                change("node_tcp_retransmits", "10.0.0.12:9100", 3.0, 150.0, namespace=None, score=6.0),
            ],
            log_templates=[logs("GET http://cart:8080/items: i/o timeout", "checkout")],
        ),
        category=Category.network_latency,
        root=Workload(namespace=NS, workload="checkout"),
        key_fact="TCP retransmits rose on 2 node(s)",
        action=ActionType.escalate,
    )


CASES: dict[str, Callable[[], Case]] = {
    "bad_deploy": bad_deploy_case,
    "oom_kill": oom_kill_case,
    "crash_loop": crash_loop_case,
    "cpu_saturation": cpu_saturation_case,
    "traffic_surge": traffic_surge_case,
    "connection_pool_exhaustion": pool_case,
    "dependency_failure": dependency_case,
    "application_error": application_error_case,
    "noise": noise_case,
    "certificate_expiry": certificate_case,
    "dns_failure": dns_case,
    "node_failure": node_case,
    "disk_pressure": disk_case,
    "network_latency": network_case,
}


# ---- every cause, its way ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_the_mechanism_is_diagnosed_with_its_root_cause_and_key_fact(name: str) -> None:
    case = CASES[name]()
    outcome = case.run()
    assert case.category.value == name
    assert_diagnosed(outcome, case.category, case.root.workload, case.root.namespace)
    assert case.key_fact in outcome.cited(), outcome.explain()
    assert outcome.diagnosis.summary


@pytest.mark.parametrize("name", CASES)
def test_the_plan_addresses_the_root_cause(name: str) -> None:
    case = CASES[name]()
    outcome = case.run()
    planned = outcome.actions
    assert planned, "a diagnosis always comes with a plan"
    if case.action is not None:
        assert planned[0].type == case.action, planned
    if case.action is not None and not case.action.mutating:
        assert mutating(planned) == [], f"{name} is not fixed by a mutation: {planned}"
    for action in mutating(planned):
        assert action.requires_approval
        assert action.target == case.root.workload
        assert action.namespace == ("" if action.type is ActionType.cordon_node else case.root.namespace)


@pytest.mark.parametrize("name", CASES)
def test_engine_invariants(name: str) -> None:
    case = CASES[name]()
    outcome = case.run()
    probabilities = [p for _, p in outcome.weighed]
    assert sum(probabilities) <= 1.0 + 1e-9
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    assert len({tally.category for tally, _ in outcome.weighed}) == len(outcome.weighed), "one hypothesis per cause"
    # The shown hypotheses are the weighed ones, most likely first, each with the lines that weighed it.
    hypotheses = outcome.diagnosis.hypotheses
    assert [h.category for h in hypotheses] == [t.category for t, _ in outcome.weighed[: len(hypotheses)]]
    assert hypotheses[0].evidence
    for hypothesis in hypotheses:
        assert len(hypothesis.evidence) <= 6
        if hypothesis.confidence > UNSUPPORTED_CAP:
            assert any(line.startswith("for ") for line in hypothesis.evidence), hypothesis
    assert outcome.diagnosis.confidence == hypotheses[0].confidence
    # Determinism: the workflow may replay the diagnosis; the same input gives the same output.
    again = CASES[name]().run()
    assert again.result.model_dump() == outcome.result.model_dump()


@pytest.mark.parametrize("name", CASES)
def test_mutations_are_always_precisely_aimed(name: str) -> None:
    outcome = CASES[name]().run()
    diagnosis = outcome.diagnosis
    for action in mutating(outcome.actions):
        assert action.target == diagnosis.root_cause.workload
        if action.type is ActionType.cordon_node:
            assert action.namespace == ""
        else:
            assert action.namespace == diagnosis.root_cause.namespace
    for action in mutating(outcome.result.allowed_actions):
        assert action.target, action
        assert action.namespace or action.type is ActionType.cordon_node, action
        assert action.requires_approval


@pytest.mark.parametrize("name", CASES)
def test_allowed_actions_offer_the_plan_escalation_and_doing_nothing(name: str) -> None:
    outcome = CASES[name]().run()
    allowed = outcome.result.allowed_actions
    types = [a.type for a in allowed]
    assert ActionType.escalate in types
    assert ActionType.none in types
    for action in outcome.actions:
        assert action in allowed
    assert len(allowed) == len({a.model_dump_json() for a in allowed}), "no duplicates"


# ---- bad_deploy ----------------------------------------------------------------------------------------------------


def test_bad_deploy_rollback_is_aimed_at_the_rolled_out_workload_and_needs_approval() -> None:
    outcome = bad_deploy_case().run()
    rollback = outcome.actions[0]
    assert (rollback.type, rollback.namespace, rollback.target) == (ActionType.rollback, NS, "checkout")
    assert rollback.requires_approval
    assert "revision 6" in outcome.cited(), "the earliest suspect rollout is the one cited"


def test_a_rollout_of_another_workload_is_not_a_bad_deploy_of_the_alerting_one() -> None:
    outcome = run(
        error_alert("checkout"),
        Evidence(
            findings=[errors_up("checkout")],
            rollouts=[rollout("cart", ago(6))],  # a distractor: cart is healthy and nobody names it
            log_templates=[logs("ERROR order <*> failed: KeyError 'currency'", "checkout")],
        ),
    )
    assert outcome.diagnosis.category != Category.bad_deploy, outcome.explain()
    assert outcome.diagnosis.category == Category.application_error
    assert not any(a.type is ActionType.rollback for a in outcome.actions)
    assert outcome.tally(Category.bad_deploy).points < 0


@pytest.mark.parametrize("minutes_before", [120, 31, -4, -30])
def test_a_rollout_long_before_or_after_the_onset_is_not_a_bad_deploy(minutes_before: float) -> None:
    outcome = run(
        error_alert("checkout"),
        Evidence(findings=[errors_up("checkout", began=ago(0))], rollouts=[rollout("checkout", ago(minutes_before))]),
    )
    assert outcome.diagnosis.category != Category.bad_deploy, outcome.explain()
    tally = outcome.tally(Category.bad_deploy)
    assert tally.points == -2.5
    assert "no rollout of checkout shortly before its trouble" in tally.against[0]


@pytest.mark.parametrize("minutes_before", [29, 5, 0, -2])
def test_a_rollout_within_the_suspect_window_is_a_bad_deploy(minutes_before: float) -> None:
    outcome = run(
        error_alert("checkout"),
        Evidence(findings=[errors_up("checkout", began=ago(0))], rollouts=[rollout("checkout", ago(minutes_before))]),
    )
    assert_diagnosed(outcome, Category.bad_deploy, "checkout")


def test_the_suspect_window_counts_from_the_first_symptom_not_from_the_alert() -> None:
    # The errors began 40 minutes before the alert fired; a rollout 10 minutes before the alert came 30 minutes
    # after the trouble began, so it cannot have caused it.
    late = run(
        error_alert("checkout"),
        Evidence(findings=[errors_up("checkout", began=ago(40))], rollouts=[rollout("checkout", ago(10))]),
    )
    assert late.diagnosis.category != Category.bad_deploy, late.explain()
    # A rollout 45 minutes before the alert but 5 before the first errors is the suspect.
    early = run(
        error_alert("checkout"),
        Evidence(findings=[errors_up("checkout", began=ago(40))], rollouts=[rollout("checkout", ago(45))]),
    )
    assert_diagnosed(early, Category.bad_deploy, "checkout")


def test_a_revision_that_changed_nothing_in_the_pod_template_is_not_a_suspect() -> None:
    outcome = run(
        error_alert("checkout"),
        Evidence(findings=[errors_up("checkout")], rollouts=[rollout("checkout", ago(5), changed=())]),
    )
    assert outcome.diagnosis.category != Category.bad_deploy
    assert outcome.tally(Category.bad_deploy).points < 0


def test_a_kubernetes_gap_is_not_read_as_no_rollout() -> None:
    evidence = Evidence(findings=[errors_up("checkout")])
    known = run(error_alert("checkout"), evidence)
    blind = run(
        error_alert("checkout"),
        evidence.model_copy(update={"gaps": [EvidenceGap(source="kubernetes", reason="403 Forbidden")]}),
    )
    assert "no rollout of checkout is known" in known.tally(Category.bad_deploy).against[0]
    # What the rule guarantees: no point against bad_deploy without Kubernetes' answer ...
    assert blind.tally(Category.bad_deploy).points == 0
    assert blind.tally(Category.bad_deploy).against == []
    assert blind.probability(Category.bad_deploy) > known.probability(Category.bad_deploy)
    # ... and, with nothing for it either, the runbook's prior alone cannot name it.
    assert blind.probability(Category.bad_deploy) <= UNSUPPORTED_CAP
    assert blind.diagnosis.category != Category.bad_deploy


# ---- oom_kill ------------------------------------------------------------------------------------------------------


def test_oom_kill_raises_the_memory_limit_of_the_killed_workload() -> None:
    outcome = oom_kill_case().run()
    raise_limit = outcome.actions[0]
    assert (raise_limit.type, raise_limit.namespace, raise_limit.target) == (ActionType.raise_memory_limit, NS, "cart")
    assert raise_limit.params.get("factor", 0) > 1
    assert "2 cart pod(s) OOMKilled" in outcome.cited()


def test_an_oom_kill_days_ago_does_not_count() -> None:
    outcome = run(
        pod_alert("KubeContainerOOMKilled", "cart-7d9fb-x2k4p", "cart"),
        Evidence(
            pods=[
                pod(
                    "cart-7d9fb-x2k4p",
                    "cart",
                    restarts=1,
                    reason="OOMKilled",
                    exit_code=137,
                    terminated=ago(60 * 24 * 3),
                )
            ],
        ),
    )
    assert outcome.diagnosis.category != Category.oom_kill, outcome.explain()
    assert outcome.diagnosis.category == Category.unknown
    assert "no cart container was OOMKilled lately" in outcome.tally(Category.oom_kill).against[0]
    assert outcome.facts.recent_terminations("cart", ["OOMKilled"]) == []


def test_an_oom_kill_within_the_hour_before_the_first_symptom_counts() -> None:
    evidence = Evidence(
        findings=[change("memory_of_limit", "cart", 0.5, 0.95, began=ago(30))],
        pods=[pod("cart-7d9fb-x2k4p", "cart", reason="OOMKilled", exit_code=137, terminated=ago(80))],
    )
    facts = run(pod_alert("KubeContainerOOMKilled", "cart-7d9fb-x2k4p", "cart"), evidence).facts
    assert [p.name for p in facts.recent_terminations("cart", ["OOMKilled"])] == ["cart-7d9fb-x2k4p"]


def test_oom_kills_of_another_workload_do_not_count() -> None:
    outcome = run(
        pod_alert("KubeContainerOOMKilled", "cart-7d9fb-x2k4p", "cart"),
        Evidence(pods=[pod("db-0", "db", reason="OOMKilled", exit_code=137, terminated=ago(2))]),
    )
    assert outcome.diagnosis.category != Category.oom_kill


# ---- crash_loop ----------------------------------------------------------------------------------------------------


def test_crash_loop_without_a_rollout_escalates_and_mutates_nothing() -> None:
    outcome = crash_loop_case().run()
    assert [a.type for a in outcome.actions] == [ActionType.escalate]
    assert not outcome.actions[0].requires_approval
    assert "2 of 2 cart pods waiting in CrashLoopBackOff" in outcome.cited()


def test_crash_loop_right_after_a_rollout_is_a_bad_deploy() -> None:
    outcome = crash_loop_case(rolled_out=ago(5)).run()
    assert_diagnosed(outcome, Category.bad_deploy, "cart")
    assert outcome.actions[0].type is ActionType.rollback
    assert outcome.actions[0].target == "cart"
    crash = outcome.tally(Category.crash_loop)
    assert mentions(crash.against, "rolled out just before")


def test_containers_that_end_oomkilled_are_an_oom_kill_not_a_crash_loop() -> None:
    pods = [
        pod(
            f"cart-6c4d8-{suffix}",
            "cart",
            ready=False,
            restarts=6,
            reason="OOMKilled",
            exit_code=137,
            terminated=ago(1),
            waiting="CrashLoopBackOff",
        )
        for suffix in ("b7x2z", "k9m4n")
    ]
    outcome = run(
        pod_alert("KubePodCrashLooping", "cart-6c4d8-b7x2z", "cart"),
        Evidence(findings=[change("restarts", "cart", 0, 6)], pods=pods),
    )
    assert_diagnosed(outcome, Category.oom_kill, "cart")
    assert mentions(outcome.tally(Category.crash_loop).against, "not a crash")


def test_restarts_ending_in_error_without_backoff_still_point_at_a_crash_loop() -> None:
    facts = run(
        pod_alert("KubePodCrashLooping", "cart-6c4d8-b7x2z", "cart"),
        Evidence(
            findings=[change("restarts", "cart", 0, 4)],
            pods=[pod("cart-6c4d8-b7x2z", "cart", restarts=4, reason="Error", exit_code=1, terminated=ago(-1))],
        ),
    ).facts
    [tally] = RULES[Category.crash_loop](facts)
    assert mentions(tally.cited, "last ended with Error")
    assert tally.points == 2.0


def test_a_healthy_workload_is_not_a_crash_loop() -> None:
    [tally] = RULES[Category.crash_loop](application_error_case().run().facts)
    assert tally.points < 0
    assert "checkout containers are not restarting" in tally.against[0]


# ---- cpu_saturation, traffic_surge ---------------------------------------------------------------------------------


def test_throttling_with_flat_demand_is_cpu_saturation_not_a_surge() -> None:
    outcome = cpu_saturation_case().run()
    assert outcome.diagnosis.category == Category.cpu_saturation
    assert "requests into cart did not surge" in outcome.cited() or outcome.facts.evidence.red_convention is None
    assert outcome.probability(Category.traffic_surge) < 0.1
    assert outcome.actions[0].type is ActionType.scale_up


def test_throttling_with_four_times_the_requests_is_a_traffic_surge() -> None:
    outcome = traffic_surge_case().run()
    assert outcome.diagnosis.category == Category.traffic_surge
    assert mentions(outcome.tally(Category.cpu_saturation).against, "demand, not CPU, changed")
    scale = outcome.actions[0]
    assert (scale.type, scale.namespace, scale.target) == (ActionType.scale_up, NS, "cart")
    assert scale.params.get("factor", 0) > 1


def test_a_mild_rise_in_demand_is_weaker_evidence_of_a_surge() -> None:
    def surge_points(ratio: float) -> float:
        evidence = Evidence(findings=[change("request_rate", "cart", 50.0, 50.0 * ratio)])
        facts = run(pod_alert("CPUThrottlingHigh", "cart-7d9fb-x2k4p", "cart"), evidence).facts
        return RULES[Category.traffic_surge](facts)[0].points

    assert surge_points(4.0) > surge_points(1.6) > surge_points(1.2)
    assert surge_points(1.2) < 0


def test_no_cpu_change_is_not_cpu_saturation() -> None:
    outcome = application_error_case().run()
    [tally] = RULES[Category.cpu_saturation](outcome.facts)
    assert tally.points < 0 and not tally.cited
    assert outcome.probability(Category.cpu_saturation) <= UNSUPPORTED_CAP


# ---- connection_pool_exhaustion ------------------------------------------------------------------------------------


def test_pool_exhaustion_restarts_the_workload_whose_pool_is_full() -> None:
    outcome = pool_case().run()
    restart = outcome.actions[0]
    assert (restart.type, restart.namespace, restart.target) == (ActionType.rollout_restart, NS, "checkout")
    assert "Connection is not available" in outcome.cited()
    assert "pool_usage of checkout rose from 0.4 to 1" in outcome.cited()


def test_a_pool_that_is_not_nearly_full_gives_no_usage_point() -> None:
    facts = run(latency_alert("checkout"), Evidence(findings=[change("pool_usage", "checkout", 0.2, 0.6)])).facts
    [tally] = RULES[Category.connection_pool_exhaustion](facts)
    assert tally.points == 0 and not tally.cited


def test_a_pool_that_fills_because_demand_quadrupled_is_a_traffic_surge() -> None:
    case = pool_case()
    case.evidence.findings.append(change("request_rate", "checkout", 40.0, 160.0, score=10.0))
    outcome = case.run()
    assert outcome.diagnosis.category == Category.traffic_surge, outcome.explain()
    pool = outcome.tally(Category.connection_pool_exhaustion)
    assert mentions(pool.against, "the pool fills because demand rose")


def test_latency_alone_is_not_pool_exhaustion() -> None:
    outcome = run(latency_alert("checkout"), Evidence(findings=[change("latency_p99", "checkout", 0.1, 2.0, now=2.0)]))
    assert outcome.diagnosis.category != Category.connection_pool_exhaustion
    assert outcome.probability(Category.connection_pool_exhaustion) <= UNSUPPORTED_CAP


# ---- dependency_failure --------------------------------------------------------------------------------------------


def dependency_runbook(actions: list[dict[str, Any]]) -> Runbook:
    return runbook(
        {"dependency_failure": 0.4, "bad_deploy": 0.4, "application_error": 0.2}, actions, alertnames=["TestAlert"]
    )


def dependency_alert() -> Alert:
    return alert("TestAlert", namespace=NS, service="checkout", pod="checkout-5b8c9-d2f4h")


def test_dependency_failure_blames_the_dependency_not_the_caller() -> None:
    outcome = dependency_case().run()
    assert outcome.diagnosis.root_cause == Workload(namespace=NS, workload="cart")
    assert "callers log failures naming cart" in outcome.cited()
    assert "2 of 2 cart pods are not ready" in outcome.cited()
    assert "replicas_available of cart fell" in outcome.cited()
    for action in mutating(outcome.actions):
        assert action.target == "cart", action
    assert all(action.target != "checkout" for action in outcome.actions)


def test_a_dependency_fix_from_the_runbook_is_aimed_at_the_dependency() -> None:
    rb = dependency_runbook(
        [
            {"type": "rollout_restart", "target": "workload", "addresses": ["dependency_failure"]},
            {"type": "delete_pod", "target": "pod", "addresses": ["dependency_failure"]},
            {"type": "rollback", "target": "workload", "addresses": ["bad_deploy"]},
        ]
    )
    outcome = run(dependency_alert(), dependency_case().evidence, [rb])
    assert outcome.diagnosis.category == Category.dependency_failure
    restart, delete = outcome.actions
    assert (restart.type, restart.namespace, restart.target) == (ActionType.rollout_restart, NS, "cart")
    # The pod to delete is the dependency's worst: not ready, most restarts.
    assert (delete.type, delete.namespace, delete.target) == (ActionType.delete_pod, NS, "cart-7d9fb-x2k4p")
    # The alert names a checkout pod; it is not the dependency's, so it is not the one deleted.
    assert all("checkout" not in action.target for action in outcome.actions)


def test_a_runbook_without_dependency_actions_falls_back_to_the_defaults_aimed_at_the_dependency() -> None:
    rb = dependency_runbook([{"type": "rollback", "target": "workload", "addresses": ["bad_deploy"]}])
    outcome = run(dependency_alert(), dependency_case().evidence, [rb])
    expected = [a.type for a in DEFAULT_ACTIONS[Category.dependency_failure]]
    assert [a.type for a in outcome.actions] == expected
    assert all(a.target == "cart" and a.namespace == NS for a in mutating(outcome.actions))


def test_a_dependency_that_alerts_too_is_still_the_root_cause_its_callers_name() -> None:
    # cart's own 5xx alert is in the same group, but checkout leads (it fired first): checkout's errors name cart.
    evidence = dependency_case().evidence.model_copy(deep=True)
    evidence.findings.append(errors_up("cart"))
    later = alert("HighErrorRate", namespace=NS, service="cart", starts_at=ONSET + timedelta(minutes=1))
    outcome = run([error_alert("checkout"), later], evidence)
    assert outcome.result.diagnosis.category == Category.dependency_failure, outcome.explain()
    assert outcome.diagnosis.root_cause == Workload(namespace=NS, workload="cart")
    assert all(a.target == "cart" for a in outcome.actions if a.type.mutating)


def test_a_slow_dependency_the_callers_time_out_on_is_the_root_cause() -> None:
    evidence = Evidence(
        findings=[errors_up("checkout"), change("latency_p99", "cart", 0.08, 4.0, now=3.9)],
        pods=[pod("checkout-5b8c9-d2f4h", "checkout"), pod("cart-7d9fb-x2k4p", "cart")],
        rollouts=[rollout("checkout", ago(60 * 24 * 3)), rollout("cart", ago(60 * 24 * 4))],
        log_templates=[logs("GET http://cart.shop.svc:8080/api/cart failed: context deadline exceeded", "checkout")],
    )
    outcome = run(error_alert("checkout"), evidence)
    assert outcome.diagnosis.category == Category.dependency_failure, outcome.explain()
    assert outcome.diagnosis.root_cause == Workload(namespace=NS, workload="cart")
    assert "p99" in outcome.cited() or "latency_p99" in outcome.cited()


def test_a_name_inside_another_word_does_not_name_the_dependency() -> None:
    evidence = Evidence(
        findings=[errors_up("checkout")],
        # cart is unwell, but the callers' errors are about cartography, which the evidence knows nothing of.
        pods=[pod("cart-7d9fb-x2k4p", "cart", ready=False), pod("checkout-5b8c9-d2f4h", "checkout")],
        log_templates=[logs("upstream call failed upstream=cartography error=<*> connection refused", "checkout")],
    )
    outcome = run(error_alert("checkout"), evidence)
    assert outcome.diagnosis.root_cause.workload != "cart"
    assert outcome.diagnosis.category != Category.dependency_failure, outcome.explain()
    cart = outcome.tally(Category.dependency_failure)
    assert cart.root_cause.workload == "cart"
    assert not mentions(cart.cited, "naming cart")
    assert mentions(cart.against, "no caller names cart in its errors")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("upstream call failed upstream=cart error=refused", True),
        ("GET http://cart:8080/items: connection refused", True),
        ("dial tcp: lookup cart.shop.svc.cluster.local: no such host", True),
        ("CART unavailable", True),
        ("cart", True),
        ("upstream=cartography connection refused", False),
        ("upstream=smartcart connection refused", False),
        ("upstream=cart-api connection refused", False),  # another workload's name
        ("upstream=shop-cart connection refused", False),
    ],
)
def test_names_matches_whole_names_only(text: str, named: bool) -> None:
    assert _names(text, "cart") is named


def test_a_failing_dependency_nobody_calls_is_not_the_root_cause() -> None:
    evidence = Evidence(
        findings=[errors_up("checkout"), change("replicas_available", "cart", 1.0, 0.5)],
        log_templates=[logs("ERROR order <*> failed: KeyError 'currency'", "checkout")],
    )
    outcome = run(error_alert("checkout"), evidence)
    assert outcome.diagnosis.category != Category.dependency_failure, outcome.explain()
    assert mentions(outcome.tally(Category.dependency_failure).against, "no caller names cart")


def test_a_caller_rolled_out_just_before_is_a_bad_deploy_not_a_victim() -> None:
    case = dependency_case()
    case.evidence.rollouts.append(rollout("checkout", ago(4), revision=8))
    outcome = case.run()
    assert_diagnosed(outcome, Category.bad_deploy, "checkout")
    assert mentions(outcome.tally(Category.dependency_failure).against, "checkout itself was rolled out")


def test_dependencies_in_other_namespaces_are_not_suspects() -> None:
    evidence = dependency_case().evidence
    foreign = evidence.model_copy(
        update={
            "findings": [errors_up("checkout"), change("replicas_available", "cart", 1.0, 0.0, namespace="billing")],
            "pods": [pod("cart-7d9fb-x2k4p", "cart", ready=False, namespace="billing")],
            "rollouts": [],
        }
    )
    facts = run(error_alert("checkout"), foreign).facts
    assert "cart" not in facts.known_workloads()
    assert RULES[Category.dependency_failure](facts) == []


# ---- application_error ---------------------------------------------------------------------------------------------


def test_ongoing_errors_with_no_specific_cause_are_an_application_error_for_a_person() -> None:
    outcome = application_error_case().run()
    assert [a.type for a in outcome.actions] == [ActionType.escalate]
    assert "KeyError" in outcome.cited()


def test_a_specific_cause_explains_the_errors_away() -> None:
    outcome = bad_deploy_case().run()
    residual = outcome.tally(Category.application_error)
    assert residual.against and "bad_deploy explains the symptom" in residual.against[-1]
    assert outcome.probability(Category.application_error) < outcome.probability(Category.bad_deploy) / 2


def test_a_weakly_supported_cause_does_not_explain_errors_away() -> None:
    # Waiting for pooled connections alone is 2 points for pool exhaustion: less than a cause that explains (3).
    outcome = run(
        error_alert("checkout"),
        Evidence(findings=[errors_up("checkout"), change("pool_pending", "checkout", 0.0, 3.0)]),
    )
    assert 0 < outcome.tally(Category.connection_pool_exhaustion).points < 3.0
    assert max(t.points for t, _ in outcome.weighed if t.category != Category.application_error) < 3.0
    assert not mentions(outcome.tally(Category.application_error).against, "explains the symptom")


def test_errors_that_already_stopped_are_not_an_application_error() -> None:
    outcome = noise_case().run()
    assert outcome.diagnosis.category != Category.application_error
    assert "checkout's errors already stopped" in outcome.tally(Category.application_error).against[0]


# ---- noise ---------------------------------------------------------------------------------------------------------


def test_a_spike_already_over_is_noise_and_nothing_is_done() -> None:
    outcome = noise_case().run()
    assert [a.type for a in outcome.actions] == [ActionType.none]
    assert not outcome.actions[0].requires_approval
    assert "now 0.006" in outcome.cited()


@pytest.mark.parametrize("now", [0.3, 0.29, 0.1])
def test_errors_still_going_on_are_not_noise(now: float) -> None:
    outcome = noise_case(now=now).run()
    assert outcome.diagnosis.category != Category.noise, outcome.explain()
    assert "still going on" in outcome.tally(Category.noise).against[0]
    assert not any(a.type is ActionType.none for a in outcome.actions)


def test_an_unmeasured_latest_value_is_not_taken_for_recovery() -> None:
    outcome = run(error_alert("checkout"), Evidence(findings=[errors_up("checkout", now=None)]))
    assert outcome.diagnosis.category != Category.noise
    assert outcome.tally(Category.noise).points <= 0


def test_an_alert_expression_that_returns_nothing_now_supports_noise() -> None:
    evidence = Evidence(
        items=[EvidenceItem(source="prometheus", kind="alert_expression", summary="0 series", data={"series": []})],
        findings=[errors_up("checkout", now=0.006)],
    )
    outcome = run(error_alert("checkout"), evidence)
    assert outcome.diagnosis.category == Category.noise
    assert outcome.tally(Category.noise).points == 3.5 + 2.0
    assert outcome.probability(Category.noise) > noise_case().run().probability(Category.noise)


# ---- certificate_expiry --------------------------------------------------------------------------------------------


def test_an_expired_certificate_escalates_with_no_mutation() -> None:
    outcome = certificate_case().run()
    assert [a.type for a in outcome.actions] == [ActionType.escalate]
    assert outcome.tally(Category.certificate_expiry).points == 4.0 + 1.0


def test_an_expired_certificate_weighs_more_than_one_about_to_expire() -> None:
    def points(value: float) -> float:
        evidence = Evidence(conditions=[condition("cert_expires_in", "checkout", value, "checkout: TLS ...")])
        return RULES[Category.certificate_expiry](run(certificate_case().alerts, evidence).facts)[0].points

    assert points(-60.0) == points(0.0) == 4.0
    assert points(3 * 86400.0) == 2.0


def test_a_tls_alert_without_any_certificate_evidence_abstains() -> None:
    # The runbook's prior for certificate_expiry is high, but a prior is not a finding.
    outcome = run(certificate_case().alerts, Evidence())
    assert outcome.diagnosis.category == Category.unknown, outcome.explain()
    assert outcome.probability(Category.certificate_expiry) <= UNSUPPORTED_CAP
    assert mentions(outcome.tally(Category.certificate_expiry).against, "no certificate of this namespace expires")


def test_tls_errors_in_the_logs_alone_are_not_an_expired_certificate() -> None:
    outcome = run(
        error_alert("checkout"),
        Evidence(
            findings=[errors_up("checkout")],
            log_templates=[logs("x509: certificate signed by unknown authority", "checkout")],
        ),
    )
    assert outcome.diagnosis.category != Category.certificate_expiry
    assert outcome.tally(Category.certificate_expiry).points == -2.0 + 1.0


# ---- dns_failure ---------------------------------------------------------------------------------------------------


def test_dns_failure_blames_the_cluster_resolver_and_mutates_nothing() -> None:
    outcome = dns_case().run()
    assert outcome.diagnosis.root_cause == Workload(namespace="kube-system", workload="coredns")
    assert "no such host" in outcome.cited()
    assert mutating(outcome.actions) == []
    # A cause the runbook does not list (high-error-rate does not foresee DNS) can still carry the answer.
    assert outcome.runbook is not None
    assert Category.dns_failure not in {h.category for h in outcome.runbook.hypotheses}


def test_a_resolver_named_in_the_logs_is_the_root_cause() -> None:
    evidence = Evidence(
        findings=[change("dns_servfail", "dns_servfail", 0.0, 20.0, namespace=None)],
        log_templates=[logs("[ERROR] plugin/errors: 2 cart.shop.svc. A: read udp <*>: i/o timeout", "node-local-dns")],
    )
    facts = run(error_alert("checkout"), evidence).facts
    [tally] = RULES[Category.dns_failure](facts)
    assert tally.root_cause == Workload(namespace="kube-system", workload="node-local-dns")


def test_a_few_unresolvable_names_without_servfail_are_not_a_dns_failure() -> None:
    outcome = run(
        error_alert("checkout"),
        Evidence(
            findings=[errors_up("checkout")],
            log_templates=[logs("error calling <*>: dial tcp: lookup crat.shop.svc: no such host", "checkout")],
        ),
    )
    assert outcome.diagnosis.category != Category.dns_failure, outcome.explain()
    assert outcome.tally(Category.dns_failure).points == -2.0 + 1.0


# ---- node_failure --------------------------------------------------------------------------------------------------


def test_node_failure_cordons_the_node_cluster_wide() -> None:
    outcome = node_case().run()
    assert outcome.facts.namespace == "" and outcome.facts.lead == "" and outcome.facts.node == "node-b"
    cordon = outcome.actions[0]
    assert (cordon.type, cordon.namespace, cordon.target) == (ActionType.cordon_node, "", "node-b")
    assert cordon.requires_approval


def test_a_not_ready_condition_from_prometheus_counts_like_the_node_status() -> None:
    evidence = Evidence(conditions=[condition("node_not_ready_now", "node-b", 1.0, "node-b: node is not Ready 1")])
    outcome = run(node_alert("node-b"), evidence)
    assert_diagnosed(outcome, Category.node_failure, "node-b", namespace="")


def test_a_node_under_pressure_is_a_node_failure_candidate() -> None:
    outcome = run(
        node_alert("node-b"), Evidence(nodes=[NodeStatus(name="node-b", ready=True, pressure=["MemoryPressure"])])
    )
    [tally] = RULES[Category.node_failure](outcome.facts)
    assert tally.points == 1.5
    assert "MemoryPressure" in tally.cited[0]


def test_a_failing_node_that_runs_nothing_of_the_incident_is_not_the_root_cause() -> None:
    outcome = run(
        error_alert("checkout"),
        Evidence(
            findings=[errors_up("checkout")],
            nodes=[NodeStatus(name="node-a", ready=True), NodeStatus(name="node-b", ready=False)],
            pods=[pod("checkout-5b8c9-d2f4h", "checkout", node="node-a")],
        ),
    )
    assert outcome.diagnosis.category != Category.node_failure, outcome.explain()
    assert mentions(outcome.tally(Category.node_failure).against, "nothing of this incident runs on node-b")
    assert not any(a.type is ActionType.cordon_node for a in outcome.actions)


def test_a_failing_node_that_runs_the_alerting_pods_is_the_root_cause() -> None:
    outcome = run(
        error_alert("checkout"),
        Evidence(
            findings=[errors_up("checkout")],
            nodes=[NodeStatus(name="node-a", ready=True), NodeStatus(name="node-b", ready=False)],
            pods=[pod("checkout-5b8c9-d2f4h", "checkout", node="node-b", ready=False)],
        ),
    )
    tally = outcome.tally(Category.node_failure)
    assert tally.root_cause == Workload(namespace="", workload="node-b")
    assert mentions(tally.cited, "1 pod(s) of the alerting workloads run on node-b")
    assert outcome.probability(Category.node_failure) > outcome.probability(Category.bad_deploy)


def test_a_ready_node_is_not_a_node_failure() -> None:
    outcome = run(node_alert("node-b"), Evidence(nodes=[NodeStatus(name="node-b", ready=True)]))
    assert outcome.diagnosis.category == Category.unknown
    assert "node node-b is Ready and under no pressure" in outcome.tally(Category.node_failure).against[-1]
    assert [a.type for a in outcome.actions] == [ActionType.escalate]


# ---- disk_pressure -------------------------------------------------------------------------------------------------


def test_a_full_statefulset_claim_blames_its_statefulset() -> None:
    outcome = disk_case().run()
    assert outcome.diagnosis.root_cause == Workload(namespace=NS, workload="db")
    assert "No space left on device" in outcome.cited()
    assert mutating(outcome.actions) == []


@pytest.mark.parametrize(
    ("claim", "pods", "writers", "owner"),
    [
        ("data-db-0", [], ["db"], "db"),  # the workload that logs ENOSPC
        ("data-db-0", ["db-0"], [], "db"),  # the StatefulSet's pod
        ("www-cart-db-2", ["cart-db-2", "db-0"], [], "cart-db"),  # the longest owner wins
        ("uploads", [], [], "uploads"),  # nothing known: the claim itself
        ("data-db-0", [], [], "data-db"),  # only the claim's stem
    ],
)
def test_the_owner_of_a_claim(claim: str, pods: list[str], writers: list[str], owner: str) -> None:
    evidence = Evidence(
        conditions=[condition("volume_free_now", claim, 0.02, f"{claim}: free share of the volume is 0.02")],
        pods=[pod(name, name.rsplit("-", 1)[0]) for name in pods],
        log_templates=[logs("write failed: No space left on device", *writers)] if writers else [],
    )
    outcome = run(volume_alert(claim), evidence)
    assert outcome.diagnosis.category == Category.disk_pressure
    assert outcome.diagnosis.root_cause.workload == owner


def test_a_volume_alert_without_a_full_volume_abstains() -> None:
    outcome = run(volume_alert("data-db-0"), Evidence())
    assert outcome.diagnosis.category == Category.unknown, outcome.explain()
    assert outcome.probability(Category.disk_pressure) <= UNSUPPORTED_CAP
    assert mentions(outcome.tally(Category.disk_pressure).against, "volume data-db-0 still has room")


def test_a_full_node_filesystem_is_disk_pressure_on_the_node() -> None:
    evidence = Evidence(
        conditions=[condition("node_filesystem_free_now", "node-b", 0.03, "node-b: free share of the node fs 0.03")]
    )
    outcome = run(node_alert("node-b"), evidence)
    tally = outcome.tally(Category.disk_pressure)
    assert tally.root_cause == Workload(namespace="", workload="node-b")
    assert tally.points == 2.5


# ---- network_latency -----------------------------------------------------------------------------------------------


def test_retransmits_and_latency_without_cpu_are_network_latency_for_a_person() -> None:
    outcome = network_case().run()
    assert mutating(outcome.actions) == []
    assert "i/o timeout" in outcome.cited()


def test_latency_of_a_cpu_bound_workload_is_not_network_latency() -> None:
    case = network_case()
    case.evidence.findings.append(change("cpu_throttling", "checkout", 0.02, 0.7, now=0.7))
    outcome = case.run()
    assert outcome.diagnosis.category != Category.network_latency, outcome.explain()
    assert mentions(outcome.tally(Category.network_latency).against, "CPU-bound")


def test_latency_without_retransmits_is_not_network_latency() -> None:
    outcome = run(latency_alert("checkout"), Evidence(findings=[change("latency_p99", "checkout", 0.1, 1.4, now=1.3)]))
    assert outcome.diagnosis.category != Category.network_latency
    assert mentions(outcome.tally(Category.network_latency).against, "no rise in TCP retransmits or packet loss")


# ---- abstention ----------------------------------------------------------------------------------------------------


def test_a_covered_alert_without_evidence_abstains_and_escalates() -> None:
    outcome = run(error_alert("checkout"), Evidence())
    diagnosis = outcome.diagnosis
    assert outcome.runbook is not None and diagnosis.runbook == outcome.runbook.id
    assert diagnosis.category == Category.unknown
    assert diagnosis.confidence < ABSTAIN_BELOW
    assert diagnosis.summary.startswith("The evidence does not single out a cause")
    assert [(a.type, a.target, a.requires_approval) for a in outcome.actions] == [(ActionType.escalate, "", False)]
    assert "abstains" in outcome.actions[0].reason
    # The hypotheses are still shown, for a person to pick from.
    assert diagnosis.hypotheses and diagnosis.hypotheses[0].confidence == diagnosis.confidence


def test_an_alert_no_runbook_covers_abstains_and_says_so() -> None:
    outcome = run(alert("SomethingOdd", namespace=NS, service="checkout"), Evidence())
    diagnosis = outcome.diagnosis
    assert outcome.runbook is None and diagnosis.runbook is None
    assert diagnosis.category == Category.unknown
    assert diagnosis.confidence < ABSTAIN_BELOW
    assert "No runbook covers SomethingOdd" in diagnosis.summary
    assert [a.type for a in outcome.actions] == [ActionType.escalate]
    assert outcome.result.rationale.startswith("no runbook matched")


def test_strong_evidence_names_a_cause_even_without_a_runbook() -> None:
    outcome = run(alert("SomethingOdd", namespace=NS, service="checkout"), bad_deploy_case().evidence)
    assert_diagnosed(outcome, Category.bad_deploy, "checkout")
    rollback = outcome.actions[0]
    assert (rollback.type, rollback.namespace, rollback.target) == (ActionType.rollback, NS, "checkout")


def test_an_abstention_names_the_leading_hypothesis_and_its_place() -> None:
    outcome = run(error_alert("checkout"), Evidence())
    leader, probability = outcome.weighed[0]
    assert f"most likely {leader.category.value} at {probability:.2f}" in outcome.diagnosis.summary
    assert outcome.diagnosis.root_cause == leader.root_cause


def throttling_blip() -> Outcome:
    """Throttling that already stopped: starved of CPU, or a blip that is over? Both rules fit it equally."""
    return run(
        pod_alert("TestAlert", "cart-7d9fb-x2k4p", "cart"),
        Evidence(findings=[change("cpu_throttling", "cart", 0.01, 0.5, now=0.01)]),
        [
            runbook(
                {"cpu_saturation": 0.5, "noise": 0.5},
                [
                    {
                        "type": "scale_up",
                        "target": "workload",
                        "addresses": ["cpu_saturation"],
                        "params": {"factor": 1.5},
                    },
                ],
            )
        ],
    )


def test_throttling_that_already_stopped_is_noise_rather_than_saturation() -> None:
    outcome = throttling_blip()
    assert outcome.probability(Category.noise) > outcome.probability(Category.cpu_saturation), outcome.explain()
    assert "but it already stopped" in outcome.tally(Category.cpu_saturation).cited[0]


def test_a_tie_between_two_causes_is_not_decided_by_their_names() -> None:
    outcome = throttling_blip()
    assert outcome.diagnosis.category != Category.cpu_saturation, outcome.explain()
    assert not any(a.type is ActionType.scale_up for a in outcome.actions)


# ---- the weighing --------------------------------------------------------------------------------------------------


def test_a_listed_cause_starts_from_the_runbook_prior() -> None:
    facts = application_error_case().run().facts
    seen = []
    for prior in (0.1, 0.3, 0.5):
        weighed = weigh(facts, runbook({"application_error": prior}))
        assert sum(p for _, p in weighed) < 1.0  # "none of these" keeps a share
        seen.append(dict((t.category, p) for t, p in weighed)[Category.application_error])
    assert seen == sorted(seen) and seen[0] < seen[-1]


def test_an_unsupported_cause_is_capped_whatever_its_prior() -> None:
    evidence = Evidence(findings=[errors_up("checkout")], gaps=[EvidenceGap(source="kubernetes", reason="timeout")])
    outcome = run(alert("TestAlert", namespace=NS, service="checkout"), evidence, [runbook({"bad_deploy": 0.95})])
    assert outcome.tally(Category.bad_deploy).cited == []
    assert outcome.probability(Category.bad_deploy) == pytest.approx(UNSUPPORTED_CAP)
    assert outcome.diagnosis.category != Category.bad_deploy


@pytest.mark.parametrize("prior", [0.0, 1.0])
def test_extreme_priors_stay_finite(prior: float) -> None:
    outcome = run(
        alert("TestAlert", namespace=NS, service="checkout"),
        bad_deploy_case().evidence,
        [runbook({"bad_deploy": prior, "application_error": 1.0 - prior})],
    )
    assert all(0.0 < p < 1.0 for _, p in outcome.weighed)
    assert sum(p for _, p in outcome.weighed) <= 1.0 + 1e-9


def test_competing_causes_share_the_unit_mass() -> None:
    outcome = crash_loop_case(rolled_out=ago(5)).run()  # bad_deploy and crash_loop both fit well
    assert sum(p for _, p in outcome.weighed) == pytest.approx(1.0, abs=0.05)
    assert outcome.probability(Category.crash_loop) > 0.1
    assert outcome.probability(Category.bad_deploy) > outcome.probability(Category.crash_loop)


def test_the_shown_hypotheses_and_their_evidence_are_bounded() -> None:
    outcome = crash_loop_case().run()
    assert len(outcome.weighed) <= len(RULES)  # a rule with no suspect (no other workload, no node) is silent
    assert len(outcome.diagnosis.hypotheses) == 6
    assert all(len(h.evidence) <= 6 for h in outcome.diagnosis.hypotheses)


def test_the_rationale_names_the_runbook_and_the_three_best_scores() -> None:
    outcome = bad_deploy_case().run()
    rationale = outcome.result.rationale
    assert rationale.startswith("runbook high-error-rate; evidence scoring: bad_deploy 0.")
    assert rationale.count(",") == 2


def test_the_summary_prefers_the_runbook_words_and_cites_the_best_fact() -> None:
    rb = runbook({"bad_deploy": 0.5})
    outcome = run(alert("TestAlert", namespace=NS, service="checkout"), bad_deploy_case().evidence, [rb])
    assert outcome.diagnosis.summary.startswith("bad_deploy (runbook's words) checkout revision 6")
    generic = run(alert("SomethingOdd", namespace=NS, service="checkout"), bad_deploy_case().evidence)
    assert generic.diagnosis.summary.startswith("A recent rollout of checkout introduced the regression.")


def test_every_rule_answers_an_empty_incident_without_failing() -> None:
    for alerts in ([error_alert()], [node_alert()], [volume_alert()], [alert("SomethingOdd")]):
        triaged = triage(alerts, RUNBOOKS)
        facts = facts_of(alerts, triaged, Evidence())
        for category, rule in RULES.items():
            for tally in rule(facts):
                assert tally.category == category
                assert tally.points <= 0, (category, tally)


# ---- the facts -----------------------------------------------------------------------------------------------------


def test_facts_follow_every_firing_alert_lead_first() -> None:
    alerts = [
        alert("HighErrorRate", namespace=NS, service="cart", starts_at=ago(2), severity="warning"),
        alert("HighErrorRate", namespace=NS, service="checkout", starts_at=ago(0)),
        alert("HighErrorRate", namespace=NS, service="db", starts_at=ago(30), status="resolved"),
    ]
    facts = run(alerts, Evidence()).facts
    assert facts.lead == "checkout"  # the most severe
    assert facts.alerting == ("checkout", "cart")  # the resolved one is over
    assert facts.onset == ago(2)


def test_insignificant_findings_are_not_signals() -> None:
    evidence = Evidence(findings=[change("cpu_throttling", "cart", 0.01, 0.05, score=3.9)])
    facts = run(pod_alert("CPUThrottlingHigh", "cart-7d9fb-x2k4p", "cart"), evidence).facts
    assert facts.findings("cpu_throttling") == []
    assert facts.finding("cpu_throttling", "cart") is None


def test_pods_belong_to_their_workload_by_owner_or_by_name() -> None:
    evidence = Evidence(
        pods=[
            pod("cart-7d9fb-x2k4p", ""),  # a Deployment's pod, owner unknown
            pod("db-0", ""),  # a StatefulSet's pod
            pod("cartography-7d9fb-x2k4p", ""),
            pod("cart-api-7d9fb-x2k4p", ""),
            pod("misnamed", "cart"),  # the owner is known
        ]
    )
    facts = run(error_alert("cart"), evidence).facts
    assert sorted(p.name for p in facts.pods("cart")) == ["cart-7d9fb-x2k4p", "misnamed"]
    assert [p.name for p in facts.pods("db")] == ["db-0"]


# ---- actions -------------------------------------------------------------------------------------------------------


def test_a_mutation_that_cannot_be_aimed_precisely_becomes_an_escalation() -> None:
    # An alert without a namespace: the rollout is known, but a rollback needs a namespace.
    outcome = run(
        alert("HighErrorRate", service="checkout"),
        Evidence(findings=[errors_up("checkout")], rollouts=[rollout("checkout", ago(5), namespace="")]),
    )
    assert outcome.diagnosis.category == Category.bad_deploy
    assert outcome.diagnosis.root_cause == Workload(namespace="", workload="checkout")
    [action] = outcome.actions
    assert action.type is ActionType.escalate
    assert "rollback needs a target" in action.reason


def test_a_runbook_mutation_with_no_target_becomes_an_escalation() -> None:
    rb = runbook({"bad_deploy": 0.5}, [{"type": "rollout_restart", "target": "none", "addresses": ["bad_deploy"]}])
    outcome = run(alert("TestAlert", namespace=NS, service="checkout"), bad_deploy_case().evidence, [rb])
    assert [a.type for a in outcome.actions] == [ActionType.escalate]


def test_runbook_actions_come_first_and_defaults_only_when_the_runbook_lists_none() -> None:
    listed = runbook(
        {"oom_kill": 0.5}, [{"type": "delete_pod", "target": "pod", "risk": "low", "addresses": ["oom_kill"]}]
    )
    outcome = run(pod_alert("TestAlert", "cart-7d9fb-q8n5w", "cart"), oom_kill_case().evidence, [listed])
    assert outcome.diagnosis.category == Category.oom_kill
    [delete] = outcome.actions
    # The pod the alert names, since it is one of the root cause's.
    assert (delete.type, delete.namespace, delete.target, delete.risk) == (
        ActionType.delete_pod,
        NS,
        "cart-7d9fb-q8n5w",
        "low",
    )
    unlisted = runbook({"oom_kill": 0.5})
    outcome = run(pod_alert("TestAlert", "cart-7d9fb-q8n5w", "cart"), oom_kill_case().evidence, [unlisted])
    assert [a.type for a in outcome.actions] == [a.type for a in DEFAULT_ACTIONS[Category.oom_kill]]
    assert outcome.actions[0].params == {"factor": 1.5}


def test_a_pod_action_without_pods_becomes_an_escalation() -> None:
    rb = runbook({"bad_deploy": 0.5}, [{"type": "delete_pod", "target": "pod", "addresses": ["bad_deploy"]}])
    outcome = run(alert("TestAlert", namespace=NS, service="checkout"), bad_deploy_case().evidence, [rb])
    assert [a.type for a in outcome.actions] == [ActionType.escalate]


def test_causes_without_a_safe_automatic_fix_escalate() -> None:
    for category in (Category.crash_loop, Category.application_error, Category.dns_failure, Category.disk_pressure):
        assert category not in DEFAULT_ACTIONS
    outcome = crash_loop_case().run()
    [action] = actions_for(outcome.diagnosis, None, outcome.facts)
    assert action.type is ActionType.escalate
    assert "no safe automatic fix for crash_loop" in action.reason


def test_identical_actions_are_planned_once() -> None:
    twice = {"type": "rollback", "target": "workload", "addresses": ["bad_deploy"], "reason": "undo"}
    rb = runbook({"bad_deploy": 0.5}, [twice, dict(twice)])
    outcome = run(alert("TestAlert", namespace=NS, service="checkout"), bad_deploy_case().evidence, [rb])
    assert len(outcome.actions) == 1


def test_a_hypothesis_is_planned_at_its_own_root_cause() -> None:
    outcome = dependency_case().run()
    by_category = {h.category: h for h in outcome.diagnosis.hypotheses}
    for action in mutating(actions_for(by_category[Category.bad_deploy], outcome.runbook, outcome.facts)):
        assert action.target == "checkout"
    for action in mutating(actions_for(by_category[Category.dependency_failure], outcome.runbook, outcome.facts)):
        assert action.target == "cart"


def test_allowed_actions_of_an_abstention_still_offer_the_hypotheses_fixes() -> None:
    outcome = run(error_alert("checkout"), Evidence())
    allowed = allowed_actions(outcome.diagnosis, outcome.runbook, outcome.facts)
    assert allowed == outcome.result.allowed_actions
    types = [a.type for a in allowed]
    assert ActionType.rollback in types  # bad_deploy is among the hypotheses shown
    assert types.count(ActionType.escalate) >= 1 and ActionType.none in types
    assert [a.type for a in outcome.actions] == [ActionType.escalate]


def test_a_coredns_alert_blames_coredns_in_kube_system() -> None:
    servfail = Evidence(findings=[change("dns_servfail", "dns_servfail", 0.0, 30.0, namespace=None)])
    for labels in ({"namespace": "kube-system", "job": "coredns"}, {"job": "coredns"}):
        outcome = run(alert("CoreDNSErrorsHigh", **labels), servfail)
        assert_diagnosed(outcome, Category.dns_failure, "coredns", namespace="kube-system")
        assert mutating(outcome.actions) == []


# ---- known defects -------------------------------------------------------------------------------------------------


def test_a_persisting_fall_is_not_a_spike_already_over() -> None:
    evidence = Evidence(findings=[change("latency_p99", "checkout", 0.3, 0.02, now=0.02)])
    facts = run(latency_alert("checkout"), evidence).facts
    [tally] = RULES[Category.noise](facts)
    assert not mentions(tally.cited, "already over"), tally


def test_a_blip_that_is_over_does_not_make_ongoing_errors_noise() -> None:
    evidence = Evidence(
        findings=[errors_up("checkout", now=0.3), change("cpu_throttling", "checkout", 0.01, 0.4, now=0.01)]
    )
    [tally] = RULES[Category.noise](run(error_alert("checkout"), evidence).facts)
    assert tally.points < 0, tally


def test_ongoing_errors_with_fail_fast_latency_are_not_noise() -> None:
    evidence = Evidence(
        findings=[errors_up("checkout", now=0.3), change("latency_p99", "checkout", 0.3, 0.02, now=0.02)]
    )
    outcome = run(error_alert("checkout"), evidence)
    assert outcome.diagnosis.category != Category.noise, outcome.explain()
    assert not any(a.type is ActionType.none for a in outcome.actions)


def test_pods_of_a_workload_whose_name_extends_another_are_not_the_others() -> None:
    evidence = Evidence(
        findings=[errors_up("cart")],
        pods=[
            pod("cart-7d9fb-x2k4p", "cart"),
            pod(
                "cart-proxy-b7x2z",
                "cart-proxy",
                ready=False,
                restarts=9,
                reason="Error",
                exit_code=1,
                waiting="CrashLoopBackOff",
            ),
        ],
    )
    outcome = run(error_alert("cart"), evidence)
    assert [p.name for p in outcome.facts.pods("cart")] == ["cart-7d9fb-x2k4p"]
    assert outcome.tally(Category.crash_loop).points < 0


def test_a_mild_traffic_ramp_does_not_hide_the_rollout_before_the_errors() -> None:
    evidence = Evidence(
        findings=[
            errors_up("checkout", began=ago(3)),
            change("request_rate", "checkout", 100.0, 130.0, score=5.0, began=ago(40)),
        ],
        rollouts=[rollout("checkout", ago(8))],
    )
    outcome = run(error_alert("checkout"), evidence)
    assert_diagnosed(outcome, Category.bad_deploy, "checkout")


# ---- log patterns --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "line"),
    [
        (patterns.POOL, "orders-pool: Connection is not available after waiting 5000ms"),
        (patterns.POOL, "sqlalchemy.exc.TimeoutError: QueuePool limit of size 5 overflow 10 reached"),
        (patterns.POOL, "FATAL: remaining connection slots are reserved for non-replication superuser connections"),
        (patterns.DISK_FULL, "write /var/lib/data/wal/0001: no space left on device"),
        (patterns.TLS, "x509: certificate has expired or is not yet valid"),
        (patterns.DNS, "dial tcp: lookup cart on 10.96.0.10:53: no such host"),
        (patterns.DNS, "[ERROR] plugin/errors: 2 cart.shop.svc. A: read udp: i/o timeout"),
        (patterns.CONNECT_FAILURE, "dial tcp 10.1.2.3:8080: connect: connection refused"),
        (patterns.OOM, "java.lang.OutOfMemoryError: Java heap space"),
        (patterns.START_FAILURE, "FATAL missing required env DATABASE_URL"),
        (patterns.NETWORK_DELAY, "GET http://cart:8080/items: i/o timeout"),
    ],
)
def test_log_patterns_recognise_their_mechanism(pattern: Any, line: str) -> None:
    assert pattern.search(line)


@pytest.mark.parametrize(
    ("pattern", "line"),
    [
        (patterns.POOL, "GET /cart 200 12ms"),
        (patterns.DISK_FULL, "compaction finished, 12GiB free"),
        (patterns.TLS, "TLS handshake complete"),
        (patterns.DNS, "resolved cart.shop.svc to 10.1.2.3"),
        (patterns.OOM, "heap usage 45% of limit"),
        (patterns.ERRORISH, "order 1234 placed in 85ms"),
    ],
)
def test_log_patterns_ignore_ordinary_lines(pattern: Any, line: str) -> None:
    assert not pattern.search(line)


def test_probe_failures_of_a_named_dependency_count_as_its_ill_health() -> None:
    evidence = Evidence(
        findings=[errors_up("checkout")],
        pods=[pod("cart-7d9fb-x2k4p", "cart")],
        events=[
            KubeEvent(
                namespace=NS,
                kind="Pod",
                name="cart-7d9fb-x2k4p",
                reason="Unhealthy",
                message="Readiness probe failed: HTTP probe failed with statuscode: 503",
                count=12,
            )
        ],
        log_templates=[logs("GET http://cart:8080/items returned 503", "checkout")],
    )
    outcome = run(error_alert("checkout"), evidence)
    tally = outcome.tally(Category.dependency_failure)
    assert tally.root_cause.workload == "cart"
    assert mentions(tally.cited, "cart: Unhealthy Readiness probe failed")
    assert mentions(tally.cited, "callers log failures naming cart")
