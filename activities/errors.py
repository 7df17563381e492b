"""Error types activities raise, by name, so workflows can tell a gap from a retry from a bug."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

SOURCE_NOT_CONFIGURED = "SourceNotConfigured"
BAD_QUERY = "BadQuery"
SOURCE_UNAVAILABLE = "SourceUnavailable"
SOURCE_MISCONFIGURED = "SourceMisconfigured"
# The source answered 401/403: the agent lacks a credential or a permission; retrying will not help.
SOURCE_FORBIDDEN = "SourceForbidden"


def not_configured(source: str, variable: str) -> ApplicationError:
    # Benign: an unset source is an expected, recorded gap, not a failure worth a stack trace in the logs.
    return ApplicationError(
        f"{source} is not configured (set {variable})",
        type=SOURCE_NOT_CONFIGURED,
        non_retryable=True,
        category=ApplicationErrorCategory.BENIGN,
    )
