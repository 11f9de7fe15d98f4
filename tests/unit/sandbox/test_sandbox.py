"""The sandbox panel over real HTTP: reply shapes, panel rules, lifecycle, faults, log and CLI."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from airflow_provider_mirpanel.sandbox import (
    CONN_ENV_VAR,
    Catalogue,
    FaultKind,
    Lifecycle,
    SandboxPanel,
    default_catalogue,
)
from airflow_provider_mirpanel.sandbox.__main__ import _parser
from airflow_provider_mirpanel.sandbox.panel import DEFAULT_SPEED

ROOT = Path(__file__).resolve().parents[3]

# A small catalogue in the real format (rate as a string, min/max as ints, JSON booleans).
CATALOGUE: list[dict[str, Any]] = [
    {
        "service": 1,
        "name": "Followers",
        "type": "Default",
        "category": "First",
        "rate": "0.90",
        "min": 50,
        "max": 10000,
        "dripfeed": False,
        "refill": True,
        "cancel": True,
    },
    {
        "service": 2,
        "name": "Comments",
        "type": "Custom Comments",
        "category": "Second",
        "rate": "8",
        "min": 10,
        "max": 1500,
        "dripfeed": False,
        "refill": False,
        "cancel": True,
    },
    {
        "service": 3,
        "name": "Package",
        "type": "Package",
        "category": "Third",
        "rate": "2.5",
        "min": 1,
        "max": 1,
        "dripfeed": False,
        "refill": False,
        "cancel": False,
    },
    {
        "service": 4,
        "name": "Likes",
        "type": "Default",
        "category": "First",
        "rate": "1.00",
        "min": 10,
        "max": 1000,
        "dripfeed": False,
        "refill": False,
        "cancel": False,
    },
]
# Deterministic: nothing ends Partial or Rejected unless a test asks for it.
STEADY = Lifecycle(
    pending_seconds=60,
    units_per_second=10,
    max_run_seconds=300,
    partial_every=0,
    reject_refill_every=0,
    refill_pending_seconds=30,
    refill_run_seconds=60,
)
STATUS_KEYS = {"charge", "start_count", "status", "remains", "currency"}

Call = Callable[..., requests.Response]


@pytest.fixture
def frozen() -> Iterator[SandboxPanel]:
    """A panel whose clock only moves with advance(), selling CATALOGUE; order IDs from 1000."""
    with SandboxPanel(speed=0, catalogue=CATALOGUE, lifecycle=STEADY, first_order_id=1000) as sandbox:
        yield sandbox


def caller(panel: SandboxPanel, session: requests.Session | None = None) -> Call:
    """post(action=..., **params) with the panel's key, through one keep-alive session."""
    http = session or requests.Session()

    def post(timeout: float = 5, **form: Any) -> requests.Response:
        return http.post(panel.url, data={"key": panel.api_key, **form}, timeout=timeout)

    return post


@pytest.fixture
def call(frozen: SandboxPanel) -> Iterator[Call]:
    with requests.Session() as session:
        yield caller(frozen, session)


def add(call: Call, service: int = 1, link: str = "https://insta.example/p/1", **params: Any) -> int:
    """Place an order (1000 units of the Default services unless told) and return its ID."""
    if CATALOGUE[service - 1]["type"] == "Default":
        params.setdefault("quantity", 1000)
    reply = call(action="add", service=service, link=link, **params).json()
    assert set(reply) == {"order"}, reply
    return int(reply["order"])


# -- protocol basics --------------------------------------------------------------------------


def test_services_is_the_packaged_real_catalogue_as_loaded(panel: SandboxPanel) -> None:
    reply = caller(panel)(action="services")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    services = reply.json()
    assert services == default_catalogue().services
    assert len(services) == 4156
    first = services[0]
    assert isinstance(first["rate"], str) and isinstance(first["min"], int) and isinstance(first["refill"], bool)


def test_a_custom_catalogue_is_served_as_given(call: Call) -> None:
    assert call(action="services").json() == CATALOGUE


def test_balance_is_a_string_with_five_decimals(call: Call) -> None:
    assert call(action="balance").json() == {"balance": "1000.00000", "currency": "USD"}


@pytest.mark.parametrize("key", [None, "", "not-the-key"])
def test_a_bad_or_missing_key_is_refused_with_http_200(frozen: SandboxPanel, key: str | None) -> None:
    form = {"action": "balance"} if key is None else {"action": "balance", "key": key}
    reply = requests.post(frozen.url, data=form, timeout=5)
    assert (reply.status_code, reply.json()) == (200, {"error": "Invalid API key"})


def test_the_key_in_the_query_string_is_not_read(frozen: SandboxPanel) -> None:
    reply = requests.post(frozen.url, params={"key": frozen.api_key}, data={"action": "balance"}, timeout=5)
    assert reply.json() == {"error": "Invalid API key"}


