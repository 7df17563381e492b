"""Real processes for end-to-end tests: ``make run``'s stack (python -m devstack) on free ports, ``python worker.py``
on its own, and a Temporal dev server that keeps its state in a SQLite file and can be stopped and started again."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from evals.timeshift import parse_rfc3339, shift_kubernetes
from tests.fixtures.kube import load_document
from tests.fixtures.prometheus import free_port
from tests.fixtures.server_process import ServerProcess
from workflows.search_attributes import cli_flags

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = ROOT / "tests" / "payloads"
T = TypeVar("T")


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    temporal_address: str
    ui_url: str
    front_url: str
    ports: tuple[int, ...]
    log_path: Path

    def stop(self, timeout_s: float = 60) -> int:
        """Ctrl-C, as a person would; the supervisor's exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout_s)


@contextmanager
def devstack(tmp_path: Path, env: Mapping[str, str]) -> Iterator[Stack]:
    temporal_port, ui_port, http_port = free_port(), free_port(), free_port()
    full_env = {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "TEMPORAL_UI_PORT": str(ui_port),
        "TEMPORAL_DB_FILE": str(tmp_path / "temporal.db"),
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(http_port),
        "LOG_FORMAT": "json",
        **env,
    }
    log_path = tmp_path / "devstack.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack"], cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    stack = Stack(
        process=process,
        temporal_address=f"127.0.0.1:{temporal_port}",
        ui_url=f"http://127.0.0.1:{ui_port}",
        front_url=f"http://127.0.0.1:{http_port}",
        ports=(temporal_port, ui_port, http_port),
        log_path=log_path,
    )
    try:
        yield stack
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        print(log_path.read_text(errors="replace")[-4000:])


# Evidence sources and the LLM a developer's environment may point at: a test worker must not reach them unless the
# test says so.
_OUTSIDE_SOURCES = ("PROMETHEUS_URL", "LOKI_URL", "ALERTMANAGER_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL")


@contextmanager
def worker_process(
    address: str, task_queue: str, kubeconfig: Path, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``python worker.py`` against ``address`` and the cluster of ``kubeconfig``, with ``DRY_RUN=false``; ``env``
    adds or overrides variables. Its output is appended to ``log``, so that a restarted worker's follows the first's.
    A worker still running when the block ends is killed."""
    full_env = {key: value for key, value in os.environ.items() if key not in _OUTSIDE_SOURCES}
    full_env |= {
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_TASK_QUEUE": task_queue,
        "KUBECONFIG": str(kubeconfig),
        "DRY_RUN": "false",
        "LOG_FORMAT": "json",
        **(env or {}),
    }
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


class TemporalDevServer(ServerProcess):
    """``temporal server start-dev`` (the project's own binary) on 127.0.0.1, headless, its state in ``db_file``.

    Every search attribute the incidents use is registered, as ``make run`` does. ``stop()`` then ``start()`` brings
    the same server back on the same gRPC port from the same file, so clients and workers find it where it was.
    Ready means its HTTP API answers for the ``default`` namespace."""

    name = "temporal dev server"

    def __init__(self, db_file: Path, *, startup_timeout_s: float = 60.0) -> None:
        self.db_file = db_file
        self.port = free_port()
        self.http_port = free_port()
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_path = db_file.with_name(f"{db_file.stem}-0.log")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TemporalDevServer:
        if self._process is not None:
            raise RuntimeError("the Temporal dev server is already started")
        binary = Path(sys.executable).with_name("temporal")
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: run `make test`, which installs the project's dev dependencies")
        args = [
            str(binary),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http-port",
            str(self.http_port),
            "--headless",
            "--db-filename",
            str(self.db_file),
            "--log-level",
            "error",
            *cli_flags(),
        ]
        self.starts += 1
        self._log_path = self.db_file.with_name(f"{self.db_file.stem}-{self.starts}.log")  # each start its own log
        self._launch(args, self.db_file.parent, f"http://127.0.0.1:{self.http_port}/api/v1/namespaces/default")
        return self

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to flush or close anything (``stop()`` asks it to shut down)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
        if process is not None:
            process.wait(timeout=30)


async def eventually(check: Callable[[], Awaitable[T]], timeout_s: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last {last!r}")


async def wait_ready(session: aiohttp.ClientSession, stack: Stack, timeout_s: float = 60) -> None:
    async def ready() -> bool:
        try:
            async with session.get(f"{stack.front_url}/readyz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(ready, timeout_s, "the front door to be ready")


async def incident_state(session: aiohttp.ClientSession, stack: Stack, workflow_id: str) -> dict[str, Any]:
    async with session.get(f"{stack.front_url}/incidents/{workflow_id}") as response:
        return await response.json() if response.status == 200 else {}


async def wait_phase(
    session: aiohttp.ClientSession, stack: Stack, workflow_id: str, phase: str, timeout_s: float = 60
) -> dict[str, Any]:
    async def reached() -> dict[str, Any]:
        state = await incident_state(session, stack, workflow_id)
        return state if state.get("phase") == phase else {}

    return await eventually(reached, timeout_s, f"{workflow_id} to reach {phase}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def bad_deploy_cluster(rolled_out_at: datetime) -> dict[str, Any]:
    """The recorded bad-deploy cluster excerpt, moved in time so that search's last rollout (revision 4, ReplicaSet
    search-894587957d) happened at ``rolled_out_at``, as an evaluation runner moves a scenario."""
    document = load_document(PAYLOADS / "kube_bad_deploy.json")
    replicaset = next(item for item in document["items"] if item["metadata"]["name"] == "search-894587957d")
    recorded = parse_rfc3339(replicaset["metadata"]["creationTimestamp"])
    return shift_kubernetes(document, int((rolled_out_at - recorded).total_seconds()))
