"""Loki HTTP API: the error-ish log lines of the incident's namespace, mined into templates, compared to a baseline.

One activity, ``gather_log_evidence``, asks Loki's ``GET /loki/api/v1/query_range`` twice with the same LogQL
(``{namespace="<ns>"} |~ "(?i)(error|exception|...)"``): once over the recent window ``[onset - 5 min, at)`` and
once over the baseline window ``[onset - baseline_s, onset - 5 min)`` (Loki's windows are half-open, so the two
never share a line). One drain3 miner sees the baseline lines and then the recent lines, oldest first, so a
template is the same cluster in both windows; what comes back is the recent window's templates, those absent from
the baseline first, then by count.

Everything is bounded:

* ``limit=max_lines`` per window (``direction=backward``: when Loki hits the limit it is the *oldest* lines of
  the window that go unread); the client also drops anything past ``max_lines`` a server might send anyway.
* The body is streamed in chunks and reading stops at ``max_response_bytes``. What was read is then salvaged:
  every complete ``[ts, line]`` pair before the cut is kept, ``truncated`` is set and a note says so. Only if not
  a single complete line could be salvaged does the activity fail, with a non-retryable ``SourceUnavailable``
  (the same query would return the same oversized body again).
* Lines are mined on at most ``MINE_CHARS`` characters; samples are cut to ``SAMPLE_CHARS``, templates to
  ``TEMPLATE_CHARS``; at most ``max_templates`` templates and ``MAX_WORKLOADS`` workloads per template.

JSON log lines are mined as ``key=value`` text (so drain sees words, not one giant token); their sample is still
the real line.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import aiohttp
import structlog
from drain3 import TemplateMiner
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import (
    BAD_QUERY,
    SOURCE_FORBIDDEN,
    SOURCE_MISCONFIGURED,
    SOURCE_UNAVAILABLE,
    not_configured,
)
from activities.http_body import read_capped
from models.evidence import EvidenceRequest, LogEvidence, LogTemplate

log = structlog.get_logger(__name__)

QUERY_RANGE_PATH = "/loki/api/v1/query_range"
# Lines worth mining: anything that says something went wrong. Case-insensitive RE2 (Loki) and Python re alike.
ERROR_FILTER = r"(?i)(error|exception|fail|fatal|panic|timeout|refused|denied|unavailable|oom|killed)"
RECENT_LEAD_S = 300.0  # the recent window starts this long before the onset
SAMPLE_CHARS = 300
TEMPLATE_CHARS = 500
MINE_CHARS = 1000
MAX_WORKLOADS = 10
_JSON_LINE_CHARS = 16 * 1024  # longer JSON lines are mined as raw text (no parse)
_ERROR_BODY_BYTES = 4096
_ERROR_TEXT_CHARS = 500

# Variable parts masked before drain sees a line. Order matters: the wider patterns first.
_MASKS = (
    (r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?", "TIME"),
    (
        r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![0-9A-Za-z])",
        "UUID",
    ),
    (r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?![\w.])", "IP"),
    (r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w.])", "NUM"),
    (r"(?<!\w)0x[0-9a-fA-F]+(?!\w)", "HEX"),
    (r"(?<!\w)(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}(?!\w)", "HEX"),  # ids, hashes, trace ids: 8+ hex digits
)
# Stricter than drain3's defaults (0.4, 4): distinct errors of the same length stay apart, and the prefix tree
# routes on the first two tokens (drain3's depth counts the root and the length level), e.g. logger + level.
_DRAIN_SIM_TH = 0.6
_DRAIN_DEPTH = 5

_LABEL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Kubernetes' generated name parts (pod-template-hash, pod suffix) use an alphabet without vowels, 0, 1 and 3.
_K8S_RAND = "[bcdfghjklmnpqrstvwxz2456789]"
_POD_OF_REPLICASET = re.compile(rf"^(?P<name>.+)-{_K8S_RAND}{{6,10}}-{_K8S_RAND}{{5}}$")
_POD_OF_DAEMONSET_OR_JOB = re.compile(rf"^(?P<name>.+)-{_K8S_RAND}{{5}}$")
_POD_OF_STATEFULSET = re.compile(r"^(?P<name>.+)-\d+$")
_RESULT_ARRAY = re.compile(r'"result"\s*:\s*\[')
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def logql_string(value: str) -> str:
    """``value`` as a double-quoted LogQL string (Go string literal escaping)."""
    escaped = "".join(
        _LABEL_ESCAPES.get(char, f"\\x{ord(char):02x}" if ord(char) < 0x20 or ord(char) == 0x7F else char)
        for char in value
    )
    return f'"{escaped}"'


def error_lines_query(namespace: str) -> str:
    """The LogQL for the error-ish lines of one namespace, or of every namespace for a cluster-level alert.

    Loki refuses a selector that matches the empty string (``{namespace=""}``), and a node or cluster alert names
    no namespace: its victims can be anywhere, so it reads every namespace (the line and byte caps still hold).
    """
    selector = "namespace=" + logql_string(namespace) if namespace else 'namespace=~".+"'
    return "{" + selector + "} |~ " + logql_string(ERROR_FILTER)


def workload_of(labels: Mapping[str, str]) -> str:
    """The workload a stream belongs to: its ``app`` or ``container`` label, else derived from ``pod``."""
    for key in ("app", "app_kubernetes_io_name", "container"):
        if labels.get(key):
            return labels[key]
    pod = labels.get("pod", "")
    for pattern in (_POD_OF_REPLICASET, _POD_OF_STATEFULSET, _POD_OF_DAEMONSET_OR_JOB):
        match = pattern.match(pod)
        if match:
            return match.group("name")
    return pod


class LogLine(NamedTuple):
    ts_ns: int
    line: str
    workload: str


@dataclass
class _Window:
    lines: list[LogLine] = field(default_factory=list)
    truncated: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class _Cluster:
    template: str = ""
    count: int = 0
    baseline_count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    sample: str = ""
    workloads: set[str] = field(default_factory=set)


class LokiActivities:
    """Holds one HTTP session for the worker's lifetime; constructed with the base URL (None: not configured)."""

    def __init__(
        self,
        base_url: str | None,
        tenant: str | None,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = 10.0,
        max_lines: int = 5000,
        max_response_bytes: int = 10 * 1024 * 1024,
        max_templates: int = 20,
    ) -> None:
        self._base_url = base_url.rstrip("/") if base_url else None
        self._tenant = tenant or None
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_lines = max(1, max_lines)
        self._max_response_bytes = max(1, max_response_bytes)
        self._max_templates = max(0, max_templates)

    @activity.defn
    async def gather_log_evidence(self, request: EvidenceRequest) -> LogEvidence:
        """Templates of the namespace's error-ish lines since shortly before the onset, compared to the baseline."""
        if self._base_url is None:
            raise not_configured("Loki", "LOKI_URL")
        query = error_lines_query(request.namespace)
        at = _ns(request.at)
        recent_start = _ns(request.onset) - int(RECENT_LEAD_S * 1e9)
        baseline_start = _ns(request.onset) - int(request.baseline_s * 1e9)
        notes: list[str] = []

        if at > recent_start:
            recent = await self._query_range(query, recent_start, at, "recent")
        else:
            recent = _Window(notes=["recent window is empty (at is before onset - 5 min)"])
        if recent_start > baseline_start:
            baseline = await self._query_range(query, baseline_start, recent_start, "baseline")
        else:
            baseline = _Window(notes=[f"no baseline window (baseline_s={request.baseline_s:g} <= {RECENT_LEAD_S:g})"])
        notes += recent.notes + baseline.notes
        if recent.lines and not baseline.lines:
            notes.append("the baseline window has no error lines: every template counts as new")

        templates, distinct = await asyncio.to_thread(mine_templates, recent.lines, baseline.lines, self._max_templates)
        if distinct > len(templates):
            notes.append(f"{distinct - len(templates)} more templates of the recent window not shown")
        evidence = LogEvidence(
            query=query,
            lines=len(recent.lines) + len(baseline.lines),
            templates=templates,
            truncated=recent.truncated or baseline.truncated,
            notes=notes,
        )
        log.info(
            "loki_evidence",
            namespace=request.namespace,
            recent_lines=len(recent.lines),
            baseline_lines=len(baseline.lines),
            templates=len(templates),
            distinct_templates=distinct,
            new_templates=sum(t.new for t in templates),
            truncated=evidence.truncated,
        )
        return evidence

    async def _query_range(self, query: str, start_ns: int, end_ns: int, window: str) -> _Window:
        assert self._base_url is not None
        url = f"{self._base_url}{QUERY_RANGE_PATH}"
        params = {
            "query": query,
            "start": str(start_ns),
            "end": str(end_ns),
            "limit": str(self._max_lines),
            "direction": "backward",
        }
        headers = {"X-Scope-OrgID": self._tenant} if self._tenant else {}
        try:
            async with self._session.get(url, params=params, headers=headers, timeout=self._timeout) as response:
                status = response.status
                limit = self._max_response_bytes if status == 200 else _ERROR_BODY_BYTES
                body, cut = await read_capped(response, limit)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ApplicationError(
                f"Loki at {self._base_url} unreachable: {type(exc).__name__}: {exc}",
                type=SOURCE_UNAVAILABLE,
            ) from exc
        if status != 200:
            raise _http_error(status, url, query, _error_text(body))

        result = self._parse(body, cut, window)
        log.info(
            "loki_query",
            window=window,
            start=start_ns,
            end=end_ns,
            lines=len(result.lines),
            bytes=len(body),
            truncated=result.truncated,
        )
        return result

    def _parse(self, body: bytes, cut: bool, window: str) -> _Window:
        text = body.decode("utf-8", errors="replace")
        result = _Window()
        if cut:
            streams = _salvage_streams(text)
            result.truncated = True
            result.notes.append(
                f"{window} window: the response exceeded {self._max_response_bytes} bytes; "
                "only the lines before the cut were read"
            )
        else:
            streams = _streams_of(text)
        lines, malformed = _lines_of(streams)
        if cut and not lines:
            raise ApplicationError(
                f"Loki's answer for the {window} window exceeded {self._max_response_bytes} bytes "
                "before its first complete log line; nothing could be read",
                type=SOURCE_UNAVAILABLE,
                non_retryable=True,
            )
        if malformed:
            result.notes.append(f"{window} window: {malformed} malformed entries skipped")
        if len(lines) >= self._max_lines:
            result.truncated = True
            result.notes.append(
                f"{window} window: the limit of {self._max_lines} lines was reached; older lines were not read"
            )
            lines = sorted(lines, key=lambda entry: entry.ts_ns, reverse=True)[: self._max_lines]
        result.lines = lines
        return result


