"""MirPanelHook against the sandbox panel over real HTTP: every method, shape, batching and retry rule."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any, cast

import pandas as pd
import pytest

from airflow_provider_mirpanel.exceptions import (
    MirPanelAmbiguousOrderError,
    MirPanelAPIError,
    MirPanelAuthError,
    MirPanelInputError,
    MirPanelInsufficientFundsError,
    MirPanelResponseError,
    MirPanelTransientError,
)
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.protocol import ORDER_TYPES
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel, default_catalogue

FAST_RETRIES = {"retries": 4, "backoff": 0.01, "timeout": 2}


@pytest.fixture
def hook(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> Iterator[MirPanelHook]:
    """A hook on the sandbox whose retries back off in milliseconds."""
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(**FAST_RETRIES)))
    hook = MirPanelHook()
    yield hook
    hook.close()


def default_service(panel: SandboxPanel) -> dict[str, Any]:
    return dict(panel.catalogue.first_of_type("Default"))


def place(hook: MirPanelHook, panel: SandboxPanel, count: int) -> list[int]:
    service = default_service(panel)
    return [
        hook.add_order(service["service"], link=f"https://example.com/p/{i}", quantity=service["min"])["order"]
        for i in range(count)
    ]


# -- every method on the seed's reply shapes ---------------------------------------------------


def test_real_catalogue_arrives_as_4156_typed_service_records(hook: MirPanelHook) -> None:
    services = hook.get_services()
    assert len(services) == 4156
    frame = pd.DataFrame(services)
    assert {"service", "name", "type", "category", "rate", "min", "max", "refill", "cancel", "dripfeed"} <= set(
        frame.columns
    )
    assert frame["service"].dtype == "int64" and frame["rate"].dtype == "float64"
    assert frame["refill"].dtype == "bool" and frame["min"].dtype == "int64"


def test_add_order_places_and_charges_one_order(hook: MirPanelHook, panel: SandboxPanel) -> None:
    service = default_service(panel)
    before = hook.get_balance()
    record = hook.add_order(service["service"], link="https://example.com/p/1", quantity=service["min"])
    assert record == {
        "order": record["order"],
        "service": service["service"],
        "link": "https://example.com/p/1",
        "quantity": service["min"],
    }
    assert list(panel.state.orders) == [record["order"]]
    after = hook.get_balance()
    assert after["currency"] == "USD"
    assert after["balance"] == pytest.approx(
        before["balance"] - float(service["rate"]) * service["min"] / 1000, abs=1e-5
    )


def test_single_and_multi_status(hook: MirPanelHook, panel: SandboxPanel) -> None:
    first, second = place(hook, panel, 2)
    panel.set_order(second, "Partial", remains=7)
    single = hook.get_order_status(second)
    assert single["order"] == second and single["status"] == "Partial" and single["remains"] == 7
    assert isinstance(single["charge"], float) and isinstance(single["start_count"], int)
    records = hook.get_orders_status([second, 999_999, first])
    assert [r["order"] for r in records] == [second, 999_999, first]
    assert records[1]["error"] == "Incorrect order ID" and records[1]["status"] is None
    assert records[0] == single


def test_refills_and_refill_statuses(hook: MirPanelHook, panel: SandboxPanel) -> None:
    refillable = next(s for s in panel.catalogue.services if s["refill"] and s["type"] == "Default")
    orders = [
        hook.add_order(refillable["service"], link=f"https://example.com/r/{i}", quantity=refillable["min"])["order"]
        for i in range(3)
    ]
    panel.complete_all()
    single = hook.refill_order(orders[0])
    assert single["order"] == orders[0] and isinstance(single["refill"], int) and single["error"] is None
    multi = hook.refill_orders([orders[1], orders[2], 424242])
    assert [r["order"] for r in multi] == [orders[1], orders[2], 424242]
    assert multi[2]["refill"] is None and multi[2]["error"]
    refill_ids = [single["refill"], multi[0]["refill"], multi[1]["refill"]]
    status = hook.get_refill_status(cast(int, refill_ids[0]))
    assert status["refill"] == refill_ids[0] and status["status"] in {"Pending", "In progress", "Completed"}
    statuses = hook.get_refills_status([*cast(list[int], refill_ids), 777_777])
    assert [r["refill"] for r in statuses] == [*refill_ids, 777_777]
    assert statuses[-1]["error"] == "Refill not found"


def test_cancel_orders_reports_each_order(hook: MirPanelHook, panel: SandboxPanel) -> None:
    panel.speed = 0  # keep the orders Pending so they can be cancelled
    cancellable = next(s for s in panel.catalogue.services if s["cancel"] and s["type"] == "Default")
    order = hook.add_order(cancellable["service"], link="https://example.com/c", quantity=cancellable["min"])["order"]
    records = hook.cancel_orders([order, 31337])
    assert records == [
        {"order": order, "cancel": True, "error": None},
        {"order": 31337, "cancel": False, "error": "Incorrect order ID"},
    ]
    assert hook.get_order_status(order)["status"] == "Canceled"


def test_test_connection_reads_the_balance_and_changes_nothing(hook: MirPanelHook, panel: SandboxPanel) -> None:
    ok, message = hook.test_connection()
    assert ok and "1000" in message
    assert [entry.action for entry in panel.requests] == ["balance"]


@pytest.mark.parametrize(
    ("action", "body", "call", "expected"),
    [
        (
            "status",
            [
                {"order": 1, "status": "cancelled", "charge": 0.5, "remains": "Unknown"},
                {"order": 2, "status": {"error": "Incorrect order ID"}},
            ],
            lambda h: h.get_orders_status([1, 2]),
            [("Canceled", None), (None, "Incorrect order ID")],
        ),
        (
            "refill",
            {"1": {"refill": "9"}, "2": {"error": "Order not eligible for refill."}},
            lambda h: h.refill_orders([1, 2]),
            [(9, None), (None, "Order not eligible for refill.")],
        ),
        (
            "refill_status",
            {"1": {"status": "in progress"}, "2": {"error": "Refill not found"}},
            lambda h: h.get_refills_status([1, 2]),
            [("In progress", None), (None, "Refill not found")],
        ),
        (
            "cancel",
            {"1": {"cancel": 1}, "2": {"cancel": {"error": "Incorrect order ID"}}},
            lambda h: h.cancel_orders([1, 2]),
            [(True, None), (False, "Incorrect order ID")],
        ),
    ],
)
def test_the_other_shape_of_each_multi_reply_is_read(
    hook: MirPanelHook, panel: SandboxPanel, action: str, body: Any, call: Any, expected: list[tuple[Any, Any]]
) -> None:
    panel.faults.add(action, "body", body=json.dumps(body).encode())
    value_field = {"status": "status", "refill": "refill", "refill_status": "status", "cancel": "cancel"}[action]
    assert [(r[value_field], r["error"]) for r in call(hook)] == expected


# -- batching ----------------------------------------------------------------------------------


def test_status_of_250_orders_takes_three_requests_in_input_order(hook: MirPanelHook, panel: SandboxPanel) -> None:
    real = panel.create_orders(200)
    wanted = [*reversed(real), *range(900_001, 900_051)]
    records = hook.get_orders_status([*wanted, *wanted[:10]])  # duplicates are asked once
    assert [r["order"] for r in records] == wanted
    assert panel.count("status") == 3
    assert sorted(len(entry.ids) for entry in panel.requests) == [50, 100, 100]
    assert all(r["error"] == "Incorrect order ID" for r in records[200:])
    assert all(r["error"] is None and r["status"] for r in records[:200])


def test_an_empty_id_list_sends_nothing(hook: MirPanelHook, panel: SandboxPanel) -> None:
    assert hook.get_orders_status([]) == [] and hook.cancel_orders(iter(())) == []
    assert hook.refill_orders([]) == [] and hook.get_refills_status([]) == []
    assert panel.count() == 0


# -- order types -------------------------------------------------------------------------------

TYPE_PARAMS: dict[str, dict[str, Any]] = {
    "Default": {"link": "https://x/1", "quantity": 100, "runs": 2, "interval": 30},
    "Package": {"link": "https://x/2"},
    "Custom Comments": {"link": "https://x/3", "comments": ["first", "second"]},
    "Custom Comments Package": {"link": "https://x/4", "comments": "only one"},
    "Mentions": {"link": "https://x/5", "quantity": 100, "usernames": ["ann", "bob"]},
    "Mentions with Hashtags": {"link": "https://x/6", "quantity": 100, "usernames": ["ann"], "hashtags": ["#a", "#b"]},
    "Mentions Custom List": {"link": "https://x/7", "usernames": ["ann", "bob", "cid"]},
    "Mentions Hashtag": {"link": "https://x/8", "quantity": 100, "hashtag": "#tag"},
    "Mentions User Followers": {"link": "https://x/9", "quantity": 100, "username": "ann"},
    "Mentions Media Likers": {"link": "https://x/10", "quantity": 100, "media": "https://x/m"},
    "Comment Likes": {"link": "https://x/11", "quantity": 100, "username": "author"},
    "Comment Replies": {"link": "https://x/12", "username": "author", "comments": ["re 1", "re 2"]},
    "Poll": {"link": "https://x/13", "quantity": 100, "answer_number": 2},
    "Invites from Groups": {"link": "https://x/14", "quantity": 100, "groups": ["g1", "g2"]},
    "Subscriptions": {"username": "ann", "min": 100, "max": 200, "posts": 5, "delay": 30, "expiry": "31/12/2026"},
    "Web Traffic": {
        "link": "https://x/16",
        "quantity": 100,
        "country": "US",
        "device": 1,
        "type_of_traffic": 1,
        "google_keyword": "smm panel",
    },
    "SEO": {"link": "https://x/17", "quantity": 100, "keywords": ["one", "two"]},
}


@pytest.fixture
def every_type_panel(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxPanel]:
    """A sandbox selling one service of every order type, besides the real catalogue."""
    extra = [
        {
            "service": 90_000 + n,
            "name": f"{name} test",
            "type": name,
            "category": "Every type",
            "rate": "1.00",
            "min": 10,
            "max": 10_000,
            "refill": False,
            "cancel": False,
            "dripfeed": True,
        }
        for n, name in enumerate(TYPE_PARAMS)
    ]
    with SandboxPanel(speed=1000.0, catalogue=[*default_catalogue().services, *extra]) as sandbox:
        monkeypatch.setenv(CONN_ENV_VAR, sandbox.connection_json())
        yield sandbox


def test_every_order_types_parameters_reach_the_panel(every_type_panel: SandboxPanel) -> None:
    assert {name.lower() for name in TYPE_PARAMS} == set(ORDER_TYPES)
    hook = MirPanelHook()
    for n, (name, params) in enumerate(TYPE_PARAMS.items()):
        record = hook.add_order(90_000 + n, **params)
        held = every_type_panel.state.orders[record["order"]]
        sent = {key: "\n".join(value) if isinstance(value, list) else str(value) for key, value in params.items()}
        assert {key: str(value) for key, value in held.params.items()} == sent, name
        assert {key: cast(dict[str, Any], record)[key] for key in params} == {
            key: "\n".join(value) if isinstance(value, list) else value for key, value in params.items()
        }


# -- errors ------------------------------------------------------------------------------------


def test_each_error_class_is_raised_for_its_cause(
    hook: MirPanelHook, panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = default_service(panel)
    with pytest.raises(MirPanelAPIError, match="Incorrect service ID") as refused:
        hook.add_order(99_999_999, link="https://x", quantity=100)
    assert refused.value.panel_message == "Incorrect service ID" and refused.value.http_status == 200
    with pytest.raises(MirPanelAPIError, match="Incorrect order ID"):
        hook.get_order_status(123_456_789)
    pricey = next(
        s
        for s in panel.catalogue.services
        if s["type"] == "Default" and float(s["rate"]) * s["max"] / 1000 > panel.balance
    )
    with pytest.raises(MirPanelInsufficientFundsError):
        hook.add_order(pricey["service"], link="https://x", quantity=pricey["max"])
    with pytest.raises(MirPanelInputError):
        hook.add_order(service["service"], link="https://x", quantity=100, colour="red")
    panel.faults.add("balance", "body", body=b'{"balance": "lots"}')
    with pytest.raises(MirPanelResponseError, match="balance"):
        hook.get_balance()
    panel.faults.add("balance", "html", status=503, times=None)
    with pytest.raises(MirPanelTransientError):
        hook.get_balance()
    panel.faults.clear()
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps({**panel.connection(), "password": "wrong-key"}))
    with pytest.raises(MirPanelAuthError):
        MirPanelHook().get_balance()


def test_a_read_is_retried_through_5xx_429_and_html(hook: MirPanelHook, panel: SandboxPanel) -> None:
    panel.faults.add("balance", "http_status", status=502)
    panel.faults.add("balance", "rate_limit", retry_after=0)
    panel.faults.add("balance", "html", status=200)
    panel.faults.add("balance", "http_status", status=500, error="Internal Server Error")
    assert hook.get_balance()["balance"] == pytest.approx(1000.0)
    assert [entry.status for entry in panel.requests] == [502, 429, 200, 500, 200]


def test_an_add_whose_reply_was_dropped_is_not_resent(hook: MirPanelHook, panel: SandboxPanel) -> None:
    service = default_service(panel)
    panel.faults.add("add", "drop_after_processing")
    with pytest.raises(MirPanelAmbiguousOrderError) as caught:
        hook.add_order(service["service"], link="https://example.com/lost", quantity=service["min"])
    assert panel.count("add") == 1 and len(panel.state.orders) == 1
    assert caught.value.params == {
        "service": str(service["service"]),
        "link": "https://example.com/lost",
        "quantity": str(service["min"]),
    }


def test_an_add_turned_away_with_429_is_sent_again_and_placed_once(hook: MirPanelHook, panel: SandboxPanel) -> None:
    service = default_service(panel)
    panel.faults.add("add", "rate_limit", retry_after=0, times=2)
    record = hook.add_order(service["service"], link="https://example.com/429", quantity=service["min"])
    assert panel.count("add") == 3 and list(panel.state.orders) == [record["order"]]


def test_an_add_behind_a_failing_gateway_is_ambiguous_and_sent_once(hook: MirPanelHook, panel: SandboxPanel) -> None:
    service = default_service(panel)
    panel.faults.add("add", "html", status=502, process=True)
    with pytest.raises(MirPanelAmbiguousOrderError):
        hook.add_order(service["service"], link="https://example.com/502", quantity=service["min"])
    assert panel.count("add") == 1 and len(panel.state.orders) == 1


def test_refill_and_cancel_batches_that_fail_become_per_id_errors(hook: MirPanelHook, panel: SandboxPanel) -> None:
    panel.faults.add("cancel", "http_status", status=503, times=None)
    records = hook.cancel_orders([1, 2])
    assert [r["cancel"] for r in records] == [False, False]
    assert all(str(r["error"]).startswith("outcome unknown") for r in records)
    assert panel.count("cancel") == 1


# -- secrets -----------------------------------------------------------------------------------


def test_the_key_is_absent_from_debug_logs_and_exception_texts(
    hook: MirPanelHook, panel: SandboxPanel, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    texts = [repr(hook)]
    service = default_service(panel)
    panel.faults.add("status", "http_status", status=503)
    hook.get_orders_status(place(hook, panel, 2))
    panel.faults.add("add", "drop_after_processing")
    for call in (
        lambda: hook.add_order(service["service"], link="https://x/lost", quantity=service["min"]),
        lambda: hook.get_order_status(1),
    ):
        with pytest.raises(Exception) as caught:
            call()
        texts += [str(caught.value), repr(caught.value)]
    texts += [record.getMessage() for record in caplog.records]
    texts += capsys.readouterr()  # Airflow's task loggers write to the captured stdout/stderr
    assert any("retry" in text for text in texts)
    assert not [text for text in texts if panel.api_key in text]


def exception_chain(error: BaseException | None) -> list[BaseException]:
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def test_transport_failures_do_not_carry_the_request_and_its_key_along(hook: MirPanelHook, panel: SandboxPanel) -> None:
    import requests

    service = default_service(panel)
    panel.faults.add("add", "drop_after_processing")
    with pytest.raises(MirPanelAmbiguousOrderError) as ambiguous:
        hook.add_order(service["service"], link="https://example.com/dropped", quantity=service["min"])
    panel.down()
    with pytest.raises(MirPanelTransientError) as refused:
        hook.get_balance()
    panel.up()
    for caught in (ambiguous.value, refused.value):
        chain = exception_chain(caught)
        assert not [error for error in chain if isinstance(error, requests.RequestException)]
        assert not [error for error in chain if panel.api_key in repr(vars(error))]
