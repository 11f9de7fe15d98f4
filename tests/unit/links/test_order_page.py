"""The "Panel order" extra link of a placement, against the sandbox: the API key is in no link."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.orders import place_one
from support.task_context import StandInTi

from airflow_provider_mirpanel.links.order_page import ORDER_URL_XCOM_KEY, PanelOrderLink, order_page_url
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel

ORDER_PAGE = "https://panel.example/orders?search={order}"


def with_order_page(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch, pattern: Any) -> None:
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(order_url=pattern)))


def test_a_placed_order_links_to_its_page_on_the_panel(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    with_order_page(panel, monkeypatch, ORDER_PAGE)
    ti = StandInTi()
    op, [record] = place_one(panel, ti)

    url = PanelOrderLink().get_link(op, ti_key=ti)  # type: ignore[arg-type]  # Airflow 3 passes its runtime ti

    assert url == f"https://panel.example/orders?search={record['order']}"
    assert panel.api_key not in url and panel.api_key not in json.dumps(ti.xcoms)
    assert PanelOrderLink().name == "Panel order" and op.operator_extra_links[0].name == "Panel order"


@pytest.mark.parametrize("pattern", [None, "", "javascript:alert({order})", 42])
def test_no_link_without_an_http_pattern(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch, pattern: Any) -> None:
    with_order_page(panel, monkeypatch, pattern)
    ti = StandInTi()
    op, [record] = place_one(panel, ti)
    assert record["state"] == "placed"
    assert ti.xcoms == {} and PanelOrderLink().get_link(op, ti_key=ti) == ""  # type: ignore[arg-type]


def test_no_link_when_no_order_was_placed() -> None:
    refused = [{"key": "0", "state": "refused", "order": None}, {"key": "1", "state": "unknown", "order": None}]
    assert order_page_url(ORDER_PAGE, refused) is None
    assert (
        order_page_url(ORDER_PAGE, [*refused, {"key": "2", "state": "placed", "order": 77}])
        == "https://panel.example/orders?search=77"
    )
    assert ORDER_URL_XCOM_KEY == "mirpanel_order_url"
