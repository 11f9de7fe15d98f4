"""How a ``mirpanel`` connection becomes client settings: URL, extras, defaults."""

from __future__ import annotations

import json

import pytest

from airflow_provider_mirpanel import DEFAULT_API_URL
from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR
from airflow_provider_mirpanel.settings import ClientSettings


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
def test_the_api_url_comes_from_the_host_and_defaults_to_mirpanel(host: str | None, port: int | None,
                                                                     url: str) -> None:
    assert ClientSettings.from_connection(host, None, port, {}).url == url


def test_extras_from_the_ui_may_be_text_or_prefixed() -> None:
    settings = ClientSettings.from_connection(None, None, None, {
        "timeout": "12.5", "extra__mirpanel__retries": "2", "concurrency": 16, "rate_limit": "120"})
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
