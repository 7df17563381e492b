"""structlog, configured once per process: JSON lines unless a person is watching a terminal; secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Literal, TextIO

import structlog
from pydantic import SecretStr

from config.redaction import SecretRedactor, secret_values

_configured = False
# What the first configuration replaced (root handlers and level, aiohttp's access log level): reset_logging() puts
# it back, so a test that configures logging leaves the process as it found it.
_replaced: tuple[list[logging.Handler], int, int] | None = None


def configure_logging(
    level: str = "INFO",
    fmt: Literal["auto", "json", "console"] = "auto",
    *,
    secrets: Iterable[str | SecretStr | None] | None = None,
    stream: TextIO | None = None,
    force: bool = False,
) -> None:
    """Configure structlog and the standard library's root logger (once per process, unless ``force``).

    ``secrets``: the values never to be logged (see config/redaction.py); None takes every secret of the process's
    Settings, so callers that pass only a level and a format are covered. ``stream``: where lines go (stderr).
    ``force``: configure again even when configured (tests); loggers are then not cached on first use, so a later
    reset_logging() or forced configuration reaches loggers already in use.
    """
    global _configured, _replaced
    if _configured and not force:
        return
    _configured = True
    if secrets is None:
        from config.settings import get_settings  # here: importing settings must not configure anything

        secrets = secret_values(get_settings())
    out = stream if stream is not None else sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    redact = SecretRedactor(secrets)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=not force,
    )
    # Library logs (temporalio, aiohttp) go through the same renderer, so one process writes one format.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,  # again: a traceback becomes text only in format_exc_info
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    access = logging.getLogger("aiohttp.access")
    if _replaced is None:
        _replaced = (list(root.handlers), root.level, access.level)
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    access.setLevel(logging.WARNING)


def reset_logging() -> None:
    """Undo configure_logging (tests): structlog's defaults, and the root logger as it was before."""
    global _configured, _replaced
    structlog.reset_defaults()
    if _replaced is not None:
        handlers, root_level, access_level = _replaced
        root = logging.getLogger()
        root.handlers[:] = handlers
        root.setLevel(root_level)
        logging.getLogger("aiohttp.access").setLevel(access_level)
    _configured, _replaced = False, None
