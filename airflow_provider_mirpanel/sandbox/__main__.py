"""Run the sandbox panel until Ctrl-C: ``python -m airflow_provider_mirpanel.sandbox --port 8765``."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Sequence

from airflow_provider_mirpanel.client.defaults import DEFAULT_RATE_LIMITS
from airflow_provider_mirpanel.sandbox.limits import parse_limit
from airflow_provider_mirpanel.sandbox.panel import CONN_ENV_VAR, DEFAULT_SPEED, SandboxPanel, require_loopback


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_mirpanel.sandbox",
        description="A local SMM panel serving the Perfect Panel API v2 on loopback, for DAG development.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port, 0 for any free one (default 8765)")
    parser.add_argument("--key", default=None, help="the API key clients must send (default: a random one)")
    parser.add_argument("--balance", type=float, default=1000.0, help="starting balance (default 1000)")
    parser.add_argument(
        "--speed",
        type=float,
        default=DEFAULT_SPEED,
        help=f"sandbox seconds per real second (default {DEFAULT_SPEED:g}: an order is "
        "Pending for 30 s and ends within 3 minutes)",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply (default 0)")
    parser.add_argument(
        "--id-file",
        default=None,
        help="JSON file keeping the next order and refill IDs, so that a restarted sandbox "
        "continues its numbering from 1000 (default: IDs from the clock, which a "
        "restarted sandbox never hands out again either)",
    )
    parser.add_argument(
        "--rate-limit",
        action="append",
        default=[],
        metavar="ACTION=N[/SECONDS]",
        help="enforce a per-key limit: at most N requests of ACTION in any SECONDS (default "
        "60), answering 429 with Retry-After and X-RateLimit-* headers beyond it; "
        "repeat for several actions (e.g. --rate-limit add=600 --rate-limit "
        "services=10/3600). Default: no limits",
    )
    parser.add_argument(
        "--published-limits",
        action="store_true",
        help="enforce the limits MirPanel publishes (add 60/min, status 120/min, balance "
        "30/min, services 10/hour, ...); --rate-limit overrides single actions",
    )
    return parser


def rate_limits(published: bool, given: Sequence[str]) -> dict[str, tuple[int, float]]:
    """Return the per-key limits the command line asks for (action → (requests, per seconds)).

    :raises ValueError: a ``--rate-limit`` that is not ``ACTION=N[/SECONDS]``.
    """
    limits = dict(DEFAULT_RATE_LIMITS) if published else {}
    limits.update(parse_limit(text) for text in given)
    return limits


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, serve until interrupted, return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        require_loopback(args.host)
        limits = rate_limits(args.published_limits, args.rate_limit)
    except ValueError as exc:
        parser.error(str(exc))
    panel = SandboxPanel(
        host=args.host,
        port=args.port,
        api_key=args.key,
        balance=args.balance,
        speed=args.speed,
        latency=args.latency,
        id_file=args.id_file,
        rate_limits=limits,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with panel:
        print(f"MirPanel sandbox listening on {panel.url}", flush=True)
        print(f"API key: {panel.api_key}")
        if limits:
            print(
                "Per-key rate limits: "
                + ", ".join(f"{action} {limit} per {per:g} s" for action, (limit, per) in limits.items())
            )
        print(f"export {CONN_ENV_VAR}={shlex.quote(panel.connection_json())}")
        print("Press Ctrl-C to stop.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
