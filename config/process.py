"""Leaving a process that used the Temporal SDK."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """Flush and exit without interpreter finalization.

    The SDK's Rust runtime keeps threads that can call into Python while the interpreter finalizes, which
    aborts the process ("PyGILState_Release: thread state must be current", exit -6) after our work is done.
    Call this only once everything of ours is closed and written.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe has nothing left to flush
            stream.flush()
    os._exit(code)
