"""Pure incident logic: identity, severity, labels, runbooks, planning, summaries. No I/O, no Temporal."""
