"""The product itself, as ``make run`` starts it: ``python -m devstack`` (Temporal dev server, ``worker.py``,
``starter.py serve``) on free ports, with its own SQLite file, so that scenarios never share state.

The launch mirrors ``tests/e2e/stack.py`` but stays quiet (the product's log goes to a file, which the runner
keeps for failed scenarios) and stops the stack the way a person does: one Ctrl-C, then a kill if it hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.fixtures.prometheus import free_port

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
LLM_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_MODEL")


class StackStartError(RuntimeError):
    pass


@dataclass(frozen=True)
class ProductStack:
    front_url: str
    temporal_address: str
    webhook_token: str
    log_path: Path

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.webhook_token}"}

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def product_env(backends_env: Mapping[str, str], *, no_llm: bool) -> dict[str, str]:
    """What the product is started with besides ports: the world's URLs, and the caller's LLM settings
    unchanged, or blanked with ``no_llm`` (blank rather than absent, so a ``.env`` file cannot fill them in)."""
    env = dict(backends_env)
    if no_llm:
        env.update(dict.fromkeys(LLM_VARIABLES, ""))
    return env


async def _wait_ready(process: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while loop.time() < deadline:
            if process.poll() is not None:
                raise StackStartError(f"python -m devstack exited with code {process.returncode} before it was ready")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise StackStartError(f"the front door at {url} was not ready after {timeout_s:.0f}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)  # devstack stops front door, worker, Temporal in order
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()  # its children get SIGTERM from the kernel (devstack sets PR_SET_PDEATHSIG)
        process.wait()


def _die_with_parent() -> None:
    # A runner killed outright must not leave a Temporal server behind (devstack does the same for its children).
    with contextlib.suppress(OSError):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _launch(env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "devstack"],
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C at the terminal reaches the runner only, which stops this in order
            preexec_fn=_die_with_parent,  # called from the event loop's thread, which lives as long as the run
        )


@contextlib.asynccontextmanager
async def product_stack(workdir: Path, env: Mapping[str, str]) -> AsyncIterator[ProductStack]:
    """``python -m devstack`` with ``env`` on free loopback ports, ready to take alerts."""
    temporal_port, ui_port, http_port = free_port(), free_port(), free_port()
    token = secrets.token_hex(16)  # the webhook is exercised with authentication on, as in production
    full_env = {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "TEMPORAL_UI_PORT": str(ui_port),
        "TEMPORAL_DB_FILE": str(workdir / "temporal.db"),
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(http_port),
        "LOG_FORMAT": "json",
        "WEBHOOK_TOKEN": token,
        **env,
    }
    log_path = workdir / "devstack.log"
    process = _launch(full_env, log_path)
    stack = ProductStack(
        front_url=f"http://127.0.0.1:{http_port}",
        temporal_address=f"127.0.0.1:{temporal_port}",
        webhook_token=token,
        log_path=log_path,
    )
    try:
        await _wait_ready(process, stack.front_url, READY_TIMEOUT_S)
        yield stack
    finally:
        await asyncio.to_thread(_stop, process)
