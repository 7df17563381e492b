"""The scoring rules: for each cause of the taxonomy, the evidence that speaks for and against it.

A rule weighs evidence in log-odds points: about +3 for evidence that by itself makes a cause likely (a rollout a
few minutes before the errors began, OOMKilled terminations), about +1 for corroboration, and minus points for
evidence that the cause would have left but is missing. Rules look at mechanisms (what changed, when, where), never
at names of particular services or numbers of particular incidents.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from diagnosis import patterns
from diagnosis.facts import Facts
from diagnosis.tally import Tally
from models.incident import Category, Workload

# A rollout this long before a workload's trouble began is a suspect; just after it is a coincidence of sampling.
ROLLOUT_SUSPECT_BEFORE = timedelta(minutes=30)
ROLLOUT_SUSPECT_AFTER = timedelta(minutes=3)
# Demand this many times the baseline is a surge, not noise.
SURGE_RATIO = 2.0
# Symptoms whose latest value tells whether they are still going on (their queries have a ``now_expr``).
TRANSIENT = ("error_ratio", "latency_p99", "cpu_throttling")
# An ongoing symptom keeps at least this share of its rise over the last scrape interval.
STILL_GOING = 0.3


def _here(facts: Facts, workload: str) -> Workload:
    return Workload(namespace=facts.namespace, workload=workload)


def bad_deploy(facts: Facts) -> list[Tally]:
    tallies = []
    for workload in facts.alerting or ("",):
        tally = Tally(Category.bad_deploy, _here(facts, workload))
        rollout = facts.rollout_near(workload, ROLLOUT_SUSPECT_BEFORE, ROLLOUT_SUSPECT_AFTER)
        if rollout is not None:
            tally.support(3.5, f"{rollout.summary} (shortly before {workload}'s trouble began)")
            new_errors = [t for t in facts.templates(patterns.ERRORISH, [workload]) if t.new]
            if new_errors:
                tally.support(0.5, f"new in {workload}'s logs since the rollout: {new_errors[0].template[:120]}")
        elif facts.rollouts(workload):
            latest = max(facts.rollouts(workload), key=lambda r: r.revision)
            tally.oppose(2.5, f"no rollout of {workload} shortly before its trouble (latest: {latest.summary})")
        elif "kubernetes" not in facts.gaps and workload:
            tally.oppose(1.5, f"no rollout of {workload} is known")
        tallies.append(tally)
    return tallies


def crash_loop(facts: Facts) -> list[Tally]:
    tallies = []
    for workload in facts.alerting:
        tally = Tally(Category.crash_loop, _here(facts, workload))
        pods = facts.pods(workload)
        crashing = [p for p in pods if p.waiting_reason in ("CrashLoopBackOff", "CreateContainerConfigError")]
        failed_start = facts.recent_terminations(workload, ("Error", "StartError", "ContainerCannotRun"))
        oom = facts.recent_terminations(workload, ("OOMKilled",))
        if crashing:
            waiting = crashing[0].waiting_reason
            tally.support(2.5, f"{len(crashing)} of {len(pods)} {workload} pods waiting in {waiting}")
        elif failed_start and facts.finding("restarts", workload):
            ended = failed_start[0].last_termination_reason
            tally.support(1.0, f"{workload} containers restart and last ended with {ended}")
        restarts = facts.finding("restarts", workload)
        if restarts:
            tally.support(1.0, restarts.summary)
        if (down := facts.finding("replicas_available", workload, "down")) and (crashing or restarts):
            tally.support(0.5, down.summary)
        if start_logs := facts.templates(patterns.START_FAILURE, [workload]):
            tally.support(0.5, f"{workload} logs a start-up failure: {start_logs[0].template[:120]}")
        if oom and len(oom) >= len(failed_start):
            tally.oppose(2.0, f"{workload} containers end OOMKilled: memory, not a crash")
        if facts.rollout_near(workload, ROLLOUT_SUSPECT_BEFORE, ROLLOUT_SUSPECT_AFTER):
            tally.oppose(2.0, f"{workload} was rolled out just before: the rollout is to blame")
        if not (crashing or restarts):
            tally.oppose(1.5, f"{workload} containers are not restarting")
        tallies.append(tally)
    return tallies


def oom_kill(facts: Facts) -> list[Tally]:
    tallies = []
    for workload in facts.alerting:
        tally = Tally(Category.oom_kill, _here(facts, workload))
        killed = facts.recent_terminations(workload, ("OOMKilled",))
        if killed:
            tally.support(3.0, f"{len(killed)} {workload} pod(s) OOMKilled (exit 137) since shortly before the trouble")
        elif "kubernetes" not in facts.gaps:
            tally.oppose(2.0, f"no {workload} container was OOMKilled lately")
        if memory := facts.finding("memory_of_limit", workload):
            tally.support(1.0, memory.summary)
        if facts.templates(patterns.OOM, [workload]):
            tally.support(0.5, f"{workload} logs mention running out of memory")
        if facts.rollout_near(workload, ROLLOUT_SUSPECT_BEFORE, ROLLOUT_SUSPECT_AFTER):
            tally.oppose(2.0, f"{workload} was rolled out just before: the new version is to blame")
        tallies.append(tally)
    return tallies


def _demand(facts: Facts, workload: str) -> float | None:
    """How many times its baseline request rate the workload serves (None: no significant change seen)."""
    rate = facts.finding("request_rate", workload)
    return rate.ratio if rate is not None and rate.ratio is not None else None


def cpu_saturation(facts: Facts) -> list[Tally]:
    tallies = []
    for workload in facts.alerting:
        tally = Tally(Category.cpu_saturation, _here(facts, workload))
        throttling, usage = facts.finding("cpu_throttling", workload), facts.finding("cpu_usage", workload)
        if throttling and _ongoing(throttling.now, throttling.baseline, throttling.recent):
            tally.support(2.5, throttling.summary)
        elif throttling:
            tally.support(0.5, f"{throttling.summary}, but it already stopped")
        if usage:
            tally.support(1.0, usage.summary)
        if not (throttling or usage):
            tally.oppose(2.0, f"{workload}'s CPU use and throttling did not change")
        demand = _demand(facts, workload)
        if demand is not None and demand >= SURGE_RATIO:
            tally.oppose(3.0, f"requests into {workload} rose x{demand:.2g}: demand, not CPU, changed")
        elif (throttling or usage) and facts.evidence.red_convention:
            tally.support(0.5, f"requests into {workload} did not surge: demand is normal")
        tallies.append(tally)
    return tallies


def traffic_surge(facts: Facts) -> list[Tally]:
    tallies = []
    for workload in facts.alerting:
        tally = Tally(Category.traffic_surge, _here(facts, workload))
        demand = _demand(facts, workload)
        if demand is not None and demand >= SURGE_RATIO:
            tally.support(3.5, f"requests into {workload} rose x{demand:.2g}")
        elif demand is not None and demand >= 1.5:
            tally.support(1.5, f"requests into {workload} rose x{demand:.2g}")
        else:
            tally.oppose(2.5, f"requests into {workload} did not rise")
        strained = [
            found.summary
            for metric in ("cpu_throttling", "cpu_usage", "latency_p99", "pool_usage")
            if (found := facts.finding(metric, workload))
        ]
        if strained and demand:
            tally.support(0.5, strained[0])
        tallies.append(tally)
    return tallies


def connection_pool_exhaustion(facts: Facts) -> list[Tally]:
    tallies = []
    for workload in facts.alerting:
        tally = Tally(Category.connection_pool_exhaustion, _here(facts, workload))
        pending, usage = facts.finding("pool_pending", workload), facts.finding("pool_usage", workload)
        if pending:
            tally.support(2.0, pending.summary)
        if usage and usage.recent >= 0.9:
            tally.support(1.5, usage.summary)
        if logs := facts.templates(patterns.POOL, [workload]):
            tally.support(1.5, f"{workload} logs: {logs[0].template[:120]} (x{logs[0].count})")
        if not (pending or usage or logs):
            tally.oppose(2.5, f"no sign of a saturated connection pool in {workload}")
        demand = _demand(facts, workload)
        if demand is not None and demand >= SURGE_RATIO:
            tally.oppose(1.5, f"requests into {workload} rose x{demand:.2g}: the pool fills because demand rose")
        if facts.rollout_near(workload, ROLLOUT_SUSPECT_BEFORE, ROLLOUT_SUSPECT_AFTER):
            tally.oppose(1.0, f"{workload} was rolled out just before: the new version may leak connections")
        tallies.append(tally)
    return tallies


def dependency_failure(facts: Facts) -> list[Tally]:
    """The alerting workloads are victims: another workload they call is down or failing, and they say so."""
    alerting = [w for w in facts.alerting if w]
    tallies = []
    # A dependency may alert too (its own 5xx in the same group): any workload but the lead can be the suspect,
    # named by the other alerting workloads, its callers.
    for suspect in sorted((facts.known_workloads() | set(alerting)) - {facts.lead}):
        callers = [w for w in alerting if w != suspect]
        tally = Tally(Category.dependency_failure, _here(facts, suspect))
        health = _ill_health(facts, suspect, tally)
        failures = facts.templates(patterns.CONNECT_FAILURE, callers)
        mentioned = [t for t in failures if _names(t.template + " " + t.sample, suspect)]
        if mentioned:
            tally.support(2.5, f"callers log failures naming {suspect}: {mentioned[0].template[:120]}")
        if not health and not mentioned:
            continue
        if not mentioned:
            tally.oppose(1.5, f"no caller names {suspect} in its errors")
        if not health:
            tally.oppose(1.0, f"{suspect} itself looks healthy")
        tallies.append(tally)
    for caller in alerting:
        if facts.rollout_near(caller, ROLLOUT_SUSPECT_BEFORE, ROLLOUT_SUSPECT_AFTER):
            for tally in tallies:
                if tally.root_cause.workload != caller:
                    tally.oppose(1.5, f"{caller} itself was rolled out just before its trouble")
    return tallies


def _ill_health(facts: Facts, workload: str, tally: Tally) -> bool:
    """Add what is wrong with a dependency to ``tally``; whether anything is."""
    found = False
    if down := facts.finding("replicas_available", workload, "down"):
        tally.support(1.5, down.summary)
        found = True
    pods = facts.pods(workload)
    unready = [p for p in pods if not p.ready]
    if pods and len(unready) * 2 >= len(pods):
        tally.support(1.0, f"{len(unready)} of {len(pods)} {workload} pods are not ready")
        found = True
    if probes := [e for e in facts.events(workload) if e.reason in ("Unhealthy", "BackOff", "FailedMount")]:
        tally.support(0.5, f"{workload}: {probes[0].reason} {probes[0].message[:100]}")
        found = True
    if errors := facts.finding("error_ratio", workload):
        tally.support(1.0, errors.summary)
        found = True
    elif slow := facts.finding("latency_p99", workload):
        tally.support(1.0, slow.summary)  # a dependency can fail its callers by being slow (their timeouts)
        found = True
    return found


def _names(text: str, workload: str) -> bool:
    """Does a log line name the workload as a word (a host, an upstream, a service), not as part of another?"""
    lowered, name = text.lower(), workload.lower()
    start = lowered.find(name)
    while start != -1:
        before = lowered[start - 1] if start else " "
        end = start + len(name)
        after = lowered[end] if end < len(lowered) else " "
        if not (before.isalnum() or before == "-") and not (after.isalnum() or after == "-"):
            return True
        start = lowered.find(name, start + 1)
    return False


def application_error(facts: Facts) -> list[Tally]:
    tallies = []
    for workload in facts.alerting:
        tally = Tally(Category.application_error, _here(facts, workload))
        errors = facts.finding("error_ratio", workload)
        if errors and _ongoing(errors.now, errors.baseline, errors.recent):
            tally.support(1.5, errors.summary)
        elif errors:
            tally.oppose(1.5, f"{workload}'s errors already stopped")
        else:
            tally.oppose(1.5, f"{workload}'s error ratio did not change")
        logged = facts.templates(patterns.ERRORISH, [workload])
        if logged:
            tally.support(0.5, f"{workload} logs: {logged[0].template[:120]} (x{logged[0].count})")
        if "kubernetes" in facts.gaps:
            tally.oppose(1.0, "Kubernetes did not answer: a rollout to blame cannot be ruled out")
        tallies.append(tally)
    return tallies


def noise(facts: Facts) -> list[Tally]:
    tallies = []
    for workload in facts.alerting or ("",):
        tally = Tally(Category.noise, _here(facts, workload))
        symptoms = [f for f in facts.findings(workload=workload) if f.metric in TRANSIENT]
        ongoing = [f for f in symptoms if _ongoing(f.now, f.baseline, f.recent)]
        if ongoing:
            # One symptom still there is enough: an incident whose other signs settled is not over.
            tally.oppose(2.5, f"{ongoing[0].summary}: still going on")
        elif symptoms:
            tally.support(3.5, f"{symptoms[0].summary}: the spike is already over")
        if facts.alert_expression_series() == 0:
            tally.support(2.0, "the alert's own expression returns nothing now")
        tallies.append(tally)
    return tallies


def _ongoing(now: float | None, baseline: float, recent: float) -> bool:
    """Is the change still there in the latest value? Either direction: a fall that persists is ongoing too."""
    if now is None or recent == baseline:
        return True  # not measured: assume the worst
    return (now - baseline) / (recent - baseline) >= STILL_GOING


def certificate_expiry(facts: Facts) -> list[Tally]:
    tallies = []
    for condition in facts.conditions("cert_expires_in"):
        tally = Tally(Category.certificate_expiry, _here(facts, condition.workload or facts.lead))
        if condition.value <= 0:
            tally.support(4.0, condition.summary)
        else:
            tally.support(2.0, condition.summary)
        if logs := facts.templates(patterns.TLS):
            tally.support(1.0, f"TLS failures in the logs: {logs[0].template[:120]}")
        tallies.append(tally)
    if not tallies:
        tally = Tally(Category.certificate_expiry, _here(facts, facts.lead))
        tally.oppose(2.0, "no certificate of this namespace expires within a week")
        if logs := facts.templates(patterns.TLS):
            tally.support(1.0, f"TLS failures in the logs: {logs[0].template[:120]}")
        tallies.append(tally)
    return tallies


def dns_failure(facts: Facts) -> list[Tally]:
    resolver = [w for t in facts.templates(patterns.DNS) for w in t.workloads if "dns" in w]
    workload = resolver[0] if resolver else ("coredns" if facts.findings("dns_servfail") else facts.lead)
    namespace = "kube-system" if workload == "coredns" or "dns" in workload else facts.namespace
    if facts.lead and "dns" in facts.lead:
        namespace = facts.namespace or namespace
    tally = Tally(Category.dns_failure, Workload(namespace=namespace, workload=workload))
    if servfail := facts.findings("dns_servfail"):
        tally.support(3.0, servfail[0].summary)
    else:
        tally.oppose(2.0, "DNS error answers did not rise")
    if logs := facts.templates(patterns.DNS):
        tally.support(1.0, f"name resolution failures in the logs: {logs[0].template[:120]}")
    return [tally]


def node_failure(facts: Facts) -> list[Tally]:
    suspects = {n.name for n in facts.nodes_not_ready()}
    suspects |= {c.workload for c in facts.conditions("node_not_ready_now") if c.workload}
    if facts.node:
        suspects.add(facts.node)
    tallies = []
    for node in sorted(suspects):
        tally = Tally(Category.node_failure, Workload(namespace="", workload=node))
        status = next((n for n in facts.evidence.nodes if n.name == node), None)
        not_ready = (status is not None and not status.ready) or any(
            c.workload == node for c in facts.conditions("node_not_ready_now")
        )
        if not_ready:
            tally.support(3.0, f"node {node} is not Ready")
        if status is not None and status.pressure:
            tally.support(1.5, f"node {node} reports {', '.join(status.pressure)}")
        victims = [p for w in facts.alerting for p in facts.pods(w) if p.node == node]
        if victims and not_ready:
            tally.support(1.0, f"{len(victims)} pod(s) of the alerting workloads run on {node}")
        if node != facts.node and not victims:
            tally.oppose(1.5, f"nothing of this incident runs on {node}")
        if not (not_ready or (status is not None and status.pressure)):
            tally.oppose(2.0, f"node {node} is Ready and under no pressure")
        tallies.append(tally)
    return tallies


def disk_pressure(facts: Facts) -> list[Tally]:
    volumes = {c.workload: c for c in facts.conditions("volume_free_now")}
    tallies = []
    for volume in sorted(set(volumes) | ({facts.volume} if facts.volume else set())):
        tally = Tally(Category.disk_pressure, _here(facts, _volume_owner(facts, volume)))
        if volume in volumes:
            tally.support(3.0, volumes[volume].summary)
        if growth := facts.findings(workload=volume):
            tally.support(0.5, growth[0].summary)
        if logs := facts.templates(patterns.DISK_FULL):
            tally.support(1.0, f"writes fail for lack of space: {logs[0].template[:120]}")
        if volume not in volumes:
            tally.oppose(1.0, f"volume {volume} still has room")
        tallies.append(tally)
    for condition in facts.conditions("node_filesystem_free_now"):
        tally = Tally(Category.disk_pressure, Workload(namespace="", workload=condition.workload))
        tally.support(2.5, condition.summary)
        tallies.append(tally)
    if not tallies:
        tally = Tally(Category.disk_pressure, _here(facts, facts.lead))
        tally.oppose(2.5, "no volume or node filesystem is short of space")
        if logs := facts.templates(patterns.DISK_FULL):
            tally.support(1.5, f"writes fail for lack of space: {logs[0].template[:120]}")
        tallies.append(tally)
    return tallies


def _volume_owner(facts: Facts, volume: str) -> str:
    """The workload that mounts a claim: StatefulSet claims are ``<template>-<statefulset>-<ordinal>``."""
    candidates = facts.known_workloads() | {p.name.rsplit("-", 1)[0] for p in facts.evidence.pods}
    candidates |= {w for t in facts.templates(patterns.DISK_FULL) for w in t.workloads}
    stem = volume.rsplit("-", 1)[0] if volume.rsplit("-", 1)[-1].isdigit() else volume
    owners = sorted((c for c in candidates if c and (stem == c or stem.endswith("-" + c))), key=len, reverse=True)
    return owners[0] if owners else stem


def network_latency(facts: Facts) -> list[Tally]:
    tallies = []
    retransmits = facts.findings("node_tcp_retransmits")
    for workload in facts.alerting:
        tally = Tally(Category.network_latency, _here(facts, workload))
        latency = facts.finding("latency_p99", workload)
        if retransmits:
            nodes = sorted({f.workload for f in retransmits})
            tally.support(2.5, f"TCP retransmits rose on {len(nodes)} node(s): {retransmits[0].summary}")
        if latency:
            tally.support(0.5, latency.summary)
        if logs := facts.templates(patterns.NETWORK_DELAY, facts.alerting):
            tally.support(0.5, f"callers log slow network calls: {logs[0].template[:120]}")
        if facts.finding("cpu_throttling", workload) or facts.finding("cpu_usage", workload):
            tally.oppose(1.5, f"{workload} is CPU-bound: the delay is computed, not in the network")
        if not retransmits:
            tally.oppose(2.0, "no rise in TCP retransmits or packet loss")
        tallies.append(tally)
    return tallies


RULES: dict[Category, Callable[[Facts], list[Tally]]] = {
    Category.bad_deploy: bad_deploy,
    Category.oom_kill: oom_kill,
    Category.crash_loop: crash_loop,
    Category.cpu_saturation: cpu_saturation,
    Category.traffic_surge: traffic_surge,
    Category.dependency_failure: dependency_failure,
    Category.connection_pool_exhaustion: connection_pool_exhaustion,
    Category.application_error: application_error,
    Category.network_latency: network_latency,
    Category.disk_pressure: disk_pressure,
    Category.certificate_expiry: certificate_expiry,
    Category.dns_failure: dns_failure,
    Category.node_failure: node_failure,
    Category.noise: noise,
}