@pytest.mark.parametrize("form", [{}, {"action": ""}, {"action": "withdraw"}])
def test_an_unknown_or_missing_action_is_an_incorrect_request(call: Call, form: dict[str, str]) -> None:
    reply = call(**form)
    assert (reply.status_code, reply.json()) == (200, {"error": "Incorrect request"})


@pytest.mark.parametrize(
    ("action", "field"),
    [("status", "orders"), ("refill", "orders"), ("refill_status", "refills"), ("cancel", "orders")],
)
def test_more_than_100_ids_is_an_incorrect_request(call: Call, action: str, field: str) -> None:
    ids = ",".join(str(n) for n in range(1, 102))
    assert call(action=action, **{field: ids}).json() == {"error": "Incorrect request"}
    assert "error" not in call(action=action, **{field: ids.rsplit(",", 1)[0]}).json()


def test_the_root_path_and_multipart_forms_are_accepted(frozen: SandboxPanel) -> None:
    root = frozen.url.removesuffix("/api/v2") + "/"
    form = {"key": frozen.api_key, "action": "balance"}
    assert requests.post(root, data=form, timeout=5).json()["currency"] == "USD"
    multipart = {name: (None, value) for name, value in form.items()}
    assert requests.post(frozen.url, files=multipart, timeout=5).json()["currency"] == "USD"


def test_other_methods_and_paths_are_refused(frozen: SandboxPanel) -> None:
    get = requests.get(frozen.url, params={"key": frozen.api_key, "action": "balance"}, timeout=5)
    assert (get.status_code, get.headers["Allow"]) == (405, "POST")
    assert requests.post(frozen.url + "/x", data={"action": "balance"}, timeout=5).status_code == 404


# -- add --------------------------------------------------------------------------------------


def test_add_replies_an_int_order_id_and_charges_rate_per_thousand(frozen: SandboxPanel, call: Call) -> None:
    reply = call(action="add", service=1, link="https://insta.example/p/1", quantity=1500)
    assert reply.json() == {"order": 1000}
    assert call(action="add", service=1, link="https://insta.example/p/2", quantity=50).json() == {"order": 1001}
    assert call(action="balance").json()["balance"] == "998.60500"  # 1000 - 1.35 - 0.045
    order = frozen.state.orders[1000]
    assert (order.service, order.link, order.quantity) == (1, "https://insta.example/p/1", 1500)
    assert order.params == {"link": "https://insta.example/p/1", "quantity": "1500"}
    assert (order.charge, order.status, order.remains, order.start_count) == (1.35, "Pending", 1500, 0)
    assert order.created == 0.0


def test_a_package_costs_its_rate_and_comments_are_charged_per_line(frozen: SandboxPanel, call: Call) -> None:
    package = add(call, service=3)
    comments = add(call, service=2, comments="\n".join(f"nice {n}" for n in range(20)))
    assert (frozen.state.orders[package].quantity, frozen.state.orders[package].charge) == (None, 2.5)
    assert (frozen.state.orders[comments].quantity, frozen.state.orders[comments].charge) == (20, 0.16)
    assert frozen.state.balance == pytest.approx(1000 - 2.5 - 0.16)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"link": "https://x/1", "quantity": "100"}, "Incorrect service ID"),
        ({"service": "999", "link": "https://x/1", "quantity": "100"}, "Incorrect service ID"),
        ({"service": "abc", "link": "https://x/1", "quantity": "100"}, "Incorrect service ID"),
        ({"service": "1", "quantity": "100"}, "Bad link"),
        ({"service": "1", "link": "  ", "quantity": "100"}, "Bad link"),
        ({"service": "1", "link": "https://x/1", "quantity": "49"}, "Quantity less than minimal 50"),
        ({"service": "1", "link": "https://x/1", "quantity": "10001"}, "Quantity more than maximum 10000"),
        ({"service": "1", "link": "https://x/1"}, "Incorrect request: missing 'quantity'"),
        ({"service": "1", "link": "https://x/1", "quantity": "ten"}, "Incorrect request: quantity must be"),
        ({"service": "1", "link": "https://x/1", "quantity": "100", "runs": "5"}, "Incorrect request: drip-feed"),
        ({"service": "2", "link": "https://x/1"}, "Incorrect request: missing 'comments'"),
        ({"service": "3", "link": "https://x/1", "quantity": "5"}, "Incorrect request: Package services do not"),
    ],
)
def test_add_refuses_invalid_orders_with_panel_texts(
    frozen: SandboxPanel, call: Call, params: dict[str, str], expected: str
) -> None:
    reply = call(action="add", **params)
    assert reply.status_code == 200
    assert set(reply.json()) == {"error"}
    assert reply.json()["error"].startswith(expected)
    assert frozen.state.orders == {}
    assert frozen.state.balance == 1000.0