def mine_templates(
    recent: Sequence[LogLine], baseline: Sequence[LogLine], max_templates: int
) -> tuple[list[LogTemplate], int]:
    """Mine both windows with one drain3 miner; the recent window's top templates, and how many it had."""
    miner = TemplateMiner(config=_miner_config())
    clusters: dict[int, _Cluster] = {}

    def add(entry: LogLine) -> _Cluster:
        mined = miner.add_log_message(_mining_text(entry.line))
        cluster = clusters.setdefault(mined["cluster_id"], _Cluster())
        cluster.template = mined["template_mined"]
        return cluster

    for entry in sorted(baseline, key=lambda entry: entry.ts_ns):
        add(entry).baseline_count += 1
    for entry in sorted(recent, key=lambda entry: entry.ts_ns):
        cluster = add(entry)
        if cluster.count == 0:
            cluster.first_ns = entry.ts_ns
            cluster.sample = _cut(entry.line.strip(), SAMPLE_CHARS)
        cluster.count += 1
        cluster.last_ns = entry.ts_ns
        if entry.workload and len(cluster.workloads) < MAX_WORKLOADS:
            cluster.workloads.add(entry.workload)

    seen = [cluster for cluster in clusters.values() if cluster.count]
    seen.sort(key=lambda c: (c.baseline_count > 0, -c.count, c.first_ns, c.template))
    templates = [
        LogTemplate(
            template=_cut(cluster.template, TEMPLATE_CHARS),
            count=cluster.count,
            baseline_count=cluster.baseline_count,
            first_seen=_datetime(cluster.first_ns),
            last_seen=_datetime(cluster.last_ns),
            new=cluster.baseline_count == 0,
            sample=cluster.sample,
            workloads=sorted(cluster.workloads),
        )
        for cluster in seen[:max_templates]
    ]
    return templates, len(seen)


