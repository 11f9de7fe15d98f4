"""Every cell of the fault matrix (``tests/support/fault_matrix.py``) against the sandbox panel over real HTTP.

Each test makes one fault, calls one hook method once, and checks what the call gave (records or
the typed exception), how many requests of that action the panel received, and — for writes — what
the panel holds afterwards: an ``add`` leaves exactly the orders intended (zero or one), never two.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import pytest
import urllib3
from support.fault_matrix import (
    AMBIGUOUS,
    API_ERROR,
    CELLS,
    DOC,
    NOT_SENT_PER_ID,
    OK_AFTER_RETRY,
    REFUSED_PER_ID,
    SETTINGS,
    TRANSIENT,
    UNKNOWN_PER_ID,
    Fault,
    render,
)

from airflow_provider_mirpanel.exceptions import (
    MirPanelAmbiguousOrderError,
    MirPanelAPIError,
    MirPanelError,
    MirPanelTransientError,
)
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel

LINK = "https://example.com/matrix/1"


@dataclass
class Scenario:
    """One action, ready to run: the call, what a correct result is, and what the panel then holds."""

    call: Callable[[MirPanelHook], Any]
    correct: Callable[[Any], bool]
    held: Callable[[], int] | None = None
    ids: list[int] | None = None  # the IDs a refill/cancel call names


def writable_service(panel: SandboxPanel) -> dict[str, Any]:
    """A Default service that takes refills and cancels."""
    return dict(
        next(
            service
            for service in panel.catalogue.services
            if service.get("type") == "Default" and service.get("refill") is True and service.get("cancel") is True
        )
    )


def scenario(action: str, panel: SandboxPanel, hook: MirPanelHook) -> Scenario:
    service = writable_service(panel)
    if action == "add":
        before = len(panel.state.orders)
        return Scenario(
            lambda hook: hook.add_order(service["service"], link=LINK, quantity=service["min"]),
            lambda record: record["order"] in panel.state.orders and record["link"] == LINK,
            lambda: len(panel.state.orders) - before,
        )
    if action == "refill":
        [order] = panel.create_orders(1, service=service["service"], status="Completed")
        before = len(panel.state.refills)
        return Scenario(
            lambda hook: hook.refill_orders([order]),
            lambda records: (
                [r["order"] for r in records] == [order]
                and records[0]["error"] is None
                and records[0]["refill"] in panel.state.refills
            ),
            lambda: len(panel.state.refills) - before,
            [order],
        )
    if action == "cancel":
        [order] = panel.create_orders(1, service=service["service"], status="Pending")
        return Scenario(
            lambda hook: hook.cancel_orders([order]),
            lambda records: records == [{"order": order, "cancel": True, "error": None}],
            lambda: int(panel.state.orders[order].status == "Canceled"),
            [order],
        )
    if action == "status":
        ids = panel.create_orders(3, status="Completed")
        return Scenario(
            lambda hook: hook.get_orders_status(ids),
            lambda records: (
                [(r["order"], r["status"], r["error"]) for r in records]
                == [(order, "Completed", None) for order in ids]
            ),
        )
    if action == "refill_status":
        orders = panel.create_orders(2, service=service["service"], status="Completed")
        refills = [record["refill"] for record in hook.refill_orders(orders)]
        return Scenario(
            lambda hook: hook.get_refills_status(cast(list[int], refills)),
            lambda records: (
                [r["refill"] for r in records] == refills and all(r["status"] and r["error"] is None for r in records)
            ),
        )
    if action == "services":
        return Scenario(lambda hook: hook.get_services(), lambda records: len(records) == len(panel.catalogue))
    assert action == "balance"
    return Scenario(lambda hook: hook.get_balance(), lambda record: record["balance"] == pytest.approx(panel.balance))


def make_fault(fault: Fault, panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Install the fault; returns the transport mock's connection-attempt log (connect timeout)."""
    attempts: list[int] = []
    if fault.kind is not None:
        panel.faults.add(None, fault.kind, **fault.options)
    elif fault.special == "connect_timeout":
        original = urllib3.connection.HTTPConnection._new_conn

        def first_attempt_times_out(self: Any) -> Any:
            attempts.append(1)
            if len(attempts) == 1:
                raise urllib3.exceptions.ConnectTimeoutError(self, f"Connection to {self.host} timed out")
            return original(self)

        monkeypatch.setattr(urllib3.connection.HTTPConnection, "_new_conn", first_attempt_times_out)
    return attempts