def test_add_without_funds_is_refused_and_charges_nothing() -> None:
    with SandboxPanel(speed=0, catalogue=CATALOGUE, balance=1.0, first_order_id=1000) as panel:
        call = caller(panel)
        assert call(action="add", service=1, link="https://x/1", quantity=1000).json() == {"order": 1000}
        reply = call(action="add", service=1, link="https://x/2", quantity=1000).json()
        assert reply == {"error": "Not enough funds on balance"}
        assert list(panel.state.orders) == [1000]
        assert call(action="balance").json()["balance"] == "0.10000"


# -- status and lifecycle ---------------------------------------------------------------------


def test_status_single_has_the_seed_shape(call: Call) -> None:
    order = add(call, quantity=1000)
    assert call(action="status", order=order).json() == {
        "charge": "0.90000",
        "start_count": "0",
        "status": "Pending",
        "remains": "1000",
        "currency": "USD",
    }


def test_status_of_an_unknown_order(call: Call) -> None:
    assert call(action="status", order=4242).json() == {"error": "Incorrect order ID"}
    assert call(action="status", order="abc").json() == {"error": "Incorrect order ID"}


def test_status_multi_is_an_object_keyed_by_id_with_per_id_errors(call: Call) -> None:
    first, second = add(call), add(call, quantity=100)
    reply = call(action="status", orders=f"{first},10,{second}").json()
    assert list(reply) == [str(first), "10", str(second)]
    assert reply["10"] == {"error": "Incorrect order ID"}
    assert set(reply[str(first)]) == STATUS_KEYS
    assert reply[str(second)]["remains"] == "100"
    assert all(isinstance(value, str) for value in reply[str(first)].values())


def test_an_order_goes_pending_in_progress_completed_on_the_clock(frozen: SandboxPanel, call: Call) -> None:
    order = add(call, quantity=1000)  # 60 s pending, then 100 s at 10 units/s

    def status() -> dict[str, str]:
        return call(action="status", order=order).json()

    assert (status()["status"], status()["remains"], status()["start_count"]) == ("Pending", "1000", "0")
    frozen.advance(60)
    assert (status()["status"], status()["remains"]) == ("In progress", "1000")
    assert status()["start_count"] != "0"
    frozen.advance(40)
    assert (status()["status"], status()["remains"]) == ("In progress", "600")
    frozen.advance(60)
    assert (status()["status"], status()["remains"], status()["charge"]) == ("Completed", "0", "0.90000")


def test_long_orders_are_capped_at_max_run_seconds(frozen: SandboxPanel, call: Call) -> None:
    order = add(call, quantity=10000)  # 1000 s at 10/s, capped at 300 s
    frozen.advance(60 + 300)
    assert frozen.state.orders[order].status == "Completed"


def test_the_fast_clock_completes_orders_in_real_time(panel: SandboxPanel) -> None:
    call = caller(panel)
    service = panel.catalogue.first_of_type("Default")
    order = call(action="add", service=service["service"], link="https://x/1", quantity=service["min"]).json()["order"]
    deadline = time.monotonic() + 5
    while call(action="status", order=order).json()["status"] != "Completed":
        assert time.monotonic() < deadline, "the order did not complete on the fast clock"
        time.sleep(0.02)


def test_at_the_default_speed_orders_outlast_a_schedulers_first_check() -> None:
    """``make sandbox`` runs at the default speed: the example campaign's orders stay Pending for half a
    minute (a scheduler needs seconds from placing them to the sensor's check, which then defers) and
    end within the first few polls of the example DAGs' 60 s poke interval."""
    rows = list(csv.DictReader((ROOT / "dags_examples" / "data" / "campaign.csv").open()))
    with SandboxPanel() as panel:
        call = caller(panel)
        orders = [
            panel.state.orders[
                int(
                    call(action="add", service=row["service"], link=row["link"], quantity=row["quantity"]).json()[
                        "order"
                    ]
                )
            ]
            for row in rows
        ]
        assert {order.status for order in orders} == {"Pending"}

    assert panel.speed == DEFAULT_SPEED == _parser().parse_args([]).speed
    for order in orders:
        pending = panel.state.lifecycle.pending_seconds / panel.speed
        total = (order.finishes_at - order.created) / panel.speed
        assert pending >= 30 and 40 <= total <= 180, (order.quantity, pending, total)


def test_every_nth_order_ends_partial_with_the_rest_refunded() -> None:
    lifecycle = Lifecycle(pending_seconds=60, units_per_second=10, partial_every=2, partial_share=0.1)
    with SandboxPanel(speed=0, catalogue=CATALOGUE, lifecycle=lifecycle) as panel:
        call = caller(panel)
        full, partial = add(call, quantity=1000), add(call, quantity=1000)
        assert call(action="balance").json()["balance"] == "998.20000"
        panel.advance(60 + 100)
        reply = call(action="status", orders=f"{full},{partial}").json()
        assert (reply[str(full)]["status"], reply[str(full)]["remains"]) == ("Completed", "0")
        assert reply[str(partial)] == {
            "charge": "0.81000",
            "start_count": reply[str(partial)]["start_count"],
            "status": "Partial",
            "remains": "100",
            "currency": "USD",
        }
        assert call(action="balance").json()["balance"] == "998.29000"  # 0.09 back for 100 undelivered


