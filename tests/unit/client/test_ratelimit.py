"""Request budgets: at most N request starts in any W seconds, per action, per hook.

The budgets run on a fake clock that moves only when the limiter waits, so every wait asserted here
is computed, never measured: no test sleeps or bets on thread scheduling. The hooks are checked
against the sandbox over real HTTP with a connection as a user writes it (no ``rate_limits``: the
published limits apply), and the sandbox's own connection is checked to opt out.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.clocks import FakeClock

from airflow_provider_mirpanel.client.defaults import DEFAULT_RATE_LIMITS
from airflow_provider_mirpanel.client.ratelimit import DEFAULT_BUDGETS, Budget, RateLimiter
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.hooks.mirpanel_async import MirPanelAsyncHook
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel

MINUTE, HOUR = 60.0, 3600.0


def starts(limiter: RateLimiter, clock: FakeClock, action: str, count: int) -> list[float]:
    """When each of ``count`` requests of ``action``, sent one after another, may start."""
    times = []
    for _ in range(count):
        limiter.wait(action)
        times.append(clock.now)
    return times


def most_in_any_window(times: list[float], per: float) -> int:
    """The most starts in any half-open window [t, t + per) (the busiest windows begin at a start)."""
    return max(sum(1 for other in times if start <= other < start + per) for start in times)


# -- the budgets -----------------------------------------------------------------------------------


def test_the_defaults_are_the_published_limits() -> None:
    assert {action: (budget.limit, budget.per) for action, budget in DEFAULT_BUDGETS.items()} == {
        "add": (60, MINUTE),
        "status": (120, MINUTE),
        "balance": (30, MINUTE),
        "services": (10, HOUR),
        "refill_status": (120, MINUTE),
        "refill": (60, MINUTE),
        "cancel": (60, MINUTE),
    }
    assert dict(DEFAULT_RATE_LIMITS) == {
        action: (budget.limit, budget.per) for action, budget in DEFAULT_BUDGETS.items()
    }
    assert [str(DEFAULT_BUDGETS[action]) for action in ("add", "services")] == ["60/min", "10/hour"]


def test_a_burst_within_the_budget_goes_at_once_and_the_next_waits_for_the_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"services": Budget(10, HOUR)}, clock=clock)
    assert starts(limiter, clock, "services", 10) == [0.0] * 10  # not 6 minutes apart
    clock.now = 1800.0
    pause = limiter.try_start("services")
    assert pause is not None and pause.seconds == 1800.0 and "'services' (10/hour)" in pause.budget
    assert starts(limiter, clock, "services", 1) == [HOUR]
    assert clock.waits == [1800.0]


def test_a_long_run_is_paced_to_the_budget() -> None:
    clock = FakeClock()
    limiter = RateLimiter(DEFAULT_BUDGETS, clock=clock)
    times = starts(limiter, clock, "add", 150)
    assert times == [0.0] * 60 + [MINUTE] * 60 + [2 * MINUTE] * 30
    assert most_in_any_window(times, MINUTE) == 60
    assert clock.waits == [MINUTE, MINUTE]


def test_the_window_slides_it_does_not_reset_on_the_minute() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"balance": Budget(2, 10.0)}, clock=clock)
    assert limiter.try_start("balance") is None
    clock.now = 9.0
    assert limiter.try_start("balance") is None
    clock.now = 10.0  # a fixed window would start afresh here and allow two more
    assert starts(limiter, clock, "balance", 2) == [10.0, 19.0]
    assert clock.waits == [9.0]


def test_each_action_has_its_own_budget_and_actions_without_one_are_not_paced() -> None:
    clock = FakeClock()
    limiter = RateLimiter(DEFAULT_BUDGETS, clock=clock)
    starts(limiter, clock, "add", 60)
    assert limiter.try_start("add") is not None
    assert starts(limiter, clock, "status", 120) == [0.0] * 120
    assert starts(limiter, clock, "balance", 30) == [0.0] * 30
    unpaced = RateLimiter({"add": Budget(1, MINUTE)}, clock=clock)
    assert starts(unpaced, clock, "status", 1000) == [0.0] * 1000
    assert RateLimiter(clock=clock).try_start("add") is None


def test_the_overall_cap_spaces_every_action_evenly_as_before() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=30, clock=clock)  # rate_limit 30 and no budgets: one request every 2 s
    assert starts(limiter, clock, "status", 3) + starts(limiter, clock, "add", 2) == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_the_overall_cap_and_the_budgets_both_hold() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"add": Budget(2, MINUTE)}, per_minute=60, clock=clock)
    assert starts(limiter, clock, "add", 3) == [0.0, 1.0, MINUTE]  # the cap spaces, the budget holds back
    assert starts(limiter, clock, "status", 2) == [61.0, 62.0]  # status counts against the cap only


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["add", "status", "services"]), st.floats(0, 90)), max_size=300),
    st.sampled_from([0.0, 30.0, 200.0]),
)
def test_no_window_ever_holds_more_than_its_budget_and_no_wait_is_longer_than_needed(
    steps: list[tuple[str, float]], per_minute: float
) -> None:
    budgets = {"add": Budget(3, MINUTE), "status": Budget(5, 10.0), "services": Budget(2, HOUR)}
    clock = FakeClock()
    limiter = RateLimiter(budgets, per_minute=per_minute, clock=clock)
    started: dict[str, list[float]] = {action: [] for action in budgets}
    for action, gap in steps:
        clock.now += gap
        before = clock.now
        limiter.wait(action)
        start = clock.now
        if start > before:  # it waited: a moment before its start, the request did not fit yet
            clock.now = start - 1e-6
            assert limiter.try_start(action) is not None
            clock.now = start
        started[action].append(start)
    for action, times in started.items():
        if times:
            assert most_in_any_window(times, budgets[action].per) <= budgets[action].limit
    every = sorted(time for times in started.values() for time in times)
    if per_minute and len(every) > 1:
        assert min(b - a for a, b in itertools.pairwise(every)) >= 60 / per_minute - 1e-9


def test_threads_sharing_a_limiter_never_start_more_than_the_budget() -> None:
    clock = FakeClock()  # frozen: nobody here waits, so the count alone decides
    limiter = RateLimiter({"add": Budget(60, MINUTE)}, clock=clock)
    admitted: list[int] = []

    def worker() -> None:
        admitted.append(sum(limiter.try_start("add") is None for _ in range(100)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 60


def test_a_pause_is_logged_once_naming_the_budget(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limiter = RateLimiter({"add": Budget(2, MINUTE)}, clock=clock)
    log = logging.getLogger("test_ratelimit")
    starts(limiter, clock, "add", 2)
    with caplog.at_level(logging.INFO, logger="test_ratelimit"):
        limiter.wait("add", log)
    assert [record.getMessage() for record in caplog.records] == [
        "Request budget 'add' (2/min) used up: the next 'add' request waits 60.0 s "
        "(connection extras rate_limits / rate_limit)"
    ]
    clock.now = 90.0  # starts at 0, 0 and 60: one more fits now, the next at 120
    assert limiter.try_start("add") is None
    first, second = limiter.try_start("add"), limiter.try_start("add")  # two threads find it used up
    assert first is not None and first.announce and first.seconds == 30.0
    assert second is not None and not second.announce  # announced already, for the same pause
    spaced = RateLimiter(per_minute=30, clock=clock)
    spaced.try_start("add")
    pause = spaced.try_start("add")
    assert pause is not None and pause.seconds == 2.0 and not pause.announce  # pauses under 5 s are not logged


def test_coroutines_wait_with_asyncio_sleep() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"status": Budget(2, MINUTE)}, clock=clock)

    async def three() -> list[float]:
        times = []
        for _ in range(3):
            await limiter.await_turn("status")
            times.append(clock.now)
        return times

    assert asyncio.run(three()) == [0.0, 0.0, MINUTE]
    assert (clock.async_waits, clock.waits) == ([MINUTE], [])


# -- the hooks, with a connection as a user writes it ---------------------------------------------


@pytest.fixture
def users_connection(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    """``mirpanel_default`` on the sandbox without the sandbox's opt-out: the default budgets apply."""
    monkeypatch.setenv(
        CONN_ENV_VAR, json.dumps({"conn_type": "mirpanel", "host": panel.url, "password": panel.api_key})
    )
    yield FakeClock()


