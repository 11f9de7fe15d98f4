"""The sync and the async hook agree: same records and same exceptions for the same replies.

Every fault of the fault matrix (``tests/support/fault_matrix.py``) is run through both hooks for each
action the async hook offers (``status``, ``refill_status``, ``balance``) against the sandbox panel
over real HTTP. Both hooks call the same sans-IO core (:mod:`airflow_provider_mirpanel.client.calls`), so
they must give equal records, or exceptions of the same type with the same attributes, after the
same number of requests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from support.fault_matrix import FAULTS, SETTINGS, Fault

from airflow_provider_mirpanel.exceptions import MirPanelAuthError, MirPanelError, MirPanelTransientError
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.hooks.mirpanel_async import MirPanelAsyncHook
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel

#: The async hook's methods, and the sync hook's of the same name.
METHODS = ("get_orders_status", "get_refills_status", "get_balance")
ACTION_OF = {"get_orders_status": "status", "get_refills_status": "refill_status", "get_balance": "balance"}
CASES = [(fault, method) for fault in FAULTS for method in METHODS]


def call_sync(method: str, args: tuple[Any, ...]) -> Any:
    hook = MirPanelHook()
    try:
        return getattr(hook, method)(*args)
    except MirPanelError as error:
        return error
    finally:
        hook.close()


def call_async(method: str, args: tuple[Any, ...]) -> Any:
    async def run() -> Any:
        async with MirPanelAsyncHook() as hook:
            try:
                return await getattr(hook, method)(*args)
            except MirPanelError as error:
                return error

    return asyncio.run(run())


def under_fault(fault: Fault, panel: SandboxPanel, call: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """``call()`` with the fault made once, as the fault matrix makes it."""
    if fault.kind is not None:
        panel.faults.add(None, fault.kind, **fault.options)
        return call()
    if fault.special == "outage" and fault.options["seconds"] is None:
        with panel.outage():
            return call()
    if fault.special == "outage":
        panel.down(seconds=fault.options["seconds"])
        return call()
    # connect timeout: the matrix mocks urllib3, which aiohttp does not use; both hooks must simply agree here
    return call()


def comparable(outcome: Any) -> Any:
    """Records as they are; an exception as its type and the attributes callers read (transport
    messages name each library's own exception class, so only decoded replies' texts are compared)."""
    if not isinstance(outcome, MirPanelError):
        return outcome
    seen: dict[str, Any] = {"type": type(outcome).__name__}
    for name in ("panel_message", "http_status", "request_sent", "retry_after", "action"):
        if hasattr(outcome, name):
            seen[name] = getattr(outcome, name)
    if getattr(outcome, "http_status", None) is not None:
        seen["text"] = str(outcome)
    return seen


def arguments(method: str, panel: SandboxPanel) -> tuple[Any, ...]:
    if method == "get_orders_status":
        return (panel.create_orders(3, status="Completed"),)
    if method == "get_refills_status":
        orders = panel.create_orders(2, status="Completed")
        return ([panel.state.create_refill(panel.state.orders[order]).id for order in orders],)
    return ()


@pytest.mark.parametrize(("fault", "method"), CASES, ids=[f"{fault.name} × {method}" for fault, method in CASES])
def test_both_hooks_give_the_same_outcome_under_each_fault(
    fault: Fault, method: str, panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(**SETTINGS)))
    panel.speed = 0  # statuses hold still between the two calls
    args = arguments(method, panel)
    action = ACTION_OF[method]

    panel.requests.clear()
    sync = under_fault(fault, panel, lambda: call_sync(method, args), monkeypatch)
    sync_requests = panel.count(action)
    panel.faults.clear()
    panel.requests.clear()
    asynchronous = under_fault(fault, panel, lambda: call_async(method, args), monkeypatch)

    assert comparable(asynchronous) == comparable(sync)
    assert panel.count(action) == sync_requests


def test_a_multi_call_whose_batches_fail_differently_raises_the_most_serious_in_both_hooks(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch fails transiently, the second with a refused key: both hooks raise the refused key."""
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(retries=0, concurrency=1)))
    ids = panel.create_orders(150)
    first, second = str(ids[0]), str(ids[100])
    panel.faults.add(
        "status", "http_status", status=503, times=None, when=lambda form: form["orders"].startswith(first)
    )
    panel.faults.add(
        "status", "error", error="Invalid API key", times=None, when=lambda form: form["orders"].startswith(second)
    )

    sync = call_sync("get_orders_status", (ids,))
    asynchronous = call_async("get_orders_status", (ids,))

    assert type(sync) is MirPanelAuthError and type(asynchronous) is MirPanelAuthError
    assert comparable(sync) == comparable(asynchronous)
    assert not isinstance(sync, MirPanelTransientError)