def test_set_order_forces_any_status_and_remains(frozen: SandboxPanel, call: Call) -> None:
    order = add(call, quantity=1000)
    frozen.set_order(order, status="Partial", remains=157)
    assert call(action="status", order=order).json()["status"] == "Partial"
    assert call(action="status", order=order).json()["charge"] == "0.75870"  # 0.9 * 843 / 1000
    assert call(action="balance").json()["balance"] == "999.24130"  # 1000 - 0.9 + 0.1413 back
    frozen.set_order(order, status="processing", remains="Unknown")
    reply = call(action="status", order=order).json()
    assert (reply["status"], reply["remains"], reply["charge"]) == ("processing", "Unknown", "0.90000")
    assert frozen.state.balance == 999.1


def test_complete_all_ends_every_order(frozen: SandboxPanel, call: Call) -> None:
    orders = [add(call, link=f"https://x/{n}") for n in range(3)]
    frozen.complete_all()
    assert {frozen.state.orders[order].status for order in orders} == {"Completed"}


# -- refills ----------------------------------------------------------------------------------


def test_refill_single_and_its_status_progress(frozen: SandboxPanel, call: Call) -> None:
    order = add(call)
    frozen.complete_all()
    assert call(action="refill", order=order).json() == {"refill": "1"}
    assert call(action="refill_status", refill=1).json() == {"status": "Pending"}
    frozen.advance(30)
    assert call(action="refill_status", refill=1).json() == {"status": "In progress"}
    frozen.advance(60)
    assert call(action="refill_status", refill=1).json() == {"status": "Completed"}
    assert frozen.state.refills[1].order == order


def test_refill_rules(frozen: SandboxPanel, call: Call) -> None:
    running, no_refill, partial = add(call), add(call, service=4), add(call)
    frozen.set_order(partial, status="Partial", remains=10)
    frozen.set_order(no_refill, status="Completed")
    assert call(action="refill", order=running).json() == {"error": "Order not eligible for refill."}
    assert call(action="refill", order=no_refill).json() == {"error": "Order not eligible for refill."}
    assert call(action="refill", order=9999).json() == {"error": "Incorrect order ID"}
    assert call(action="refill", order=partial).json() == {"refill": "1"}
    assert call(action="refill").json() == {"error": "Incorrect request"}


def test_refill_multi_and_refill_status_multi_are_lists(frozen: SandboxPanel, call: Call) -> None:
    first, second = add(call, link="https://x/1"), add(call, link="https://x/2")
    frozen.complete_all()
    reply = call(action="refill", orders=f"{first},{second},3").json()
    assert reply == [
        {"order": first, "refill": 1},
        {"order": second, "refill": 2},
        {"order": 3, "refill": {"error": "Incorrect order ID"}},
    ]
    frozen.set_refill(2, "Rejected")
    assert call(action="refill_status", refills="1,2,3").json() == [
        {"refill": 1, "status": "Pending"},
        {"refill": 2, "status": "Rejected"},
        {"refill": 3, "status": {"error": "Refill not found"}},
    ]
    assert call(action="refill_status", refill=3).json() == {"error": "Refill not found"}


def test_every_nth_refill_is_rejected() -> None:
    lifecycle = Lifecycle(reject_refill_every=2, refill_pending_seconds=30)
    with SandboxPanel(speed=0, catalogue=CATALOGUE, lifecycle=lifecycle) as panel:
        call = caller(panel)
        order = add(call)
        panel.complete_all()
        refills = [int(call(action="refill", order=order).json()["refill"]) for _ in range(2)]
        panel.advance(30)
        assert [panel.state.refills[refill].status for refill in refills] == ["In progress", "Rejected"]


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_replies_a_list_and_refunds_a_pending_order(frozen: SandboxPanel, call: Call) -> None:
    order = add(call, quantity=1000)
    assert call(action="cancel", orders=f"9,{order}").json() == [
        {"order": 9, "cancel": {"error": "Incorrect order ID"}},
        {"order": order, "cancel": 1},
    ]
    assert call(action="status", order=order).json() == {
        "charge": "0.00000",
        "start_count": "0",
        "status": "Canceled",
        "remains": "1000",
        "currency": "USD",
    }
    assert call(action="balance").json()["balance"] == "1000.00000"


