"""How a ``mirpanel`` connection becomes client settings: URL, extras, defaults."""

from __future__ import annotations

import json

import pytest

from airflow_provider_mirpanel import DEFAULT_API_URL
from airflow_provider_mirpanel.client.settings import ClientSettings
from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        (None, None, DEFAULT_API_URL),
        ("", None, DEFAULT_API_URL),
        ("https://otherpanel.example/api/v2", None, "https://otherpanel.example/api/v2"),
        ("otherpanel.example/api/v2", None, "https://otherpanel.example/api/v2"),
        ("http://127.0.0.1/api/v2", 8765, "http://127.0.0.1:8765/api/v2"),
    ],
)
def test_the_api_url_comes_from_the_host_and_defaults_to_mirpanel(host: str | None, port: int | None, url: str) -> None:
    assert ClientSettings.from_connection(host, None, port, {}).url == url


def test_extras_from_the_ui_may_be_text_or_prefixed() -> None:
    settings = ClientSettings.from_connection(
        None, None, None, {"timeout": "12.5", "extra__mirpanel__retries": "2", "concurrency": 16, "rate_limit": "120"}
    )
    assert (settings.timeout, settings.retries, settings.concurrency, settings.rate_limit) == (12.5, 2, 16, 120.0)
    defaults = ClientSettings.from_connection(None, None, None, {})
    assert (defaults.timeout, defaults.retries, defaults.concurrency, defaults.rate_limit) == (30.0, 5, 8, 0.0)
    assert defaults.verify


@pytest.mark.parametrize("extra", [{"timeout": "soon"}, {"concurrency": 0}, {"retries": -1}])
def test_a_bad_extra_is_refused_naming_it(extra: dict[str, object]) -> None:
    with pytest.raises(MirPanelInputError, match=next(iter(extra))):
        ClientSettings.from_connection(None, None, None, extra)


def test_a_connection_without_a_key_is_refused_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps({"conn_type": "mirpanel", "host": "http://127.0.0.1:9/api/v2"}))
    with pytest.raises(MirPanelInputError, match="no API key"):
        MirPanelHook().get_balance()


# -- request budgets: rate_limits (per action) and rate_limit (all actions) -------------------------


def budgets(extra: dict[str, object]) -> dict[str, tuple[int, float]]:
    settings = ClientSettings.from_connection(None, None, None, extra)
    return {action: (budget.limit, budget.per) for action, budget in settings.rate_limits.items()}


PUBLISHED = {
    "add": (60, 60.0),
    "status": (120, 60.0),
    "balance": (30, 60.0),
    "services": (10, 3600.0),
    "refill_status": (120, 60.0),
    "refill": (60, 60.0),
    "cancel": (60, 60.0),
}


@pytest.mark.parametrize(
    "extra", [{}, {"rate_limits": None}, {"rate_limits": ""}, {"extra__mirpanel__rate_limits": ""}]
)
def test_without_rate_limits_every_action_gets_its_published_budget(extra: dict[str, object]) -> None:
    assert budgets(extra) == PUBLISHED
    assert ClientSettings.from_connection(None, None, None, extra).rate_limit == 0  # no overall cap


@pytest.mark.parametrize("off", ["off", " OFF ", False, "false"])
def test_rate_limits_off_turns_every_budget_off(off: object) -> None:
    assert budgets({"rate_limits": off}) == {}
    assert budgets({"extra__mirpanel__rate_limits": off}) == {}


@pytest.mark.parametrize(
    "given",
    [
        {"add": 30, "status": "240", "services": {"limit": 20, "per": 3600}, "cancel": "off", "refill": 0},
        '{"add": 30, "status": "240", "services": {"limit": 20, "per": 3600}, "cancel": "off", "refill": 0}',
    ],
    ids=["object", "json text from the form"],
)
def test_rate_limits_override_the_actions_they_name_and_keep_the_others(given: object) -> None:
    expected = {**PUBLISHED, "add": (30, 60.0), "status": (240, 60.0), "services": (20, 3600.0)}
    del expected["cancel"], expected["refill"]  # 0 and "off": no budget for these two
    assert budgets({"rate_limits": given}) == expected


def test_a_fraction_of_a_request_per_minute_is_spaced_evenly() -> None:
    assert budgets({"rate_limits": {"services": 0.25}})["services"] == (1, 240.0)


@pytest.mark.parametrize(
    "value",
    [
        "fast",
        "[1, 2]",
        3,
        True,
        {"adds": 1},
        {"add": -1},
        {"add": "lots"},
        {"add": True},
        {"add": [60]},
        {"add": {"limit": 0, "per": 60}},
        {"add": {"limit": 1.5, "per": 60}},
        {"add": {"limit": 5, "per": 0}},
        {"add": {"limit": 5}},
        {"add": {"limit": 5, "per": 60, "burst": 2}},
        {"status": 10**7},
    ],
)
def test_a_bad_rate_limits_is_refused_naming_it(value: object) -> None:
    with pytest.raises(MirPanelInputError, match="rate_limits"):
        ClientSettings.from_connection(None, None, None, {"rate_limits": value})


def test_bad_rate_limits_are_refused_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        CONN_ENV_VAR,
        json.dumps(
            {
                "conn_type": "mirpanel",
                "host": "http://127.0.0.1:9/api/v2",
                "password": "k3y-" + "x" * 28,
                "extra": {"rate_limits": {"add": -5}},
            }
        ),
    )
    with pytest.raises(MirPanelInputError, match="'add'") as refused:
        MirPanelHook().get_balance()
    assert "k3y-" not in str(refused.value)
