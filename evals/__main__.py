"""``python -m evals SCENARIOS [--out DIR] [--jobs N] [--timeout S] [--no-llm]``

SCENARIOS is one scenario directory or a directory of them. Prints one row per scenario and the totals.
Exit codes: 0 every scenario ran (whatever its score), 1 some scenario could not run, 2 usage errors (a missing
directory, no scenarios, or no valid scenario at all; the message names the file and field).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evals.product import ROOT
from evals.report import render, write_out
from evals.runner import RunOptions, ScenarioResult, load_or_error, run_all
from evals.scenario import find_scenarios

USAGE_ERROR = 2
RUN_ERROR = 1
DESCRIPTION = (
    "Run scenarios against the real product and score its diagnoses. SCENARIOS is one scenario directory or a "
    "directory of them."
)


class UsageError(Exception):
    pass


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals", description=DESCRIPTION)
    p.add_argument("scenarios", nargs="+", type=Path, help="a scenario directory, or a directory of them")
    p.add_argument("--out", type=Path, help="write each scenario's final state (<name>.json) and summary.json here")
    p.add_argument("--jobs", type=_positive(int), default=1, help="scenarios run side by side (default 1)")
    p.add_argument(
        "--timeout", type=_positive(float), default=120.0, help="seconds to wait for a diagnosis (default 120)"
    )
    p.add_argument("--no-llm", action="store_true", help="blank OPENAI_API_KEY, OPENAI_BASE_URL and LLM_MODEL")
    return p


def discover(roots: Sequence[Path]) -> list[Path]:
    """Every scenario directory under ``roots``; UsageError when a root is missing or holds none."""
    found: list[Path] = []
    for root in roots:
        if not root.exists():
            raise UsageError(
                f"scenario directory {root} does not exist (pass a scenario directory or a directory of them)"
            )
        if not root.is_dir():
            raise UsageError(f"{root} is not a directory")
        scenarios = find_scenarios(root)
        if not scenarios:
            raise UsageError(f"{root} holds no scenario (a directory with alert.json, expected.json, ...)")
        found += scenarios
    return found


def llm_description(no_llm: bool) -> str:
    if no_llm:
        return "off (--no-llm)"
    if not any(os.environ.get(name) for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL")):
        dotenv = " (unless .env sets it)" if (ROOT / ".env").exists() else ""
        return "not configured: runbooks only" + dotenv
    model = os.environ.get("LLM_MODEL") or "(default model)"
    return f"{model} at {os.environ.get('OPENAI_BASE_URL') or 'the OpenAI API'}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        directories = discover(args.scenarios)
    except UsageError as exc:
        print(f"python -m evals: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    # Check every scenario's files before starting anything, so a typo does not surface an hour in.
    invalid = [r for r in map(load_or_error, directories) if isinstance(r, ScenarioResult)]
    for result in invalid:
        print(f"python -m evals: invalid scenario: {result.error}", file=sys.stderr)
    if len(invalid) == len(directories):
        return USAGE_ERROR
    runnable = [d for d in directories if d not in {r.directory for r in invalid}]

    llm = llm_description(args.no_llm)
    print(f"evaluating {len(runnable)} scenario(s), {args.jobs} at a time; LLM: {llm}", file=sys.stderr, flush=True)
    options = RunOptions(timeout_s=args.timeout, no_llm=args.no_llm, jobs=args.jobs, out=args.out)
    started = time.monotonic()
    try:
        ran = run_all(runnable, options)
    except KeyboardInterrupt:
        print("python -m evals: interrupted", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - started
    by_directory = {result.directory: result for result in [*ran, *invalid]}
    results = [by_directory[directory] for directory in directories]

    print(render(results, elapsed))
    if args.out is not None:
        meta = {
            "generated_at": datetime.now(UTC).isoformat(),
            "llm": llm,
            "timeout_s": args.timeout,
            "jobs": args.jobs,
            "elapsed_s": round(elapsed, 1),
        }
        write_out(args.out, results, meta)
        print(f"\nstates and summary.json in {args.out}")
    return 0 if all(result.ran for result in results) else RUN_ERROR


if __name__ == "__main__":
    sys.exit(main())