def test_cancel_in_progress_refunds_only_the_undelivered_part(frozen: SandboxPanel, call: Call) -> None:
    order = add(call, quantity=1000)
    frozen.advance(60 + 50)  # half delivered
    assert call(action="cancel", orders=str(order)).json() == [{"order": order, "cancel": 1}]
    reply = call(action="status", order=order).json()
    assert (reply["status"], reply["remains"], reply["charge"]) == ("Canceled", "500", "0.45000")
    assert frozen.state.balance == 999.55


def test_cancel_rules(frozen: SandboxPanel, call: Call) -> None:
    no_cancel, done = add(call, service=4), add(call)
    frozen.set_order(done, status="Completed")
    refused = {"error": "Cancel is not available for this order"}
    assert call(action="cancel", orders=f"{no_cancel},{done}").json() == [
        {"order": no_cancel, "cancel": refused},
        {"order": done, "cancel": refused},
    ]
    assert call(action="cancel", order=no_cancel).json() == {"error": "Incorrect request"}


# -- faults -----------------------------------------------------------------------------------


def test_http_status_fault_with_a_json_error_then_normal_replies(frozen: SandboxPanel, call: Call) -> None:
    fault = frozen.faults.add("balance", "http_status", status=503, times=2)
    replies = [call(action="balance") for _ in range(3)]
    assert [r.status_code for r in replies] == [503, 503, 200]
    assert replies[0].json() == {"error": "Service Unavailable"}
    assert (fault.matched, fault.applied) == (3, 2)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_http_status_fault_with_a_raw_body_processes_nothing(frozen: SandboxPanel, call: Call, status: int) -> None:
    frozen.faults.add("add", "http_status", status=status, body="upstream failed")
    reply = call(action="add", service=1, link="https://x/1", quantity=100)
    assert (reply.status_code, reply.text) == (status, "upstream failed")
    assert frozen.state.orders == {}


def test_http_status_fault_after_processing_places_the_order(frozen: SandboxPanel, call: Call) -> None:
    frozen.faults.add("add", "http_status", status=502, process=True)
    assert call(action="add", service=1, link="https://x/1", quantity=100).status_code == 502
    assert [order.link for order in frozen.state.orders.values()] == ["https://x/1"]
    assert frozen.requests[-1].created == [1000]


def test_rate_limit_with_and_without_retry_after(frozen: SandboxPanel, call: Call) -> None:
    frozen.faults.add("add", "rate_limit", retry_after=1)
    frozen.faults.add("add", "rate_limit")
    limited = call(action="add", service=1, link="https://x/1", quantity=100)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "1")
    assert limited.json() == {"error": "Too many requests"}
    bare = call(action="add", service=1, link="https://x/1", quantity=100)
    assert bare.status_code == 429 and "Retry-After" not in bare.headers
    assert frozen.state.orders == {}
    assert call(action="add", service=1, link="https://x/1", quantity=100).status_code == 200


@pytest.mark.parametrize(
    ("status", "marker"), [(503, "cf-error-code"), (522, "Connection timed out"), (200, "Just a moment...")]
)
def test_html_fault_serves_a_cloudflare_like_page(frozen: SandboxPanel, call: Call, status: int, marker: str) -> None:
    frozen.faults.add("status", "html", status=status)
    reply = call(action="status", order=1)
    assert reply.status_code == status
    assert reply.headers["Content-Type"].startswith("text/html")
    assert reply.text.startswith("<!DOCTYPE html>") and marker in reply.text and "Cloudflare" in reply.text


@pytest.mark.parametrize("body", [b"", b"  \n\t ", b'{"order": 12', b"\xff\xfe\x00garbage"])
def test_body_fault_replaces_the_reply_bytes(frozen: SandboxPanel, call: Call, body: bytes) -> None:
    frozen.faults.add("add", "body", body=body, process=True)
    reply = call(action="add", service=1, link="https://x/1", quantity=100)
    assert (reply.status_code, reply.content) == (200, body)
    assert len(frozen.state.orders) == 1


def test_body_fault_with_a_status(frozen: SandboxPanel, call: Call) -> None:
    frozen.faults.add("balance", "body", body=b"", status=502)
    assert (call(action="balance").status_code, call(action="balance").status_code) == (502, 200)


def test_error_fault_answers_a_panel_error_without_processing(frozen: SandboxPanel, call: Call) -> None:
    text = "You have active order with this link. Please wait until order being completed."
    frozen.faults.add("add", "error", error=text)
    reply = call(action="add", service=1, link="https://x/1", quantity=100)
    assert (reply.status_code, reply.json()) == (200, {"error": text})
    assert frozen.state.orders == {}
    assert frozen.requests[-1].processed is False


