"""Post-incident reports rendered from an incident's own state."""

from reports.markdown import render_report

__all__ = ["render_report"]
