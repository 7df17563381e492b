"""Scenario evaluation: load a recorded incident world into real back-ends, let the real product diagnose it
through its real webhook, and score what its ``state`` query says (format: the scenarios spec).

Run it with ``python -m evals SCENARIOS_DIR`` (``make eval``).
"""