def test_drop_after_processing_creates_the_order_but_the_client_gets_no_reply(frozen: SandboxPanel, call: Call) -> None:
    frozen.faults.add("add", "drop_after_processing", when=lambda form: form["link"].endswith("/7"))
    assert "order" in call(action="add", service=1, link="https://x/6", quantity=100).json()
    with pytest.raises(requests.ConnectionError, match=r"RemoteDisconnected|without response"):
        call(action="add", service=1, link="https://x/7", quantity=100)
    assert [order.link for order in frozen.state.orders.values()] == ["https://x/6", "https://x/7"]
    entry = frozen.requests[-1]
    assert (entry.status, entry.fault, entry.created) == (None, "drop_after_processing", [1001])


def test_drop_closes_the_connection_without_processing(frozen: SandboxPanel, call: Call) -> None:
    frozen.faults.add("add", FaultKind.DROP)
    with pytest.raises(requests.ConnectionError):
        call(action="add", service=1, link="https://x/1", quantity=100)
    assert frozen.state.orders == {}


def test_delay_after_processing_makes_the_client_time_out_after_the_order_exists(
    frozen: SandboxPanel, call: Call
) -> None:
    frozen.faults.add("add", "delay_after_processing", seconds=5)
    with pytest.raises(requests.ReadTimeout):
        call(action="add", service=1, link="https://x/1", quantity=100, timeout=0.3)
    assert len(frozen.state.orders) == 1


def test_latency_fault_and_panel_latency_delay_replies(frozen: SandboxPanel, call: Call) -> None:
    frozen.faults.add("balance", "latency", seconds=0.3)
    started = time.monotonic()
    assert call(action="balance").status_code == 200
    assert time.monotonic() - started >= 0.3
    frozen.latency = 0.2
    started = time.monotonic()
    call(action="balance")
    assert time.monotonic() - started >= 0.2
    frozen.latency = 30
    with pytest.raises(requests.ReadTimeout):
        call(action="balance", timeout=0.3)
    frozen.latency = 0
    assert call(action="balance", timeout=10).status_code == 200  # no longer held (it would take 30 s)


def test_fault_matching_skip_times_any_action_and_predicates(frozen: SandboxPanel, call: Call) -> None:
    frozen.faults.add("balance", "http_status", status=500, skip=1)
    assert [call(action="balance").status_code for _ in range(3)] == [200, 500, 200]
    frozen.faults.clear()
    frozen.faults.add(None, "http_status", status=504, times=None)
    assert {call(action=action).status_code for action in ("balance", "services", "status")} == {504}
    frozen.faults.clear()
    frozen.faults.add(None, "http_status", status=500, when=lambda form: form["link"] == "x")  # KeyError: no match
    assert call(action="balance").status_code == 200


def test_fault_options_are_checked(frozen: SandboxPanel) -> None:
    with pytest.raises(ValueError):
        frozen.faults.add("add", "explode")
    with pytest.raises(TypeError, match="retry_after"):
        frozen.faults.add("add", "http_status", retry_after=3)
    with pytest.raises(TypeError, match="seconds"):
        frozen.faults.add("add", "latency")
    with pytest.raises(ValueError):
        frozen.faults.add("add", "drop", times=0)


def test_down_refuses_connections_and_up_comes_back_on_the_same_port(frozen: SandboxPanel, call: Call) -> None:
    port = frozen.port
    assert call(action="balance").status_code == 200
    frozen.down()
    with pytest.raises(requests.ConnectionError):
        call(action="balance")
    with pytest.raises(requests.ConnectionError):
        requests.post(frozen.url, data={"action": "balance"}, timeout=2)
    frozen.up()
    assert (frozen.port, call(action="balance").status_code) == (port, 200)
    with frozen.outage(), pytest.raises(requests.ConnectionError):
        call(action="balance")
    assert call(action="balance").status_code == 200


def test_down_for_a_while_comes_back_by_itself(frozen: SandboxPanel, call: Call) -> None:
    started = time.monotonic()
    frozen.down(seconds=1.0)
    with pytest.raises(requests.ConnectionError):
        call(action="balance")
    while True:  # back by itself: ask until it answers
        try:
            status = call(action="balance").status_code
            break
        except requests.ConnectionError:
            assert time.monotonic() - started < 30, "the panel did not come back"
            time.sleep(0.02)
    assert status == 200 and time.monotonic() - started >= 1.0


# -- request log and connections --------------------------------------------------------------


def test_the_request_log_records_each_request(frozen: SandboxPanel, call: Call) -> None:
    order = add(call, link="https://x/1")
    call(action="status", orders=f"{order},7,abc")
    frozen.faults.add("balance", "rate_limit")
    call(action="balance")
    add_entry, status_entry, limited = frozen.requests
    assert (add_entry.action, add_entry.created, add_entry.ids, add_entry.status) == ("add", [order], [], 200)
    assert add_entry.form == {"action": "add", "service": "1", "link": "https://x/1", "quantity": "1000"}
    assert (status_entry.ids, status_entry.created, status_entry.fault) == ([order, 7], [], None)
    assert (limited.status, limited.fault, limited.processed) == (429, "rate_limit", False)
    assert re.fullmatch(r"127\.0\.0\.1:\d+", add_entry.peer)
    assert (frozen.count(), frozen.count("add"), frozen.count("refill")) == (3, 1, 0)
    frozen.requests.clear()
    assert frozen.count() == 0


