"""The sandbox panel in a child process, steered and observed through a pipe.

The benchmark's client and the panel must not share one interpreter: the sandbox serves from a
thread of the process it runs in, so in-process it would compete with the client for the GIL and
the benchmark would measure the two together. Here the panel runs in its own process (its own
core on a two-core machine) and listens on 127.0.0.1 only.

The benchmark still needs the panel's own view (how many requests, on how many TCP connections)
and to set up orders without HTTP. Those go over the child's stdin/stdout as JSON lines, never
over the network, so the API the client talks to stays exactly the sandbox's::

    {"op": "create", "n": 1000, "status": "Completed"}  ->  {"ids": [1000, 1001, ...]}
    {"op": "stats"}                                      ->  {"requests": {"status": 3}, "connections": 2, ...}
    {"op": "links", "prefix": "https://example.com/k/"}  ->  {"links": ["https://example.com/k/0", ...]}

With ``rate_limits`` the panel enforces per-key limits (``--rate-limit add=600/60``); ``stats`` then
also says how many requests each limit allowed and refused (429) since the last ``reset``.

Run as ``python -m benchmarks.panel_process --latency 0.05``; :class:`PanelProcess` does that.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from airflow_provider_mirpanel.client.defaults import RATE_LIMITS_OFF

Message = dict[str, Any]

ROOT = Path(__file__).resolve().parent.parent


class PanelProcess:
    """A sandbox panel running in a child process; use it as a context manager.

    :param latency: seconds the panel adds to every reply.
    :param balance: the account's starting balance (placement spends it).
    :param rate_limits: per-key limits the panel enforces, action → (requests, per seconds); none by default.
    """

    def __init__(
        self, latency: float = 0.0, balance: float = 1e9, rate_limits: Mapping[str, tuple[int, float]] | None = None
    ) -> None:
        self.latency = latency
        self.balance = balance
        self.rate_limits = dict(rate_limits or {})
        self.url = ""
        self.api_key = ""
        self._child: subprocess.Popen[str] | None = None

    def __enter__(self) -> PanelProcess:
        command = [
            sys.executable,
            "-m",
            "benchmarks.panel_process",
            "--latency",
            str(self.latency),
            "--balance",
            str(self.balance),
        ]
        for action, (limit, per) in self.rate_limits.items():
            command += ["--rate-limit", f"{action}={limit}/{per:g}"]
        self._child = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        hello = self._read()
        self.url, self.api_key = hello["url"], hello["key"]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()  # end of input: the child stops its panel and exits
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    # -- the control channel ----------------------------------------------------------------------

    def call(self, op: str, **arguments: Any) -> Message:
        """Send one command to the child and return its answer; a failed command raises."""
        child = self._running()
        assert child.stdin is not None
        child.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        child.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"sandbox process: {op} failed: {answer['error']}")
        return answer

    def _read(self) -> Message:
        child = self._running()
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            raise RuntimeError(f"the sandbox process ended (exit code {child.poll()})")
        message: Message = json.loads(line)
        return message

    def _running(self) -> subprocess.Popen[str]:
        if self._child is None:
            raise RuntimeError("the sandbox process is not running")
        return self._child

    # -- what the benchmark asks of the panel ------------------------------------------------------

    def connection(self, **extra: Any) -> dict[str, Any]:
        """The Airflow connection (JSON form) to this panel, with client settings as extras and, as
        ``SandboxPanel.connection()``, no request budgets: the benchmark measures the client, not the
        published limits (1,000 placements would take 17 minutes)."""
        return {
            "conn_type": "mirpanel",
            "host": self.url,
            "password": self.api_key,
            "extra": {"rate_limits": RATE_LIMITS_OFF, **extra},
        }

    def create_orders(self, n: int, status: str | None = None, service: int | None = None) -> list[int]:
        """Insert ``n`` orders without HTTP; ``status`` freezes them in it."""
        ids: list[int] = self.call("create", n=n, status=status, service=service)["ids"]
        return ids

    def set_status(self, ids: Sequence[int], status: str) -> None:
        """Force orders into a status (e.g. ``Completed``)."""
        self.call("set", ids=list(ids), status=status)

    def service(self, **wanted: bool) -> tuple[int, int]:
        """(ID, minimum quantity) of a Default-type service with the given flags, e.g. ``refill=True``."""
        answer = self.call("service", wanted=wanted)
        return int(answer["service"]), int(answer["min"])

    def reset(self) -> float:
        """Forget the requests and connections seen so far; return the child's CPU seconds until now."""
        cpu: float = self.call("reset")["cpu"]
        return cpu

    def stats(self) -> Message:
        """Since the reset: requests per action, distinct TCP connections, IDs named (most in one request,
        in all); and the child's CPU seconds until now (``cpu``)."""
        return self.call("stats")

    def links(self, prefix: str) -> list[str]:
        """The links of every order the panel holds whose link starts with ``prefix`` (one per order)."""
        links: list[str] = self.call("links", prefix=prefix)["links"]
        return links

    def set_latency(self, seconds: float) -> None:
        """Change the latency added to every reply."""
        self.call("latency", seconds=seconds)
        self.latency = seconds


