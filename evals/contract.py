"""The contract's vocabulary, as an outside harness reads it.

The scorer judges the product from outside, so it keeps its own copy of the published names rather than
importing the product's models: a rename in the product must show up as a failing score, not follow silently.
"""

from __future__ import annotations

CATEGORIES = frozenset(
    {
        "bad_deploy",
        "oom_kill",
        "crash_loop",
        "cpu_saturation",
        "traffic_surge",
        "dependency_failure",
        "connection_pool_exhaustion",
        "application_error",
        "network_latency",
        "disk_pressure",
        "certificate_expiry",
        "dns_failure",
        "node_failure",
        "noise",
        "unknown",
    }
)

MUTATING_ACTIONS = frozenset(
    {"rollback", "rollout_restart", "scale_up", "raise_memory_limit", "delete_pod", "cordon_node"}
)
NON_MUTATING_ACTIONS = frozenset({"escalate", "none"})
ACTIONS = MUTATING_ACTIONS | NON_MUTATING_ACTIONS

# The phases that come after diagnosis: once an incident is in one of them its diagnosis and plan are final.
PAST_DIAGNOSIS = frozenset({"awaiting_approval", "remediating", "verifying", "resolved", "escalated", "closed"})
