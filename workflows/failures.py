"""What actually went wrong inside an activity failure, without Temporal's wrapping."""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError, FailureError


def failure_reason(err: ActivityError) -> str:
    """The innermost application error's message (e.g. "Loki is not configured (set LOKI_URL)")."""
    cause: BaseException | None = err.cause
    while isinstance(cause, FailureError) and not isinstance(cause, ApplicationError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause) if cause is not None else str(err)


def failure_type(err: ActivityError) -> str | None:
    """The innermost application error's type (e.g. "SourceNotConfigured"), if the failure carries one."""
    cause: BaseException | None = err.cause
    while isinstance(cause, FailureError) and not isinstance(cause, ApplicationError) and cause.cause is not None:
        cause = cause.cause
    return cause.type if isinstance(cause, ApplicationError) else None
