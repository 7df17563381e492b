"""What failure looks like in log lines, per cause. Patterns name mechanisms, never particular services."""

from __future__ import annotations

import re


def _any(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in alternatives), re.IGNORECASE)


ERRORISH = _any(r"\berror\b", r"\bexception\b", r"\bfatal\b", r"\bpanic\b", r"traceback", r"\b5\d\d\b", r"failed")
POOL = _any(
    r"connection is not available",
    r"pool (?:is )?exhausted",
    r"timeout (?:waiting|acquiring) (?:for )?(?:a )?connection",
    r"(?:could not|unable to|cannot) (?:get|acquire|obtain) (?:a )?(?:database |db )?connection",
    r"too many clients",
    r"remaining connection slots",
    r"max(?:imum)?[_ ]connections",
    r"QueuePool limit",
    r"pool.*timed? ?out",
)
DISK_FULL = _any(r"no space left on device", r"\bENOSPC\b", r"disk (?:is )?full", r"disk quota exceeded")
TLS = _any(
    r"x509",
    r"certificate (?:has )?expired",
    r"bad certificate",
    r"certificate verify failed",
    r"tls: .*certificate",
    r"SSL.*(?:handshake|certificate)",
)
DNS = _any(
    r"no such host",
    r"name resolution",
    r"server misbehaving",
    r"could not resolve",
    r"NXDOMAIN",
    r"SERVFAIL",
    r"getaddrinfo",
    r"Name or service not known",
    r"plugin/errors",
    r"plugin/forward",
)
CONNECT_FAILURE = _any(
    r"connection refused",
    r"connect: ",
    r"no route to host",
    r"connection reset",
    r"timed? ?out",
    r"deadline exceeded",
    r"unavailable",
    r"upstream",
    r"returned 5\d\d",
    r"no healthy upstream",
    r"EOF",
)
OOM = _any(r"out of memory", r"OutOfMemory", r"\bOOM\b", r"memory limit", r"Killed process")
START_FAILURE = _any(
    r"missing (?:required )?(?:env|environment|config|secret)",
    r"(?:env|environment) variable .* (?:not set|missing|required)",
    r"no such file or directory",
    r"permission denied",
    r"invalid configuration",
    r"failed to (?:start|load|parse|read)",
    r"exit(?:ed)? (?:with )?(?:code|status) [1-9]",
)
NETWORK_DELAY = _any(r"read timeout", r"i/o timeout", r"retransmi", r"slow to respond", r"context deadline exceeded")