def test_a_default_hook_places_60_orders_a_minute(panel: SandboxPanel, users_connection: FakeClock) -> None:
    clock = users_connection
    hook = MirPanelHook()
    assert hook.settings.rate_limits["add"] == Budget(60, MINUTE)  # the connection is read: the clock still counts
    hook.clock = clock
    service = dict(panel.catalogue.first_of_type("Default"))
    for i in range(65):
        hook.add_order(service["service"], link=f"https://example.com/paced/{i}", quantity=service["min"])
    hook.close()
    assert clock.waits == [MINUTE]  # the 61st waited for the first minute's window; 62nd–65th fit after it
    assert panel.count("add") == 65  # each sent once


def test_a_default_hook_asks_for_the_catalogue_10_times_an_hour(
    panel: SandboxPanel, users_connection: FakeClock
) -> None:
    clock = users_connection
    hook = MirPanelHook()
    hook.clock = clock
    for _ in range(11):
        hook.get_services()
    hook.close()
    assert clock.waits == [HOUR] and panel.count("services") == 11


def test_the_async_hook_paces_balance_at_30_a_minute(panel: SandboxPanel, users_connection: FakeClock) -> None:
    clock = users_connection

    async def poll() -> None:
        async with MirPanelAsyncHook() as hook:
            hook.clock = clock
            for _ in range(31):
                await hook.get_balance()

    asyncio.run(poll())
    assert (clock.async_waits, clock.waits) == ([MINUTE], [])
    assert panel.count("balance") == 31


def test_raised_budgets_are_opt_in(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        CONN_ENV_VAR,
        json.dumps(
            {
                "conn_type": "mirpanel",
                "host": panel.url,
                "password": panel.api_key,
                "extra": {"rate_limits": {"balance": 300}},
            }
        ),
    )
    hook = MirPanelHook()
    hook.clock = clock = FakeClock()
    for _ in range(31):
        hook.get_balance()
    assert clock.waits == []
    assert hook.settings.rate_limits["balance"] == Budget(300, MINUTE)
    assert hook.settings.rate_limits["add"] == Budget(60, MINUTE)  # the actions not named keep the defaults


# -- the sandbox opts out -------------------------------------------------------------------------


def test_the_sandbox_connection_turns_the_budgets_off_and_keeps_it_with_other_extras(panel: SandboxPanel) -> None:
    assert panel.connection()["extra"] == {"rate_limits": False}
    assert panel.connection(retries=1)["extra"] == {"rate_limits": False, "retries": 1}
    hook = MirPanelHook()  # the panel fixture set mirpanel_default to panel.connection_json()
    hook.clock = clock = FakeClock()
    for _ in range(31):
        hook.get_balance()
    assert hook.settings.rate_limits == {} and clock.waits == []