def _miner_config() -> TemplateMinerConfig:
    config = TemplateMinerConfig()  # in memory: nothing read from drain3.ini, no persistence
    config.drain_sim_th = _DRAIN_SIM_TH
    config.drain_depth = _DRAIN_DEPTH
    config.masking_instructions = [MaskingInstruction(pattern, name) for pattern, name in _MASKS]
    config.profiling_enabled = False
    return config


def _mining_text(line: str) -> str:
    """What drain sees: a JSON object as ``key=value`` words, anything else as it is; at most MINE_CHARS."""
    stripped = line.strip()
    if stripped.startswith("{") and len(stripped) <= _JSON_LINE_CHARS:
        try:
            parsed = json.loads(stripped)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            stripped = " ".join(f"{key}={_scalar(value)}" for key, value in parsed.items())
    return stripped[:MINE_CHARS]


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _datetime(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _error_text(body: bytes) -> str:
    """Loki's error: usually plain text, sometimes JSON (``error`` or ``message``) from a gateway or newer Loki."""
    text = body.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            text = str(parsed.get("error") or parsed.get("message") or text)
    return _cut(text, _ERROR_TEXT_CHARS) or "(empty body)"


def _http_error(status: int, url: str, query: str, reason: str) -> ApplicationError:
    if status == 400:
        return ApplicationError(
            f"Loki rejected the query {query} (HTTP 400): {reason}", type=BAD_QUERY, non_retryable=True
        )
    if status in (401, 403):
        return ApplicationError(
            f"Loki refused the request (HTTP {status}): {reason}; check LOKI_TENANT and the agent's credentials",
            type=SOURCE_FORBIDDEN,
            non_retryable=True,
        )
    if status == 404:
        return ApplicationError(
            f"{url} answered 404: LOKI_URL does not point at a Loki API ({reason})",
            type=SOURCE_MISCONFIGURED,
            non_retryable=True,
        )
    if status == 408 or status == 429 or status >= 500:
        return ApplicationError(f"Loki answered {status}: {reason}", type=SOURCE_UNAVAILABLE)
    if 400 <= status < 500:
        return ApplicationError(
            f"Loki rejected the request (HTTP {status}): {reason}", type=BAD_QUERY, non_retryable=True
        )
    return ApplicationError(f"Loki answered an unexpected {status}: {reason}", type=SOURCE_UNAVAILABLE)


def _streams_of(text: str) -> list[tuple[dict[str, str], list[Any]]]:
    """The streams of a complete ``query_range`` answer; typed errors for anything that is not one."""
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise ApplicationError(
            f"Loki answered 200 with a body that is not JSON ({_cut(text.strip(), 200)!r}): "
            "LOKI_URL does not point at a Loki API",
            type=SOURCE_MISCONFIGURED,
            non_retryable=True,
        ) from exc
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict) or payload.get("status") != "success":
        raise ApplicationError(
            f"Loki answered 200 without a success envelope: {_cut(text.strip(), 200)!r}",
            type=SOURCE_MISCONFIGURED,
            non_retryable=True,
        )
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type != "streams" or not isinstance(result, list):
        raise ApplicationError(
            f"Loki returned {result_type!r}, expected log streams",
            type=BAD_QUERY,
            non_retryable=True,
        )
    return [
        (item.get("stream") or {}, item.get("values") or [])
        for item in result
        if isinstance(item, dict) and isinstance(item.get("values") or [], list)
    ]