def run(fault: Fault, panel: SandboxPanel, hook: MirPanelHook, call: Callable[[MirPanelHook], Any]) -> Any:
    """The call under the fault: its result, or the MirPanelError it raised."""
    try:
        if fault.special == "outage" and fault.options["seconds"] is None:
            with panel.outage():
                return call(hook)
        if fault.special == "outage":
            panel.down(seconds=fault.options["seconds"])
        return call(hook)
    except MirPanelError as error:
        return error


@pytest.mark.parametrize(("fault", "action"), CELLS, ids=[f"{fault.name} × {action}" for fault, action in CELLS])
def test_fault_matrix_cell(fault: Fault, action: str, panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(**SETTINGS)))
    setup_hook = MirPanelHook()
    case = scenario(action, panel, setup_hook)
    setup_hook.close()
    panel.requests.clear()
    attempts = make_fault(fault, panel, monkeypatch)
    expected = fault.outcome(action)

    started = time.monotonic()
    outcome = run(fault, panel, MirPanelHook(), case.call)
    elapsed = time.monotonic() - started

    check_result(expected.result, outcome, case)
    assert panel.count(action) == expected.requests, [(e.action, e.status, e.fault) for e in panel.requests]
    if expected.held is not None:
        assert case.held is not None and case.held() == expected.held, "what the panel holds"
    assert elapsed >= fault.min_seconds
    if fault.special == "connect_timeout":
        assert len(attempts) >= 2, "the first connection attempt timed out and a second one was made"


def check_result(result: str, outcome: Any, case: Scenario) -> None:
    if result == OK_AFTER_RETRY:
        assert not isinstance(outcome, Exception), f"raised {outcome!r}"
        assert case.correct(outcome), outcome
    elif result == TRANSIENT:
        assert type(outcome) is MirPanelTransientError and outcome.request_sent is False, repr(outcome)
    elif result == AMBIGUOUS:
        assert type(outcome) is MirPanelAmbiguousOrderError, repr(outcome)
        assert outcome.params["link"] == LINK
    elif result == API_ERROR:
        assert type(outcome) is MirPanelAPIError and outcome.panel_message == "Incorrect request", repr(outcome)
    else:
        assert not isinstance(outcome, Exception), f"raised {outcome!r}"
        [record] = outcome
        assert record["order"] == (case.ids[0] if case.ids else None)
        assert record.get("refill") is None and record.get("cancel") in (None, False)
        prefix = {
            UNKNOWN_PER_ID: "outcome unknown: ",
            NOT_SENT_PER_ID: "not sent: ",
            REFUSED_PER_ID: "Incorrect request",
        }[result]
        assert record["error"].startswith(prefix), record


def test_the_doc_is_generated_from_this_table() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), "run: python tests/support/fault_matrix.py --write"


def test_the_table_covers_every_fault_and_action_of_the_issue() -> None:
    names = " / ".join(fault.name for fault, _ in CELLS)
    for fault in (
        "connection refused",
        "connect timeout",
        "read timeout",
        "dropped",
        "HTTP 500",
        "HTTP 502",
        "HTTP 503",
        "HTTP 504",
        "429 with Retry-After",
        "429 without",
        "HTML page with HTTP 200",
        "HTML page with HTTP 503",
        "empty body",
        "truncated JSON",
    ):
        assert fault in names
    assert {action for _, action in CELLS} == {
        "add",
        "refill",
        "cancel",
        "status",
        "refill_status",
        "services",
        "balance",
    }
