"""The front door and the operators' CLI.

python starter.py serve                                   # HTTP front door on HTTP_HOST:HTTP_PORT (+ Slack Socket Mode)
python starter.py approve incident-0123abcd... --by alice [--reason "..."] [--plan-id plan-...]
python starter.py reject  incident-0123abcd... --by alice [--reason "..."]
python starter.py killswitch on|off --by alice [--reason "..."]  # stop (or allow again) every mutating action
python starter.py governor                                # the governor's state: kill switch and ledger
python starter.py feedback incident-0123abcd... correct|wrong --by alice [--cause oom_kill] [--note "..."]
python starter.py stats [--window 7d] [--namespace N] [--service S]  # accuracy, auto-resolved share, MTTA, MTTR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import structlog
from aiohttp import web
from pydantic import BaseModel

from config.durations import parse_duration
from config.logging import configure_logging
from config.process import exit_now
from config.settings import Settings, get_settings
from config.temporal import connect
from frontdoor.app import create_app
from frontdoor.gateway import DecisionRefused, IncidentGateway, IncidentNotFound, TemporalUnavailable
from frontdoor.governor import GovernorGateway
from frontdoor.slack import SLACK_INTERACTIONS, SocketMode
from models.incident import Category, Decision, Feedback
from models.remediation import GOVERNOR_WORKFLOW_ID, KillSwitchRequest

log = structlog.get_logger("starter")


async def serve(settings: Settings) -> None:
    # Lazy: the front door comes up even while Temporal is down, and answers 503 until it is back.
    client = await connect(settings, lazy=True)
    app = create_app(IncidentGateway(client, settings), settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
    log.info(
        "frontdoor_started",
        host=settings.http_host,
        port=settings.http_port,
        temporal=settings.temporal_address,
    )
    # Socket Mode (SLACK_APP_TOKEN): button clicks arrive over Slack's websocket, for teams without public ingress.
    socket_mode: SocketMode | None = None
    if settings.slack_app_token is not None and settings.slack_app_token.get_secret_value().strip():
        socket_mode = SocketMode(
            settings.slack_app_token.get_secret_value().strip(), app[SLACK_INTERACTIONS], api_url=settings.slack_api_url
        )
        socket_mode.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("frontdoor_stopping")
    if socket_mode is not None:
        await socket_mode.stop()
    await runner.cleanup()


async def _print_outcome(call: Awaitable[BaseModel], not_found: str) -> int:
    """Print an update's result as JSON (0); a refusal or an unknown incident on stderr (1); Temporal down (2)."""
    try:
        result = await call
    except IncidentNotFound:
        print(f"error: {not_found}", file=sys.stderr)
        return 1
    except DecisionRefused as exc:  # FeedbackRefused too
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except TemporalUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.model_dump(mode="json")))
    return 0


async def decide(settings: Settings, workflow_id: str, decision: Decision) -> int:
    gateway = IncidentGateway(await connect(settings, lazy=True), settings)
    return await _print_outcome(gateway.decide(workflow_id, decision), f"no running incident {workflow_id}")


async def governor(settings: Settings, workflow_id: str, request: KillSwitchRequest | None) -> int:
    """Print the governor's state as JSON, after flipping its kill switch when ``request`` is given."""
    gateway = GovernorGateway(await connect(settings, lazy=True), settings.temporal_task_queue, workflow_id=workflow_id)
    try:
        state = await (gateway.state() if request is None else gateway.set_killswitch(request))
    except TemporalUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(state.model_dump(mode="json")))
    return 0


async def feedback(settings: Settings, workflow_id: str, verdict: Feedback) -> int:
    gateway = IncidentGateway(await connect(settings, lazy=True), settings)
    not_found = f"no incident {workflow_id} open for feedback (its feedback window is over)"
    return await _print_outcome(gateway.feedback(workflow_id, verdict), not_found)


async def stats(settings: Settings, window_s: float, namespace: str | None, service: str | None) -> int:
    gateway = IncidentGateway(await connect(settings, lazy=True), settings)
    try:
        figures = await gateway.stats(
            timedelta(seconds=window_s), datetime.now(UTC), namespace=namespace, service=service
        )
    except TemporalUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(figures.model_dump(mode="json")))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="starter.py", description="Incident agent front door and operator CLI")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP front door")
    for verb in ("approve", "reject"):
        sub = commands.add_parser(verb, help=f"{verb} the pending plan of an incident")
        sub.add_argument("workflow_id")
        sub.add_argument("--by", required=True, help="who decides (checked against APPROVERS)")
        sub.add_argument("--reason", default="")
        sub.add_argument("--plan-id", default=None, help="refuse if the pending plan is not this one")
    switch = commands.add_parser("killswitch", help="turn the governor's kill switch on (no mutating action) or off")
    switch.add_argument("state", choices=["on", "off"])
    switch.add_argument("--by", required=True, help="who flips it (recorded in the governor's state)")
    switch.add_argument("--reason", default="")
    show = commands.add_parser("governor", help="show the governor's state: kill switch and ledger")
    for sub in (switch, show):
        sub.add_argument("--governor-id", default=GOVERNOR_WORKFLOW_ID, help=argparse.SUPPRESS)
    judge = commands.add_parser("feedback", help="say whether an incident's diagnosis was correct")
    judge.add_argument("workflow_id")
    judge.add_argument("verdict", choices=["correct", "wrong"])
    judge.add_argument("--by", required=True, help="who judges (checked against APPROVERS)")
    judge.add_argument(
        "--cause", choices=[c.value for c in Category if c is not Category.unknown], help="for wrong: the real cause"
    )
    judge.add_argument("--note", default="")
    figures = commands.add_parser("stats", help="diagnosis accuracy, auto-resolved vs escalated, MTTA, MTTR")
    figures.add_argument("--window", default="7d", help="incidents opened in the last WINDOW (default 7d)")
    figures.add_argument("--namespace", default=None, help="only incidents of this Kubernetes namespace")
    figures.add_argument("--service", default=None, help="only incidents of this service (workload)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "serve":
        asyncio.run(serve(settings))
        return 0
    if args.command == "governor":
        return asyncio.run(governor(settings, args.governor_id, None))
    if args.command == "killswitch":
        if not args.by.strip():
            print("error: --by must name who flips the kill switch", file=sys.stderr)
            return 1
        request = KillSwitchRequest(on=args.state == "on", by=args.by, reason=args.reason)
        return asyncio.run(governor(settings, args.governor_id, request))
    if args.command == "feedback":
        if not args.by.strip():
            print("error: --by must name who judges the diagnosis", file=sys.stderr)
            return 1
        verdict = Feedback(verdict=args.verdict, by=args.by, cause=args.cause, note=args.note)
        return asyncio.run(feedback(settings, args.workflow_id, verdict))
    if args.command == "stats":
        try:
            window_s = parse_duration(args.window)
        except ValueError as exc:
            print(f"error: --window: {exc}", file=sys.stderr)
            return 1
        return asyncio.run(stats(settings, window_s, args.namespace, args.service))
    decision = Decision(approve=args.command == "approve", by=args.by, reason=args.reason, plan_id=args.plan_id)
    return asyncio.run(decide(settings, args.workflow_id, decision))


if __name__ == "__main__":
    exit_now(main())
