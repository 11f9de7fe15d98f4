"""The sandbox's per-key rate limits, over real HTTP: a sliding window per action and key, 429 with
``Retry-After`` and ``X-RateLimit-*`` beyond it, the headers on allowed replies too, counters.

The limits run on a fake time the test moves: no test waits for a window to pass.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from airflow_provider_mirpanel.sandbox import SandboxPanel
from airflow_provider_mirpanel.sandbox.__main__ import _parser, rate_limits
from airflow_provider_mirpanel.sandbox.limits import RateLimits, parse_limit


class Time:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def time_() -> Time:
    return Time()


@pytest.fixture
def limited(time_: Time) -> Iterator[SandboxPanel]:
    """A panel allowing 3 ``add`` and 2 ``balance`` requests per key in any 60 s."""
    with SandboxPanel(
        speed=0, first_order_id=1000, rate_limits={"add": (3, 60), "balance": (2, 60)}, limits_clock=time_
    ) as panel:
        yield panel


def post(panel: SandboxPanel, action: str, key: str | None = None, **form: str) -> requests.Response:
    return requests.post(panel.url, data={"key": key or panel.api_key, "action": action, **form}, timeout=10)


def add(panel: SandboxPanel, n: int, key: str | None = None) -> requests.Response:
    service = panel.catalogue.first_of_type("Default")
    return post(
        panel,
        "add",
        key,
        service=str(service["service"]),
        link=f"https://example.com/limits/{n}",
        quantity=str(service["min"]),
    )


def test_over_the_limit_a_request_gets_429_with_retry_after_and_is_not_processed(
    limited: SandboxPanel, time_: Time
) -> None:
    replies = []
    for n in range(3):
        replies.append(add(limited, n))
        time_.now += 10  # starts at 1000, 1010, 1020
    refused = add(limited, 3)  # at 1030: the window (990, 1030] holds 3
    assert [reply.status_code for reply in replies] == [200, 200, 200]
    assert [reply.headers["X-RateLimit-Remaining"] for reply in replies] == ["2", "1", "0"]
    assert {reply.headers["X-RateLimit-Limit"] for reply in replies} == {"3"}
    assert "Retry-After" not in replies[0].headers
    assert refused.status_code == 429
    assert refused.json() == {"error": "Too many requests"}
    # the oldest start (1000) leaves the window at 1060: 30 s from now
    assert refused.headers["Retry-After"] == refused.headers["X-RateLimit-Reset"] == "30"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert len(limited.state.orders) == 3  # the refused add placed nothing
    assert limited.requests[-1].status == 429 and not limited.requests[-1].processed
    assert limited.limits.counts() == {"allowed": {"add": 3}, "refused": {"add": 1}}


def test_the_window_slides(limited: SandboxPanel, time_: Time) -> None:
    for n in range(3):
        add(limited, n)
        time_.now += 10
    time_.now = 1059.9  # the first start (1000) is still in the window
    assert add(limited, 3).status_code == 429
    time_.now = 1060.0  # it has left: one more fits, not two
    assert add(limited, 4).status_code == 200
    assert add(limited, 5).status_code == 429
    time_.now = 1080.0  # the starts of 1010 and 1020 have left too
    assert add(limited, 6).status_code == 200
    assert add(limited, 7).status_code == 200
    assert len(limited.state.orders) == 6
    assert limited.limits.refused["add"] == 2


def test_each_key_and_each_action_has_its_own_window(limited: SandboxPanel) -> None:
    assert [post(limited, "balance").status_code for _ in range(3)] == [200, 200, 429]
    other = post(limited, "balance", key="another-key")  # its own window (and refused as a bad key)
    assert other.status_code == 200 and "error" in other.json()
    assert other.headers["X-RateLimit-Remaining"] == "1"
    assert add(limited, 1).status_code == 200  # add's window is untouched by balance's
    unlimited = post(limited, "status", order="1000")
    assert unlimited.status_code == 200 and "X-RateLimit-Limit" not in unlimited.headers
    assert limited.limits.counts() == {"allowed": {"balance": 3, "add": 1}, "refused": {"balance": 1}}


def test_off_by_default(panel: SandboxPanel) -> None:
    replies = [post(panel, "balance") for _ in range(40)]  # more than any published limit of balance
    assert {reply.status_code for reply in replies} == {200}
    assert "X-RateLimit-Limit" not in replies[-1].headers
    assert not panel.limits and panel.limits.counts() == {"allowed": {}, "refused": {}}


def test_reset_forgets_counters_and_windows(limited: SandboxPanel) -> None:
    assert [post(limited, "balance").status_code for _ in range(3)] == [200, 200, 429]
    limited.limits.reset()
    assert post(limited, "balance").status_code == 200
    assert limited.limits.counts() == {"allowed": {"balance": 1}, "refused": {}}


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="must be >= 1 request"):
        RateLimits({"add": (0, 60)})
    assert parse_limit("add=600") == ("add", (600, 60.0))
    assert parse_limit(" services=10/3600") == ("services", (10, 3600.0))
    for bad in ("add", "add=", "add=x", "add=5/0", "=5"):
        with pytest.raises(ValueError, match="ACTION=REQUESTS"):
            parse_limit(bad)


def test_command_line_flags() -> None:
    args = _parser().parse_args(["--rate-limit", "add=600", "--published-limits", "--rate-limit", "status=5/10"])
    limits = rate_limits(args.published_limits, args.rate_limit)
    assert limits["add"] == (600, 60.0) and limits["status"] == (5, 10.0) and limits["services"] == (10, 3600.0)
    assert rate_limits(False, []) == {}