def _salvage_streams(text: str) -> list[tuple[dict[str, str], list[Any]]]:
    """The streams of an answer cut short: every complete value before the cut, with its stream's labels."""
    match = _RESULT_ARRAY.search(text)
    if match is None:
        return []
    decoder = json.JSONDecoder()
    streams: list[tuple[dict[str, str], list[Any]]] = []
    pos = match.end()
    try:
        while True:
            pos = _skip(text, pos, ",")
            if text[pos] != "{":
                break
            labels: dict[str, str] = {}
            values: list[Any] = []
            streams.append((labels, values))
            pos += 1
            while True:
                pos = _skip(text, pos, ",")
                if text[pos] == "}":
                    pos += 1
                    break
                key, pos = decoder.raw_decode(text, pos)
                pos = _skip(text, pos, ":")
                if key == "values" and text[pos] == "[":
                    pos += 1
                    while True:
                        pos = _skip(text, pos, ",")
                        if text[pos] == "]":
                            pos += 1
                            break
                        value, pos = decoder.raw_decode(text, pos)
                        values.append(value)
                else:
                    value, pos = decoder.raw_decode(text, pos)
                    if key == "stream" and isinstance(value, dict):
                        labels.update(value)
    except (IndexError, ValueError):  # the cut: stop at the last complete value
        pass
    return streams


def _skip(text: str, pos: int, separators: str) -> int:
    while text[pos].isspace() or text[pos] in separators:
        pos += 1
    return pos


def _lines_of(streams: Iterable[tuple[Mapping[str, Any], list[Any]]]) -> tuple[list[LogLine], int]:
    lines: list[LogLine] = []
    malformed = 0
    for labels, values in streams:
        workload = workload_of({str(k): str(v) for k, v in labels.items()}) if isinstance(labels, Mapping) else ""
        for value in values:
            if not isinstance(value, list) or len(value) < 2 or not isinstance(value[1], str):
                malformed += 1
                continue
            try:
                ts_ns = int(value[0])
            except (TypeError, ValueError):
                malformed += 1
                continue
            lines.append(LogLine(ts_ns, value[1], workload))
    return lines, malformed
