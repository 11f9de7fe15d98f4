"""The hooks follow the panel's rate-limit headers (no shared state): a throttled request is sent again
after ``Retry-After`` — even an ``add``: a 429 was never processed — and a low
``X-RateLimit-Remaining`` spreads the remaining requests until ``X-RateLimit-Reset``.

The sandbox enforces per-key limits on the same fake time the hook's budgets run on: every wait
asserted here is computed, never slept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import requests
from support.clocks import FakeClock

from airflow_provider_mirpanel.client.ratelimit import MAX_THROTTLE_WAIT, THROTTLED_RESENDS
from airflow_provider_mirpanel.exceptions import MirPanelAmbiguousOrderError, MirPanelTransientError
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.hooks.mirpanel_async import MirPanelAsyncHook
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
def limited(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxPanel]:
    """A panel allowing 3 ``add`` and 1 ``status`` per key in any 60 s, on the fake time; the
    connection has no budgets of its own, so only the panel's word paces the hook."""
    with SandboxPanel(
        speed=0, first_order_id=1000, rate_limits={"add": (3, 60), "status": (1, 60)}, limits_clock=clock
    ) as panel:
        monkeypatch.setenv(CONN_ENV_VAR, panel.connection_json(retries=0))
        yield panel


def hook_on(clock: FakeClock) -> MirPanelHook:
    hook = MirPanelHook()
    hook.clock = clock
    return hook


def place(hook: MirPanelHook, panel: SandboxPanel, n: int) -> int:
    service = panel.catalogue.first_of_type("Default")
    return hook.add_order(
        int(service["service"]), link=f"https://example.com/follow/{n}", quantity=int(service["min"])
    )["order"]


def fill_window(panel: SandboxPanel, action: str, n: int, **form: str) -> None:
    """``n`` requests of another client with the same key (another worker, say)."""
    for _ in range(n):
        reply = requests.post(panel.url, data={"key": panel.api_key, "action": action, **form}, timeout=10)
        assert reply.status_code == 200


def test_a_low_remaining_spreads_the_requests_until_the_reset_and_no_429_comes(
    limited: SandboxPanel, clock: FakeClock
) -> None:
    hook = hook_on(clock)
    orders = [place(hook, limited, n) for n in range(5)]
    assert len(set(orders)) == 5 and len(limited.state.orders) == 5
    assert limited.limits.counts() == {"allowed": {"add": 5}, "refused": {}}
    # remaining 2 of 3, reset 60 s: the next in 60/3 = 20 s; then 1 left, 40 s: 20 s; then 0: the reset
    assert clock.waits == [20.0, 20.0, 20.0, 20.0]


def test_a_throttled_add_is_sent_again_after_retry_after_and_placed_once(
    limited: SandboxPanel, clock: FakeClock
) -> None:
    service = limited.catalogue.first_of_type("Default")
    fill_window(
        limited,
        "add",
        3,
        service=str(service["service"]),
        link="https://example.com/other/worker",
        quantity=str(service["min"]),
    )
    order = place(hook_on(clock), limited, 1)
    added = [entry for entry in limited.requests if entry.action == "add"]
    assert [entry.status for entry in added] == [200, 200, 200, 429, 200]
    assert added[-1].created == [order] and not added[-2].processed
    assert clock.waits == [60.0]  # the Retry-After: the other worker's starts leave the window at 1060
    assert len(limited.state.orders) == 4  # one order per add that reached the panel


def test_an_add_whose_fate_is_unknown_is_still_never_sent_again(limited: SandboxPanel, clock: FakeClock) -> None:
    limited.faults.add("add", "drop_after_processing")
    with pytest.raises(MirPanelAmbiguousOrderError):
        place(hook_on(clock), limited, 1)
    assert limited.count("add") == 1 and len(limited.state.orders) == 1


@pytest.fixture
def throttling(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> SandboxPanel:
    """A panel without limits of its own, whose 429s come from faults; no retries."""
    monkeypatch.setenv(CONN_ENV_VAR, panel.connection_json(retries=0))
    return panel


def test_a_throttle_with_a_too_long_or_no_wait_is_left_to_the_retry_policy(
    throttling: SandboxPanel, clock: FakeClock
) -> None:
    hook = hook_on(clock)
    throttling.faults.add("add", "rate_limit", retry_after=MAX_THROTTLE_WAIT + 1)
    with pytest.raises(MirPanelTransientError, match="429") as raised:
        place(hook, throttling, 1)  # retries=0: no resend, and certainly not placed
    assert raised.value.throttled and not isinstance(raised.value, MirPanelAmbiguousOrderError)
    throttling.faults.add("add", "rate_limit")  # no Retry-After, no X-RateLimit-Reset
    with pytest.raises(MirPanelTransientError, match="429"):
        place(hook, throttling, 2)
    assert throttling.count("add") == 2 and not throttling.state.orders and clock.waits == []


def test_a_throttled_request_is_sent_again_at_most_so_often(throttling: SandboxPanel, clock: FakeClock) -> None:
    throttling.faults.add("add", "rate_limit", retry_after=1, times=None)
    with pytest.raises(MirPanelTransientError, match="429"):
        place(hook_on(clock), throttling, 1)
    assert throttling.count("add") == THROTTLED_RESENDS + 1 and clock.waits == [1.0] * THROTTLED_RESENDS


def test_the_async_hook_follows_the_panel_too(limited: SandboxPanel, clock: FakeClock) -> None:
    ids = limited.create_orders(3, status="Completed")
    fill_window(limited, "status", 1, order=str(ids[0]))

    async def poll() -> list[str | None]:
        async with MirPanelAsyncHook() as hook:
            hook.clock = clock
            return [record["status"] for record in await hook.get_orders_status(ids)]

    assert asyncio.run(poll()) == ["Completed"] * 3
    assert [entry.status for entry in limited.requests if entry.action == "status"] == [200, 429, 200]
    assert clock.async_waits == [60.0] and clock.waits == []


def test_without_following_the_panel_a_429_goes_to_the_retry_policy_as_before(
    throttling: SandboxPanel, clock: FakeClock
) -> None:
    hook = hook_on(clock)
    hook.panel  # noqa: B018 -- reads the connection, which makes the limiter
    hook._limiter.follow_panel = False  # as releases before 0.3
    throttling.faults.add("add", "rate_limit", retry_after=1)
    with pytest.raises(MirPanelTransientError, match="429"):
        place(hook, throttling, 1)  # retries=0
    assert clock.waits == []
