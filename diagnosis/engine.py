"""Weigh every cause of the taxonomy against the evidence and name the best, or abstain.

Each hypothesis starts from a prior (the runbook's, when the runbook lists the cause; a small one otherwise, so
that strong evidence can still name a cause the runbook did not foresee), adds the log-odds points of its rule, and
competes with the others and with "none of these" (log-odds 0) in a softmax: one well-supported cause gets most of
the mass, two that fit equally well share it, so a confident answer needs evidence that fits one cause better than
the others. Below ``ABSTAIN_BELOW``, or within ``MIN_MARGIN`` of the runner-up, the answer is ``unknown``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from diagnosis.facts import Facts
from diagnosis.rules import RULES
from diagnosis.tally import Tally
from models.incident import Category, Diagnosis, Hypothesis, Workload
from triage.runbooks import Runbook

UNLISTED_PRIOR = 0.05  # a cause the runbook does not list
NO_RUNBOOK_PRIOR = 0.1  # every cause, when no runbook covers the alert
ABSTAIN_BELOW = 0.4
MIN_MARGIN = 0.05  # two causes this close are a coin toss, not a diagnosis
UNSUPPORTED_CAP = 0.2
MEMORY_POINTS = 0.5  # per confirmed past incident of the same cause
MEMORY_CAP = 1.0
# Causes that are what remains when nothing specific explains the symptom.
RESIDUAL = frozenset({Category.application_error})
# A specific cause this well supported explains the symptom better than a residual one.
EXPLAINS = 3.0
SHOWN_HYPOTHESES = 6
CITED_PER_HYPOTHESIS = 6

SUMMARIES: dict[Category, str] = {
    Category.bad_deploy: "A recent rollout of {w} introduced the regression.",
    Category.oom_kill: "{w}'s containers are killed for exceeding their memory limit.",
    Category.crash_loop: "{w}'s containers fail to start or keep crashing, with no rollout to blame.",
    Category.cpu_saturation: "{w} is starved of CPU (throttled at its limit) while demand is normal.",
    Category.traffic_surge: "Demand on {w} rose beyond its capacity.",
    Category.dependency_failure: "{w}, a dependency of the alerting service, is failing; the callers are victims.",
    Category.connection_pool_exhaustion: "{w}'s client connection pool is saturated.",
    Category.application_error: "A code path of {w} fails, with no rollout, resource or dependency cause.",
    Category.network_latency: "Network delay or loss slows calls to or from {w}.",
    Category.disk_pressure: "A volume or filesystem of {w} is full or filling.",
    Category.certificate_expiry: "The TLS certificate of {w} expired or is about to.",
    Category.dns_failure: "Name resolution fails ({w}).",
    Category.node_failure: "Node {w} is not Ready or under pressure; its pods suffer.",
    Category.noise: "The condition already recovered, or nothing corroborates it.",
}


def weigh(facts: Facts, runbook: Runbook | None) -> list[tuple[Tally, float]]:
    """Every cause's best-supported hypothesis with its probability, most likely first."""
    priors = {h.category: h.prior for h in runbook.hypotheses} if runbook else {}
    default = UNLISTED_PRIOR if runbook else NO_RUNBOOK_PRIOR
    tops = [max(tallies, key=lambda t: t.points) for rule in RULES.values() if (tallies := rule(facts))]
    _explain_away(tops)
    supported = {id(top) for top in tops if top.cited}
    _remember(tops, facts)
    odds = [math.exp(_logit(min(max(priors.get(top.category, default), 0.01), 0.99)) + top.points) for top in tops]
    total = 1.0 + math.fsum(odds)  # the 1 is "none of these": the cause may be one no rule knows
    best: list[tuple[Tally, float]] = []
    for top, weight in zip(tops, odds, strict=True):
        probability = weight / total
        if id(top) not in supported:
            # A prior (a runbook's, or memory's) is an expectation, not a finding: with nothing for it now,
            # a cause cannot carry the answer.
            probability = min(probability, UNSUPPORTED_CAP)
        best.append((top, probability))
    best.sort(key=lambda pair: (-pair[1], pair[0].category.value))
    return best


def _remember(tops: list[Tally], facts: Facts) -> None:
    """Confirmed past causes of this alert on this workload raise their cause's odds (a prior, never proof)."""
    for tally in tops:
        confirmed = [p for p in facts.seen_before if p.confirmed and p.category == tally.category]
        if confirmed:
            tally.support(
                min(MEMORY_CAP, MEMORY_POINTS * len(confirmed)),
                f"seen before: {len(confirmed)} closed incident(s) of this alert here were confirmed "
                f"{tally.category.value} (last {confirmed[0].workflow_id})",
            )


def _explain_away(tops: list[Tally]) -> None:
    specific = [t for t in tops if t.category not in RESIDUAL | {Category.noise} and t.points >= EXPLAINS]
    if not specific:
        return
    best = max(specific, key=lambda t: t.points)
    for tally in tops:
        if tally.category in RESIDUAL:
            tally.oppose(2.0, f"{best.category.value} explains the symptom: {best.cited[0].split(': ', 1)[-1][:100]}")


def diagnosis_of(facts: Facts, weighed: Sequence[tuple[Tally, float]], runbook: Runbook | None) -> Diagnosis:
    hypotheses = [
        Hypothesis(
            category=tally.category,
            confidence=round(probability, 3),
            evidence=tally.evidence[:CITED_PER_HYPOTHESIS],
            root_cause=tally.root_cause,
        )
        for tally, probability in weighed[:SHOWN_HYPOTHESES]
    ]
    close = len(weighed) > 1 and weighed[0][1] - weighed[1][1] < MIN_MARGIN
    if not weighed or weighed[0][1] < ABSTAIN_BELOW or close:
        leading = f" (most likely {weighed[0][0].category.value} at {weighed[0][1]:.2f})" if weighed else ""
        return Diagnosis(
            category=Category.unknown,
            confidence=round(weighed[0][1], 3) if weighed else 0.0,
            root_cause=weighed[0][0].root_cause if weighed else facts_place(facts),
            summary=(
                (f"No runbook covers {facts.triage.alertname or 'this alert'}, and t" if not runbook else "T")
                + (f"he evidence does not single out a cause{leading}; a person must diagnose it.")
            ),
            hypotheses=hypotheses,
            runbook=runbook.id if runbook else None,
        )
    top, probability = weighed[0]
    return Diagnosis(
        category=top.category,
        confidence=round(probability, 3),
        root_cause=top.root_cause,
        summary=_summary(top, runbook),
        hypotheses=hypotheses,
        runbook=runbook.id if runbook else None,
    )


def facts_place(facts: Facts) -> Workload:
    return Workload(namespace=facts.namespace, workload=facts.lead)


def _summary(top: Tally, runbook: Runbook | None) -> str:
    listed = next((h.summary for h in runbook.hypotheses if h.category == top.category), None) if runbook else None
    text = listed or SUMMARIES[top.category].format(w=top.root_cause.workload or "the cluster")
    if top.cited:
        text += " " + top.cited[0].split(": ", 1)[-1].rstrip(".") + "."
    return text


def _logit(p: float) -> float:
    return math.log(p / (1 - p))
