"""Pure evidence analysis: change detection, query templates, the evidence budget. No I/O, no Temporal."""
