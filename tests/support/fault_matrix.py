"""The fault matrix: what the provider does for each fault × action, as ONE table.

``tests/unit/hooks/test_fault_matrix.py`` runs every cell against the sandbox panel over real HTTP, and
``docs/fault-matrix.md`` is rendered from the same table (a test checks that it is up to date)::

    python tests/support/fault_matrix.py --write    # regenerate docs/fault-matrix.md
    python tests/support/fault_matrix.py --check    # exit 1 when the doc is stale

Nothing here talks to a panel: it is the table and its rendering.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "fault-matrix.md"

#: The hook method each action is exercised through.
ACTIONS = {
    "add": "add_order",
    "refill": "refill_orders",
    "cancel": "cancel_orders",
    "status": "get_orders_status",
    "refill_status": "get_refills_status",
    "services": "get_services",
    "balance": "get_balance",
}
READS = ("status", "refill_status", "services", "balance")
WRITES = ("add", "refill", "cancel")

#: Connection extras of the matrix's connection: small timeouts and quick retries.
SETTINGS = {"timeout": 0.3, "connect_timeout": 0.3, "retries": 3, "backoff": 0.05}

# What a call gives.
OK_AFTER_RETRY = "retried, then ok"
TRANSIENT = "MirPanelTransientError"
AMBIGUOUS = "MirPanelAmbiguousOrderError"
API_ERROR = "MirPanelAPIError"
UNKNOWN_PER_ID = "per-ID error: outcome unknown"
NOT_SENT_PER_ID = "per-ID error: not sent"
REFUSED_PER_ID = "per-ID error: the panel's text"


@dataclass(frozen=True)
class Outcome:
    """What one call under one fault must give.

    ``held``: for ``add`` the orders the panel holds afterwards, for ``refill`` the refills it
    created, for ``cancel`` the orders it canceled (None for reads). ``requests``: the requests of
    that action the panel received (a refused or timed-out connection never reaches it).
    """

    result: str
    requests: int
    held: int | None = None


@dataclass(frozen=True)
class Fault:
    """One row: how the fault is made, and the outcome per action.

    ``kind``/``options`` are a sandbox fault rule (applied once); ``special`` is ``outage`` (the
    panel refuses connections for ``options["seconds"]``, None: for the whole call) or
    ``connect_timeout`` (the first connection attempt times out: a transport-level mock, since a
    local panel cannot make one).
    """

    name: str
    outcomes: dict[str, Outcome]
    kind: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    special: str | None = None
    min_seconds: float = 0.0  # the call must have waited at least this long (Retry-After)
    note: str = ""

    def outcome(self, action: str) -> Outcome:
        return self.outcomes.get(action) or self.outcomes["read"]


def _retried(requests: int) -> dict[str, Outcome]:
    """Every action retried and then ok: the panel certainly did not process the failed attempt."""
    return {
        "read": Outcome(OK_AFTER_RETRY, requests),
        **{action: Outcome(OK_AFTER_RETRY, requests, 1) for action in WRITES},
    }


def _lost_reply(held: int) -> dict[str, Outcome]:
    """Reads retried; writes never resent: add ambiguous, refill/cancel per-ID 'outcome unknown'."""
    return {
        "read": Outcome(OK_AFTER_RETRY, 2),
        "add": Outcome(AMBIGUOUS, 1, held),
        "refill": Outcome(UNKNOWN_PER_ID, 1, held),
        "cancel": Outcome(UNKNOWN_PER_ID, 1, held),
    }


FAULTS: list[Fault] = [
    Fault(
        "connection refused, brief outage (0.1 s)",
        _retried(1),
        special="outage",
        options={"seconds": 0.1},
        note="never connected: even an add is safely resent",
    ),
    Fault(
        "connection refused, panel down",
        {
            "read": Outcome(TRANSIENT, 0),
            "add": Outcome(TRANSIENT, 0, 0),
            "refill": Outcome(NOT_SENT_PER_ID, 0, 0),
            "cancel": Outcome(NOT_SENT_PER_ID, 0, 0),
        },
        special="outage",
        options={"seconds": None},
        note="request_sent=False on every error: safe to place again",
    ),
    Fault(
        "connect timeout",
        _retried(1),
        special="connect_timeout",
        note="transport-level mock: the first connection attempt times out",
    ),
    Fault(
        "read timeout after the panel processed it",
        _lost_reply(held=1),
        kind="delay_after_processing",
        options={"seconds": 0.8},
    ),
    Fault("connection dropped after the panel processed it", _lost_reply(held=1), kind="drop_after_processing"),
    Fault(
        "HTTP 500",
        _lost_reply(held=0),
        kind="http_status",
        options={"status": 500},
        note='{"error": "Internal Server Error"}: the server\'s text, not the panel\'s answer',
    ),
    Fault("HTTP 502", _lost_reply(held=0), kind="http_status", options={"status": 502}),
    Fault("HTTP 503", _lost_reply(held=0), kind="http_status", options={"status": 503}),
    Fault("HTTP 504", _lost_reply(held=0), kind="http_status", options={"status": 504}),
    Fault(
        "HTTP 502 after the panel processed it",
        _lost_reply(held=1),
        kind="http_status",
        options={"status": 502, "process": True},
    ),
    Fault(
        "HTTP 429 with Retry-After: 0.2",
        _retried(2),
        kind="rate_limit",
        options={"retry_after": 0.2},
        min_seconds=0.2,
        note="not processed: even an add is resent, after Retry-After",
    ),
    Fault("HTTP 429 without Retry-After", _retried(2), kind="rate_limit"),
    Fault(
        "HTML page with HTTP 200",
        _lost_reply(held=0),
        kind="html",
        options={"status": 200},
        note="a Cloudflare challenge page",
    ),
    Fault("HTML page with HTTP 503", _lost_reply(held=0), kind="html", options={"status": 503}),
    Fault("empty body, HTTP 200", _lost_reply(held=0), kind="body", options={"body": b""}),
    Fault("truncated JSON body, HTTP 200", _lost_reply(held=0), kind="body", options={"body": b'{"status": "Compl'}),
    Fault(
        "panel error with HTTP 500",
        {
            "read": Outcome(API_ERROR, 1),
            "add": Outcome(API_ERROR, 1, 0),
            "refill": Outcome(REFUSED_PER_ID, 1, 0),
            "cancel": Outcome(REFUSED_PER_ID, 1, 0),
        },
        kind="error",
        options={"error": "Incorrect request", "status": 500},
        note="the panel's own refusal: final, never retried",
    ),
]

CELLS = [(fault, action) for fault in FAULTS for action in ACTIONS]

_SHORT = {
    OK_AFTER_RETRY: "retried → ok",
    TRANSIENT: "`TransientError`",
    AMBIGUOUS: "**`AmbiguousOrderError`**",
    API_ERROR: "`APIError`",
    UNKNOWN_PER_ID: "record error: outcome unknown",
    NOT_SENT_PER_ID: "record error: not sent",
    REFUSED_PER_ID: "record error: panel's text",
}
_HELD = {"add": "order", "refill": "refill", "cancel": "canceled"}


def cell(fault: Fault, action: str) -> str:
    """One cell of the Markdown table."""
    outcome = fault.outcome(action)
    parts = [_SHORT[outcome.result], f"{outcome.requests} req"]
    if outcome.held is not None:
        noun = _HELD[action]
        parts.append(
            f"{outcome.held} {noun}"
            if action == "cancel"
            else f"{outcome.held} {noun}{'s' if outcome.held != 1 else ''} held"
        )
    return "; ".join(parts)


def render() -> str:
    """docs/fault-matrix.md."""
    settings = ", ".join(f"`{name}`: {value}" for name, value in SETTINGS.items())
    lines = [
        "# Fault matrix",
        "",
        "<!-- Generated by `python tests/support/fault_matrix.py --write` from the table that",
        "     tests/unit/hooks/test_fault_matrix.py runs; do not edit by hand. -->",
        "",
        "What `MirPanelHook` does when a request meets each fault, for every action. Every cell is a test",
        "(`tests/unit/hooks/test_fault_matrix.py`) run against the sandbox panel over real HTTP on 127.0.0.1; the",
        "request counts and the orders, refills and cancellations the panel holds come from the sandbox.",
        "",
        f"Methods: {', '.join(f'{action} → `{method}`' for action, method in ACTIONS.items())}.",
        "",
        f"Connection extras of the runs: {settings}.",
        "Each fault hits the first request once; the outage faults refuse every connection while the panel is down.",
        "",
        "How to read a cell: the outcome; `N req` = requests of that action the panel received; for writes,",
        "what the panel holds afterwards (orders placed, refills created, orders canceled).",
        "",
        "- **retried → ok**: the call returns the correct records after backoff.",
        "- **`AmbiguousOrderError`** (`MirPanelAmbiguousOrderError`): the add may have been placed; it is",
        "  never resent. The panel holds the order when it processed the request (`1 order held`).",
        "- **record error: outcome unknown**: refill/cancel never resend either; the batch's records carry",
        '  `error: "outcome unknown: …"`, other batches\' results are kept.',
        "- **`TransientError`** / **record error: not sent**: the request certainly never reached the panel",
        "  (`request_sent=False`); it is safe to send again.",
        "- **`APIError`** / **record error: panel's text**: the panel refused; final, not retried.",
        "",
        "| fault | " + " | ".join(f"`{action}`" for action in ACTIONS) + " |",
        "|---|" + "---|" * len(ACTIONS),
    ]
    for fault in FAULTS:
        lines.append(f"| {fault.name} | " + " | ".join(cell(fault, action) for action in ACTIONS) + " |")
    notes = [fault for fault in FAULTS if fault.note]
    lines += ["", "Notes:", ""] + [f"- *{fault.name}*: {fault.note}." for fault in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--write" in argv:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC}")
        return 0
    if "--check" in argv:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is stale: run python tests/support/fault_matrix.py --write", file=sys.stderr)
            return 1
        return 0
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