def test_a_keep_alive_session_is_one_connection(frozen: SandboxPanel) -> None:
    with requests.Session() as session:
        call = caller(frozen, session)
        for _ in range(10):
            assert call(action="balance").status_code == 200
    assert frozen.connections == 1
    for _ in range(3):
        requests.post(frozen.url, data={"key": frozen.api_key, "action": "balance"}, timeout=5)
    assert frozen.connections == 4
    assert len({entry.peer for entry in frozen.requests}) == 4


# -- IDs across restarts ----------------------------------------------------------------------


def issued(panel: SandboxPanel) -> tuple[list[int], list[int]]:
    """Orders placed over HTTP and in bulk, and refills of them: the IDs a panel hands out."""
    call = caller(panel)
    placed = [add(call, link=f"https://x/{n}") for n in range(3)]
    bulk = panel.create_orders(5, service=1, status="Completed")
    refills = [int(call(action="refill", order=order).json()["refill"]) for order in bulk[:2]]
    return placed + bulk, refills


def test_a_restarted_panel_never_hands_out_an_id_it_handed_out_before() -> None:
    with SandboxPanel(speed=0, catalogue=CATALOGUE) as first:
        orders, refills = issued(first)
    with SandboxPanel(speed=0, catalogue=CATALOGUE) as second:
        later_orders, later_refills = issued(second)

    assert orders == sorted(orders) and later_orders == sorted(later_orders)
    assert min(later_orders) > max(orders) and min(later_refills) > max(refills)
    assert 10**13 < min(orders) < 2**53  # microseconds since 2026-01-01: exact in any JSON reader


def test_with_an_id_file_a_restarted_panel_continues_its_numbering(tmp_path: Path) -> None:
    id_file = tmp_path / "sandbox-ids.json"
    with SandboxPanel(speed=0, catalogue=CATALOGUE, id_file=id_file) as first:
        orders, refills = issued(first)
        assert json.loads(id_file.read_text()) == {"order": 1008, "refill": 3}  # written as IDs are handed out
    with SandboxPanel(speed=0, catalogue=CATALOGUE, id_file=id_file) as second:
        later_orders, later_refills = issued(second)

    assert (orders, refills) == (list(range(1000, 1008)), [1, 2])
    assert (later_orders, later_refills) == (list(range(1008, 1016)), [3, 4])


def test_first_ids_give_the_same_ids_in_every_run() -> None:
    runs = []
    for _ in range(2):
        with SandboxPanel(speed=0, catalogue=CATALOGUE, first_order_id=500, first_refill_id=7) as panel:
            runs.append(issued(panel))
    assert runs[0] == runs[1] == (list(range(500, 508)), [7, 8])


def test_a_restarted_cli_sandbox_never_hands_out_an_id_it_handed_out_before(tmp_path: Path) -> None:
    def order_from_a_fresh_sandbox(*options: str) -> int:
        port = _free_port()
        command = [
            sys.executable,
            "-m",
            "airflow_provider_mirpanel.sandbox",
            "--port",
            str(port),
            "--key",
            "k",
            *options,
        ]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
            try:
                assert process.stdout is not None and "listening" in process.stdout.readline()
                service = default_catalogue().first_of_type("Default")
                reply = requests.post(
                    f"http://127.0.0.1:{port}/api/v2",
                    timeout=5,
                    data={
                        "key": "k",
                        "action": "add",
                        "service": service["service"],
                        "link": "https://x/1",
                        "quantity": service["min"],
                    },
                )
                return int(reply.json()["order"])
            finally:
                process.terminate()
                process.wait(10)

    clock = [order_from_a_fresh_sandbox() for _ in range(2)]
    counted = [order_from_a_fresh_sandbox("--id-file", str(tmp_path / "ids.json")) for _ in range(2)]

    assert clock[1] > clock[0]
    assert counted == [1000, 1001]


# -- Airflow connection -----------------------------------------------------------------------


def test_the_panel_fixture_sets_the_default_connection(panel: SandboxPanel) -> None:
    assert json.loads(os.environ[CONN_ENV_VAR]) == {
        "conn_type": "mirpanel",
        "host": panel.url,
        "password": panel.api_key,
        "extra": {"rate_limits": False},
    }
    assert panel.env() == {CONN_ENV_VAR: os.environ[CONN_ENV_VAR]}


