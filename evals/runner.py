"""Run scenarios: for each, shift it to now, start its world and a fresh product stack, send its notification
through the real webhook, wait until the incident is past diagnosis, and score the ``state`` it reports.

A scenario that times out is scored as it stands (a recorded failure); one that cannot run at all (invalid
files, a back-end that does not start) is an error. Neither stops the other scenarios.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp

from evals.contract import PAST_DIAGNOSIS
from evals.product import ProductStack, product_env, product_stack
from evals.scenario import Expected, Scenario, ScenarioError, load_scenario, shifted
from evals.score import Score, score
from evals.world import backends

POLL_INTERVAL_S = 0.5
Status = Literal["ok", "timeout", "error"]


@dataclass(frozen=True)
class RunOptions:
    timeout_s: float = 120.0
    no_llm: bool = False
    jobs: int = 1
    out: Path | None = None


@dataclass
class ScenarioResult:
    name: str
    directory: Path
    status: Status
    expected: Expected | None = None
    score: Score | None = None
    phase: str = ""
    workflow_id: str = ""
    agent_s: float | None = None  # from the webhook's answer to the incident being past diagnosis
    wall_s: float = 0.0  # everything: shifting, back-ends, product start, the incident, stopping
    error: str = ""
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def ran(self) -> bool:
        return self.status != "error"


class FrontDoorError(RuntimeError):
    pass


async def post_alert(session: aiohttp.ClientSession, stack: ProductStack, payload: Mapping[str, Any]) -> str:
    """The notification through ``POST /alerts/alertmanager``; the incident's workflow id from the 202."""
    url = f"{stack.front_url}/alerts/alertmanager"
    async with session.post(url, json=payload, headers=stack.headers()) as response:
        body = await response.text()
        if response.status != 202:
            raise FrontDoorError(f"POST /alerts/alertmanager answered {response.status}: {body[:500]}")
    try:
        return str(json.loads(body)["incidents"][0]["workflow_id"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise FrontDoorError(f"POST /alerts/alertmanager answered 202 without a workflow id: {body[:500]}") from None


async def incident_state(session: aiohttp.ClientSession, stack: ProductStack, workflow_id: str) -> dict[str, Any]:
    """``GET /incidents/{id}``; ``{}`` while the incident cannot be queried yet."""
    try:
        async with session.get(f"{stack.front_url}/incidents/{workflow_id}") as response:
            if response.status != 200:
                return {}
            state = await response.json()
            return state if isinstance(state, dict) else {}
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}


async def wait_past_diagnosis(
    session: aiohttp.ClientSession, stack: ProductStack, workflow_id: str, timeout_s: float
) -> tuple[dict[str, Any], bool]:
    """Poll the incident until its phase is past diagnosis; the last state and whether it got there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    state: dict[str, Any] = {}
    while True:
        latest = await incident_state(session, stack, workflow_id)
        state = latest or state
        if state.get("phase") in PAST_DIAGNOSIS:
            return state, True
        if loop.time() >= deadline:
            return state, False
        await asyncio.sleep(POLL_INTERVAL_S)


async def _drive(scenario: Scenario, options: RunOptions, workdir: Path, result: ScenarioResult) -> None:
    """Everything between loading and scoring; fills ``result`` as it goes, so a failure while stopping the
    stack does not lose an incident that was already observed."""
    moved = await asyncio.to_thread(shifted, scenario, datetime.now(UTC))
    async with (
        backends(moved, workdir) as world,
        product_stack(workdir, product_env(world.env(), no_llm=options.no_llm)) as stack,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
    ):
        result.workflow_id = await post_alert(session, stack, moved.alert)
        posted = time.monotonic()
        state, reached = await wait_past_diagnosis(session, stack, result.workflow_id, options.timeout_s)
        result.state, result.phase = state, str(state.get("phase", ""))
        if reached:
            result.status, result.agent_s = "ok", time.monotonic() - posted
        else:
            result.status = "timeout"
            result.error = f"not past diagnosis after {options.timeout_s:g}s (phase {result.phase or '?'})"


async def run_scenario(scenario: Scenario, options: RunOptions) -> ScenarioResult:
    started = time.monotonic()
    result = ScenarioResult(scenario.name, scenario.directory, "error", expected=scenario.expected)
    with tempfile.TemporaryDirectory(prefix=f"eval-{scenario.name}-") as tmp:
        workdir = Path(tmp)
        try:
            await _drive(scenario, options, workdir, result)
        except ScenarioError as exc:
            result.error = str(exc)
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, FrontDoorError | OSError | RuntimeError):
                problem += "\n" + traceback.format_exc(limit=5)
            # After the incident was observed, a failure is only in stopping the world: keep the result.
            if result.status == "error":
                result.error = problem
            else:
                result.error = "; ".join(part for part in (result.error, f"while stopping: {problem}") if part)
        if result.ran:
            result.score = score(result.state, scenario.expected)
        if options.out is not None and result.status != "ok":
            _keep_log(workdir / "devstack.log", options.out / f"{scenario.name}.devstack.log")
    result.wall_s = time.monotonic() - started
    return result


def _keep_log(source: Path, target: Path) -> None:
    if source.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def load_or_error(directory: Path) -> Scenario | ScenarioResult:
    try:
        return load_scenario(directory)
    except ScenarioError as exc:
        return ScenarioResult(directory.name, directory, "error", error=str(exc))


Progress = Callable[[ScenarioResult, int, int], None]


def print_progress(result: ScenarioResult, done: int, total: int) -> None:
    if result.status == "ok" and result.score is not None:
        what = f"{result.score.category or '-'} ({result.phase}) in {result.agent_s or 0:.1f}s"
        what += f"; {result.error.splitlines()[0]}" if result.error else ""
    else:
        what = f"{result.status}: {result.error.splitlines()[0] if result.error else ''}"
    print(f"[{done}/{total}] {result.name}: {what} (wall {result.wall_s:.1f}s)", file=sys.stderr, flush=True)


def run_one(directory: Path, options: RunOptions) -> ScenarioResult:
    """One scenario from its directory to its score, in an event loop of its own."""
    loaded = load_or_error(directory)
    if isinstance(loaded, ScenarioResult):
        return loaded
    return asyncio.run(run_scenario(loaded, options))


def run_all(
    directories: Sequence[Path], options: RunOptions, progress: Progress = print_progress
) -> list[ScenarioResult]:
    """Every scenario, ``options.jobs`` at a time; results in the order of ``directories``.

    Side by side, each scenario runs in a process of its own: the Kubernetes emulator (kmock) patches aiohttp's
    resolver process-wide and must be stopped in the reverse order it was started, which two worlds with their
    own lifetimes in one process cannot promise. Loading happens there too, so only ``jobs`` scenarios' data
    sits in memory at once.
    """
    results: dict[Path, ScenarioResult] = {}
    if options.jobs <= 1:
        for directory in directories:
            results[directory] = run_one(directory, options)
            progress(results[directory], len(results), len(directories))
        return [results[directory] for directory in directories]
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds threads and an event loop
    with ProcessPoolExecutor(max_workers=options.jobs, mp_context=context) as pool:
        futures = {pool.submit(run_one, directory, options): directory for directory in directories}
        for future in as_completed(futures):
            directory = futures[future]
            try:
                results[directory] = future.result()
            except Exception as exc:  # the worker process itself died
                results[directory] = ScenarioResult(
                    directory.name, directory, "error", error=f"{type(exc).__name__}: {exc}"
                )
            progress(results[directory], len(results), len(directories))
    return [results[directory] for directory in directories]
