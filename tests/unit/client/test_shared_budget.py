"""Budgets shared per API key in Redis (connection extra ``budget_redis``): every hook of the same
panel and key — other connections, other processes, the async hook of the triggerer — draws from one
window per action; the key is in no Redis name; an unreachable Redis leaves each hook its own budget.

A real ``redis-server`` on 127.0.0.1 keeps the windows (on its own clock); the budgets asserted are
an hour long, so no window passes during a test, and no wait is slept (the hooks' clocks are fake).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Iterator

import pytest
from redis import Redis
from support.clocks import FakeClock

from airflow_provider_mirpanel.client.ratelimit import Budget, RateLimiter
from airflow_provider_mirpanel.client.settings import ClientSettings
from airflow_provider_mirpanel.client.shared_budget import KEY_PREFIX, RedisBudget, budget_id, redis_url
from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.hooks.mirpanel_async import MirPanelAsyncHook
from airflow_provider_mirpanel.sandbox import SandboxPanel
from airflow_provider_mirpanel.sandbox.redis_server import LocalRedis, free_port

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server (Debian: apt-get install redis-server)"
)

HOUR = 3600.0
PANEL_URL = "https://panel.example/api/v2"
KEY = "0123456789abcdef-the-api-key"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.fixture
def redis(redis_server: LocalRedis) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


def limiter(url: str, key: str = KEY, panel_url: str = PANEL_URL, limit: int = 3) -> RateLimiter:
    """A hook's limiter: its own ``add`` budget, shared through Redis with every other of the same key."""
    return RateLimiter({"add": Budget(limit, HOUR)}, clock=FakeClock(), shared=RedisBudget(url, panel_url, key))


def test_hooks_of_one_key_share_one_window_per_action(redis_server: LocalRedis, redis: Redis) -> None:
    first, second = limiter(redis_server.url), limiter(redis_server.url)
    assert first.try_start("add") is None and first.try_start("add") is None
    assert second.try_start("add") is None  # the third start of the key in the hour
    refused = second.try_start("add")
    assert refused is not None and HOUR - 5 < refused.seconds <= HOUR  # until the first start leaves
    assert "shared by every hook of the API key" in refused.source
    assert first.try_start("add") is not None  # its own budget has room, the key's has not
    assert second.try_start("status") is None  # no budget for status: not shared either
    assert limiter(redis_server.url, key="another key").try_start("add") is None
    assert limiter(redis_server.url, panel_url="https://other.example/api/v2").try_start("add") is None


def test_the_key_is_in_no_redis_name_or_value(redis_server: LocalRedis, redis: Redis) -> None:
    limiter(redis_server.url).try_start("add")
    names = [str(name) for name in redis.scan_iter("*")]
    assert names == [f"{KEY_PREFIX}:panel.example:{budget_id(PANEL_URL, KEY).split(':')[1]}:add"]
    stored = [str(member) for member in redis.zrange(names[0], 0, -1)]
    assert all(KEY not in text and "the-api-key" not in text for text in [*names, *stored])
    assert budget_id(PANEL_URL, KEY) != budget_id(PANEL_URL, KEY + "x")
    assert budget_id("https://user:pw@panel.example/api/v2", KEY).startswith("panel.example:")


def test_an_unreachable_redis_leaves_each_hook_its_own_budget_loudly(caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://:redis-secret@127.0.0.1:{free_port()}/0"  # nobody listens there
    own = limiter(url, limit=2)
    with caplog.at_level(logging.WARNING):
        assert own.try_start("add") is None and own.try_start("add") is None  # granted: Redis is not asked
        waiting = own.try_start("add")
    assert waiting is not None and waiting.seconds == HOUR  # its own budget still holds
    warnings = [record.getMessage() for record in caplog.records if "unreachable" in record.getMessage()]
    assert len(warnings) == 1 and "127.0.0.1" in warnings[0] and "redis-secret" not in caplog.text
    assert isinstance(own.shared, RedisBudget) and not own.shared.available


def test_the_extra_takes_a_redis_url_or_a_connection_id() -> None:
    def read(value: object) -> str | None:
        return ClientSettings.from_connection(
            "http://127.0.0.1:1/api/v2", None, None, {"budget_redis": value}
        ).budget_redis

    assert read("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert read(" redis_default ") == "redis_default"
    assert read("") is None and read(None) is None and read("false") is None
    for bad in ("http://:pw-in-url@127.0.0.1:6379", "two words", 6379):
        with pytest.raises(MirPanelInputError, match="budget_redis") as raised:
            read(bad)
        assert "pw-in-url" not in str(raised.value)  # a Redis URL may hold a password
    assert redis_url("cache", None, None, "p@ss", {"db": "2"}) == "redis://:p%40ss@cache:6379/2"
    assert redis_url("cache", 6380, "me", None, {"ssl": "true"}) == "rediss://cache:6380/0"


def test_sync_and_async_hooks_of_two_connections_draw_from_the_same_budget(
    redis_server: LocalRedis, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_BUDGET_REDIS", json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": redis_server.port})
    )
    with SandboxPanel(speed=0, first_order_id=1000) as panel:
        limits = {"add": {"limit": 3, "per": HOUR}, "balance": {"limit": 2, "per": HOUR}}
        monkeypatch.setenv(
            "AIRFLOW_CONN_PLACING", panel.connection_json(rate_limits=limits, budget_redis="budget_redis")
        )
        monkeypatch.setenv(
            "AIRFLOW_CONN_WATCHING", panel.connection_json(rate_limits=limits, budget_redis=redis_server.url)
        )
        service = panel.catalogue.first_of_type("Default")
        placing, watching = MirPanelHook("placing"), MirPanelHook("watching")
        for n, hook in enumerate((placing, watching, placing)):
            hook.add_order(
                int(service["service"]), link=f"https://example.com/shared/{n}", quantity=int(service["min"])
            )
        assert watching._limiter.try_start("add") is not None  # the key's 3 adds this hour are used up

        async def balance() -> None:
            async with MirPanelAsyncHook("watching") as hook:
                await hook.get_balance()

        asyncio.run(balance())  # the triggerer's poll counts too
        placing.get_balance()
        assert placing._limiter.try_start("balance") is not None
    logs = {str(name).rsplit(":", 1)[1]: redis.zcard(name) for name in redis.scan_iter(f"{KEY_PREFIX}:*")}
    assert logs == {"add": 3, "balance": 2}