# ---------------------------------------------------------------------------------------------
# The child
# ---------------------------------------------------------------------------------------------


def _commands(panel: Any) -> dict[str, Callable[[Message], Message]]:
    """What the child does for each ``op``."""

    def create(message: Message) -> Message:
        return {"ids": panel.create_orders(message["n"], service=message.get("service"), status=message.get("status"))}

    def set_status(message: Message) -> Message:
        for order in message["ids"]:
            panel.set_order(order, message["status"])
        return {}

    def service(message: Message) -> Message:
        wanted = message["wanted"]
        for entry in panel.catalogue.services:
            flags_match = all(bool(entry.get(name)) is value for name, value in wanted.items())
            if str(entry.get("type", "Default")) == "Default" and flags_match:
                return {"service": int(entry["service"]), "min": int(entry.get("min") or 1)}
        return {"error": f"no Default service with {wanted}"}

    def reset(message: Message) -> Message:
        panel.requests.clear()
        panel.limits.reset()
        return {"cpu": time.process_time()}

    def links(message: Message) -> Message:
        prefix = message["prefix"]
        return {
            "links": [
                order.link
                for order in list(panel.state.orders.values())
                if order.link and order.link.startswith(prefix)
            ]
        }

    def stats(message: Message) -> Message:
        entries = list(panel.requests)
        return {
            "requests": dict(Counter(entry.action for entry in entries)),
            **panel.limits.counts(),
            "connections": len({entry.peer for entry in entries}),
            "max_ids": max((len(entry.ids) for entry in entries), default=0),
            "ids": sum(len(entry.ids) for entry in entries),
            "cpu": time.process_time(),
        }

    def latency(message: Message) -> Message:
        panel.latency = float(message["seconds"])
        return {}

    return {
        "create": create,
        "set": set_status,
        "service": service,
        "reset": reset,
        "stats": stats,
        "latency": latency,
        "links": links,
    }


def _serve(panel: Any) -> None:
    """Answer commands from stdin until it closes."""
    commands = _commands(panel)
    for line in sys.stdin:
        message = json.loads(line)
        try:
            answer = commands[message["op"]](message)
        except Exception as error:  # reported to the parent, which raises it
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Start a sandbox panel on 127.0.0.1 with a frozen clock and serve commands until stdin closes."""
    from airflow_provider_mirpanel.sandbox import SandboxPanel
    from airflow_provider_mirpanel.sandbox.limits import parse_limit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--balance", type=float, default=1e9)
    parser.add_argument("--rate-limit", action="append", default=[], metavar="ACTION=N[/SECONDS]")
    args = parser.parse_args(argv)
    limits = dict(parse_limit(text) for text in args.rate_limit)
    # speed 0: the clock stands still, so every status is the one the benchmark set; IDs from 1000, as
    # when docs/performance.md was measured (reply sizes depend on the IDs' digits)
    with SandboxPanel(
        speed=0, latency=args.latency, balance=args.balance, first_order_id=1000, rate_limits=limits
    ) as panel:
        print(json.dumps({"url": panel.url, "key": panel.api_key}), flush=True)
        _serve(panel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