def test_the_connection_uri_and_json_read_back_in_airflow() -> None:
    from airflow.models.connection import Connection

    with SandboxPanel(api_key="k/+ y@z", catalogue=CATALOGUE) as panel:
        for conn in (
            Connection(conn_id="a", uri=panel.connection_uri()),
            Connection.from_json(panel.connection_json(), conn_id="b"),
        ):
            assert (conn.conn_type, conn.host, conn.password) == ("mirpanel", panel.url, "k/+ y@z")
            assert conn.extra_dejson["rate_limits"] in (False, "false")  # JSON / URI


def test_only_loopback_hosts_are_allowed() -> None:
    for host in ("0.0.0.0", "192.168.1.10", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            SandboxPanel(host=host)


# -- load -------------------------------------------------------------------------------------


def test_create_orders_bulk_inserts_100000_orders(frozen: SandboxPanel, call: Call) -> None:
    started = time.monotonic()
    ids = frozen.create_orders(100_000, service=1, status="Completed")
    assert time.monotonic() - started < 10
    assert (len(ids), len(frozen.state.orders), ids[0], ids[-1]) == (100_000, 100_000, 1000, 100_999)
    assert frozen.state.orders[ids[5]].link == f"https://example.com/sandbox/{ids[5]}"
    reply = call(action="status", orders=",".join(map(str, ids[-100:]))).json()
    assert len(reply) == 100 and {entry["status"] for entry in reply.values()} == {"Completed"}
    assert frozen.state.balance == 1000.0


def test_bulk_orders_progress_on_the_clock_without_touching_the_balance() -> None:
    with SandboxPanel(speed=0, catalogue=CATALOGUE, lifecycle=Lifecycle(partial_every=2)) as panel:
        ids = panel.create_orders(4, quantity=100)
        assert {panel.state.orders[order].status for order in ids} == {"Pending"}
        panel.advance(3600)
        assert [panel.state.orders[order].status for order in ids] == ["Completed", "Partial"] * 2
        panel.set_order(ids[0], status="Canceled")
        assert panel.state.balance == 1000.0


@pytest.mark.slow
def test_load_1000_status_requests_and_2000_concurrent_adds(frozen: SandboxPanel) -> None:
    ids = frozen.create_orders(100_000)

    async def run() -> tuple[list[Any], list[Any]]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def post(**form: Any) -> Any:
                async with session.post(frozen.url, data={"key": frozen.api_key, **form}) as reply:
                    return await reply.json()

            batches = [ids[i : i + 100] for i in range(0, 100_000, 100)]
            limiter = asyncio.Semaphore(50)

            async def status(batch: list[int]) -> Any:
                async with limiter:
                    return await post(action="status", orders=",".join(map(str, batch)))

            statuses = await asyncio.gather(*(status(batch) for batch in batches))
            adds = await asyncio.gather(
                *(post(action="add", service=4, link=f"https://x/{n}", quantity=10) for n in range(2000))
            )
            return statuses, adds

    started = time.monotonic()
    statuses, adds = asyncio.run(run())
    elapsed = time.monotonic() - started
    assert sum(len(reply) for reply in statuses) == 100_000
    assert all("error" not in entry for reply in statuses for entry in reply.values())
    assert len({reply["order"] for reply in adds}) == 2000
    assert len(frozen.state.orders) == 102_000
    assert frozen.connections >= 2000  # the adds really were concurrent, each on its own connection
    assert frozen.state.balance == pytest.approx(1000 - 2000 * 0.01)
    assert elapsed < 60


# -- CLI --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow  # an Airflow run or a CLI process: seconds
def test_the_cli_serves_and_prints_url_key_and_connection() -> None:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "airflow_provider_mirpanel.sandbox",
        "--port",
        str(port),
        "--key",
        "demo-key",
        "--balance",
        "50",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(3)]
            url = f"http://127.0.0.1:{port}/api/v2"
            assert url in lines[0]
            assert "demo-key" in lines[1]
            name, _, value = lines[2].strip().removeprefix("export ").partition("=")
            assert name == CONN_ENV_VAR
            assert json.loads(value.strip("'")) == {
                "conn_type": "mirpanel",
                "host": url,
                "password": "demo-key",
                "extra": {"rate_limits": False},
            }
            reply = requests.post(url, data={"key": "demo-key", "action": "balance"}, timeout=5)
            assert reply.json() == {"balance": "50.00000", "currency": "USD"}
        finally:
            process.terminate()
        assert process.wait(10) == 0


@pytest.mark.slow  # an Airflow run or a CLI process: seconds
def test_the_cli_refuses_a_non_loopback_host() -> None:
    command = [sys.executable, "-m", "airflow_provider_mirpanel.sandbox", "--host", "0.0.0.0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "loopback" in result.stderr


def test_a_catalogue_object_can_be_shared() -> None:
    catalogue = Catalogue(CATALOGUE)
    assert catalogue.by_id[3]["type"] == "Package" and len(catalogue) == 4
    with pytest.raises(ValueError):
        Catalogue([{"name": "no id"}])
