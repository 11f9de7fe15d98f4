"""MirPanelAsyncHook against the sandbox panel over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from airflow_provider_mirpanel.exceptions import (
    MirPanelAuthError,
    MirPanelInputError,
    MirPanelResponseError,
    MirPanelTransientError,
)
from airflow_provider_mirpanel.hooks.mirpanel_async import MirPanelAsyncHook
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel

T = TypeVar("T")

FAST_RETRIES = {"backoff": 0.01, "retries": 3}


def connect(monkeypatch: pytest.MonkeyPatch, panel: SandboxPanel, **extra: Any) -> None:
    """Point ``mirpanel_default`` at the panel with these connection extras."""
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(**{**FAST_RETRIES, **extra})))


def with_hook(call: Callable[[MirPanelAsyncHook], Awaitable[T]]) -> T:
    async def run() -> T:
        async with MirPanelAsyncHook() as hook:
            return await call(hook)

    return asyncio.run(run())


def status_requests(panel: SandboxPanel) -> list[list[int]]:
    return [entry.ids for entry in panel.requests if entry.action == "status"]


def test_status_of_250_orders_takes_three_requests_and_keeps_input_order(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, panel)
    panel.speed = 0
    ids = panel.create_orders(250)
    wanted = [*reversed(ids), ids[0], 7]  # a duplicate and an unknown ID

    records = with_hook(lambda hook: hook.get_orders_status(wanted))

    assert [record["order"] for record in records] == [*reversed(ids), 7]
    assert records[-1]["error"] == "Incorrect order ID"
    assert all(record["status"] == "Pending" for record in records[:-1])
    assert sorted(len(batch) for batch in status_requests(panel)) == [51, 100, 100]  # sent concurrently


def test_refill_statuses_come_back_one_record_per_refill(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    connect(monkeypatch, panel)
    panel.speed = 0
    orders = panel.create_orders(3, status="Completed")
    refills = [panel.state.create_refill(panel.state.orders[order]).id for order in orders]

    records = with_hook(lambda hook: hook.get_refills_status([*refills, 999]))

    assert [record["refill"] for record in records] == [*refills, 999]
    assert [record["status"] for record in records[:3]] == ["Pending"] * 3
    assert records[3]["error"] == "Refill not found"
    assert panel.count("refill_status") == 1


def test_balance(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    connect(monkeypatch, panel)
    assert with_hook(lambda hook: hook.get_balance()) == {"balance": 1000.0, "currency": "USD"}


def test_requests_run_concurrently_over_at_most_concurrency_connections(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, panel, concurrency=3)
    panel.latency = 0.1
    ids = panel.create_orders(1200)

    started = time.monotonic()
    records = with_hook(lambda hook: hook.get_orders_status(ids))
    elapsed = time.monotonic() - started

    assert len(records) == 1200 and panel.count("status") == 12
    # Three connections for twelve requests: three requests were in flight at once (one at a time would
    # reuse one connection), never more (the pool is capped), and the connections were kept alive.
    assert panel.connections == 3
    assert elapsed >= 0.4  # 12 requests of 0.1 s, at most three at a time


def test_extras_are_settings_never_headers_and_the_key_only_travels_in_the_body(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, panel, timeout=5, concurrency=2, rate_limit=0, extra__mirpanel__connect_timeout=3)

    async def read(hook: MirPanelAsyncHook) -> tuple[Any, Any]:
        await hook.get_balance()
        session = await hook.get_conn()
        return dict(session.headers), await hook.get_settings()

    headers, settings = with_hook(read)

    assert set(headers) == {"User-Agent", "Accept"}
    assert settings.url == panel.url
    assert (settings.timeout, settings.concurrency, settings.connect_timeout) == (5.0, 2, 3.0)
    entry = panel.requests[-1]
    assert entry.path == "/api/v2" and "key" not in entry.form and entry.status == 200
    assert panel.api_key not in repr(MirPanelAsyncHook())


def test_a_bad_key_raises_auth_error_without_retrying(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps({**panel.connection(), "password": "wrong-key"}))
    with pytest.raises(MirPanelAuthError):
        with_hook(lambda hook: hook.get_orders_status([1, 2]))
    assert panel.count() == 1


def test_a_connection_without_key_or_over_plain_http_to_a_remote_host_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps({"conn_type": "mirpanel", "host": "http://127.0.0.1:9/api/v2"}))
    with pytest.raises(MirPanelInputError, match="no API key"):
        with_hook(lambda hook: hook.get_balance())
    monkeypatch.setenv(
        CONN_ENV_VAR, json.dumps({"conn_type": "mirpanel", "host": "http://panel.example/api/v2", "password": "k"})
    )
    with pytest.raises(MirPanelInputError, match="unencrypted"):
        with_hook(lambda hook: hook.get_balance())


def test_5xx_html_and_429_are_retried_until_the_reply_comes(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, panel)
    ids = panel.create_orders(5)
    panel.faults.add("status", "html", status=520)
    panel.faults.add("status", "rate_limit", retry_after=1)
    panel.faults.add("status", "http_status", status=502, body="Bad Gateway")

    started = time.monotonic()
    records = with_hook(lambda hook: hook.get_orders_status(ids))

    assert [record["order"] for record in records] == ids
    assert [entry.status for entry in panel.requests] == [520, 429, 502, 200]
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured


def test_transient_failures_beyond_the_retries_raise_transient_error(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, panel, retries=2)
    panel.faults.add("status", "html", times=None)
    with pytest.raises(MirPanelTransientError, match="HTML"):
        with_hook(lambda hook: hook.get_orders_status([1]))
    assert panel.count("status") == 3


def test_a_malformed_reply_raises_response_error(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    connect(monkeypatch, panel)
    panel.faults.add("status", "body", body='{"1000": {"status": "Completed"}} <!-- 0.01 s -->')
    with pytest.raises(MirPanelResponseError):
        with_hook(lambda hook: hook.get_orders_status([1000]))
    assert panel.count("status") == 1


def test_a_redirect_is_not_followed(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    connect(monkeypatch, panel)
    panel.faults.add("balance", "http_status", status=301, headers={"Location": "http://127.0.0.1:9/elsewhere"})
    with pytest.raises(MirPanelResponseError, match="redirected"):
        with_hook(lambda hook: hook.get_balance())
    assert panel.count() == 1


def test_a_refused_connection_is_transient_and_known_not_sent(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, panel, retries=0)
    with panel.outage(), pytest.raises(MirPanelTransientError) as caught:
        with_hook(lambda hook: hook.get_balance())
    assert caught.value.request_sent is False


def test_a_dropped_connection_or_a_read_timeout_may_have_been_processed(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, panel, retries=0, timeout=0.2)
    panel.faults.add("balance", "drop_after_processing")
    with pytest.raises(MirPanelTransientError) as dropped:
        with_hook(lambda hook: hook.get_balance())
    panel.faults.add("balance", "delay_after_processing", seconds=1)
    with pytest.raises(MirPanelTransientError, match="read timeout") as late:
        with_hook(lambda hook: hook.get_balance())
    assert dropped.value.request_sent is True and late.value.request_sent is True
    for caught in (dropped.value, late.value):  # aiohttp's exception is not carried along as __context__
        assert caught.__context__ is None and caught.__cause__ is None


def test_an_outage_during_retries_is_ridden_out(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    connect(monkeypatch, panel, retries=8, backoff=0.05)
    panel.down(seconds=0.3)
    assert with_hook(lambda hook: hook.get_balance())["balance"] == 1000.0


def test_the_session_is_closed_on_exit_and_reopened_on_use(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, panel)

    async def scenario() -> None:
        hook = MirPanelAsyncHook()
        async with hook:
            await hook.get_balance()
            session = hook._session
            assert session is not None and not session.closed
        assert session.closed and hook._session is None
        await hook.get_balance()
        await hook.close()

    asyncio.run(scenario())
    assert panel.count("balance") == 2


def test_the_async_hook_does_not_write(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_mirpanel.protocol import Action

    connect(monkeypatch, panel)
    with pytest.raises(MirPanelInputError, match="only reads"):
        with_hook(lambda hook: hook._multi(Action.CANCEL, [1], "order"))
    assert panel.count() == 0


def test_concurrent_first_calls_read_the_connection_once_and_share_one_pool(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, panel, concurrency=2)
    ids = panel.create_orders(300)

    async def both(hook: MirPanelAsyncHook) -> tuple[Any, Any]:
        return await asyncio.gather(hook.get_balance(), hook.get_orders_status(ids))

    balance, records = with_hook(both)

    assert balance["balance"] == 1000.0 and len(records) == 300
    assert panel.connections <= 2
