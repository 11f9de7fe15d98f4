"""The provider registers with Airflow: metadata, connection type, form fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.airflow_cli import airflow_home, run_airflow

from airflow_provider_mirpanel import DEFAULT_API_URL
from airflow_provider_mirpanel.client.settings import EXTRA_KEYS
from airflow_provider_mirpanel.get_provider_info import get_provider_info
from airflow_provider_mirpanel.utils.airflow_lines import airflow_line
from airflow_provider_mirpanel.version_compat import DECLARATIVE_CONN_FIELDS


def airflow_cli(tmp_path: Path, *args: str) -> str:
    return run_airflow(airflow_home(tmp_path), *args, timeout=120).stdout


def test_connection_type_is_declared_with_relabelled_fields_and_conn_fields() -> None:
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-mirpanel"
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "mirpanel" and conn["hook-name"] == "MirPanel"
    behaviour = conn["ui-field-behaviour"]
    assert set(behaviour["hidden-fields"]) == {"login", "schema", "port"}
    assert behaviour["relabeling"] == {"host": "API URL", "password": "API key"}
    assert behaviour["placeholders"]["host"] == DEFAULT_API_URL
    assert set(conn["conn-fields"]) <= EXTRA_KEYS
    assert {"timeout", "retries", "concurrency", "rate_limit", "rate_limits", "order_url"} <= set(conn["conn-fields"])
    assert "add 60/min" in conn["conn-fields"]["rate_limits"]["description"]
    assert info["extra-links"] == ["airflow_provider_mirpanel.links.PanelOrderLink"]


@pytest.mark.slow  # an Airflow run or a CLI process: seconds
def test_airflow_lists_the_provider_its_hook_and_its_fields(tmp_path: Path) -> None:
    providers = json.loads(airflow_cli(tmp_path, "providers", "get", "airflow-provider-mirpanel", "-o", "json"))
    assert providers[0]["Provider"] == "airflow-provider-mirpanel"
    hooks = airflow_cli(tmp_path, "providers", "hooks", "-o", "json")
    mirpanel = [hook for hook in json.loads(hooks) if hook.get("connection_type") == "mirpanel"]
    assert mirpanel and mirpanel[0]["class"] == "airflow_provider_mirpanel.hooks.mirpanel.MirPanelHook"
    widgets = airflow_cli(tmp_path, "providers", "widgets")
    assert "extra__mirpanel__concurrency" in widgets and "extra__mirpanel__timeout" in widgets


def test_every_airflow_line_builds_the_connection_form_with_every_mirpanel_field() -> None:
    """What ``airflow providers widgets`` and the UI's form show, in process, on the line under test.

    3.2+ reads provider_info's ``conn-fields``; 3.1 reads the hook's ``get_connection_form_widgets`` and
    ``get_ui_field_behaviour``, which version_compat builds from the same ``conn-fields``.
    """
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    fields = set(get_provider_info()["connection-types"][0]["conn-fields"])
    listed = {
        name.removeprefix("extra__mirpanel__")
        for name in manager.connection_form_widgets
        if name.startswith("extra__mirpanel__")
    }
    assert listed == fields, airflow_line()
    behaviour = manager.field_behaviours["mirpanel"]
    assert behaviour["relabeling"] == {"host": "API URL", "password": "API key"}
    assert set(behaviour["hidden_fields"]) == {"login", "schema", "port"}
    if not DECLARATIVE_CONN_FIELDS:  # 3.1: typed WTForms fields from the declarative schema
        kinds = {
            name: type(manager.connection_form_widgets[f"extra__mirpanel__{name}"].field).__name__
            for name in ("retries", "verify_ssl", "timeout")
        }
        assert kinds == {"retries": "UnboundField", "verify_ssl": "UnboundField", "timeout": "UnboundField"}
        classes = {
            name: manager.connection_form_widgets[f"extra__mirpanel__{name}"].field.field_class.__name__
            for name in ("retries", "verify_ssl", "timeout")
        }
        assert classes == {"retries": "IntegerField", "verify_ssl": "BooleanField", "timeout": "StringField"}
