"""The protocol module on the seed document's replies and the rules it owns (no I/O)."""

from __future__ import annotations

import json
from importlib import resources

import pandas as pd
import pytest

from airflow_provider_mirpanel import protocol
from airflow_provider_mirpanel.exceptions import (
    MirPanelAPIError,
    MirPanelAuthError,
    MirPanelInputError,
    MirPanelInsufficientFundsError,
    MirPanelResponseError,
    MirPanelTransientError,
)
from airflow_provider_mirpanel.protocol import Action


def decode(body: object, status: int = 200, action: Action = Action.STATUS) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return protocol.decode_reply(raw, status, action)


SEED_STATUS = {
    "1": {"charge": "0.27819", "start_count": "3572", "status": "Partial", "remains": "157", "currency": "USD"},
    "10": {"error": "Incorrect order ID"},
    "100": {"charge": "1.44219", "start_count": "234", "status": "In progress", "remains": "10", "currency": "USD"},
}


def test_seed_multi_status_becomes_typed_records_in_request_order() -> None:
    records = protocol.parse_orders_status(decode(SEED_STATUS), [100, 10, 1])
    assert records == [
        {
            "order": 100,
            "status": "In progress",
            "charge": 1.44219,
            "start_count": 234,
            "remains": 10,
            "currency": "USD",
            "error": None,
        },
        {
            "order": 10,
            "status": None,
            "charge": None,
            "start_count": None,
            "remains": None,
            "currency": None,
            "error": "Incorrect order ID",
        },
        {
            "order": 1,
            "status": "Partial",
            "charge": 0.27819,
            "start_count": 3572,
            "remains": 157,
            "currency": "USD",
            "error": None,
        },
    ]
    frame = pd.DataFrame(records)
    assert list(frame.columns) == list(protocol.ORDER_STATUS_FIELDS)


def test_status_list_shape_with_nested_errors_is_read_too() -> None:
    payload = [
        {"order": 5, "status": "cancelled", "charge": 1, "remains": "Unknown"},
        {"order": 6, "status": {"error": "Incorrect order ID"}},
    ]
    records = protocol.parse_orders_status(payload, [5, 6, 7])
    assert [r["status"] for r in records] == ["Canceled", None, None]
    assert records[0]["charge"] == 1.0 and records[0]["remains"] is None
    assert records[1]["error"] == "Incorrect order ID"
    assert records[2]["error"] == protocol.MISSING_FROM_REPLY


def test_seed_single_replies() -> None:
    status = protocol.parse_order_status(
        {"charge": "0.27819", "start_count": "3572", "status": "Partial", "remains": "157", "currency": "USD"}, 7
    )
    assert status["order"] == 7 and status["remains"] == 157 and status["error"] is None
    assert protocol.parse_refill({"refill": "1"}, 7) == {"order": 7, "refill": 1, "error": None}
    assert protocol.parse_refill_status({"status": "Completed"}, 1) == {
        "refill": 1,
        "status": "Completed",
        "error": None,
    }
    assert protocol.parse_balance({"balance": "100.84292", "currency": "USD"}) == {
        "balance": 100.84292,
        "currency": "USD",
    }
    assert protocol.parse_add({"order": 23501}, {"service": "1", "link": "x", "quantity": "100"}) == {
        "order": 23501,
        "service": 1,
        "link": "x",
        "quantity": 100,
    }


def test_seed_multi_refill_refill_status_and_cancel() -> None:
    refills = protocol.parse_refills(
        [{"order": 1, "refill": 1}, {"order": 2, "refill": 2}, {"order": 3, "refill": {"error": "Incorrect order ID"}}],
        [1, 2, 3],
    )
    assert refills == [
        {"order": 1, "refill": 1, "error": None},
        {"order": 2, "refill": 2, "error": None},
        {"order": 3, "refill": None, "error": "Incorrect order ID"},
    ]
    statuses = protocol.parse_refills_status(
        [
            {"refill": 1, "status": "Completed"},
            {"refill": 2, "status": "Rejected"},
            {"refill": 3, "status": {"error": "Refill not found"}},
        ],
        [1, 2, 3],
    )
    assert [(r["status"], r["error"]) for r in statuses] == [
        ("Completed", None),
        ("Rejected", None),
        (None, "Refill not found"),
    ]
    cancels = protocol.parse_cancels(
        [{"order": 9, "cancel": {"error": "Incorrect order ID"}}, {"order": 2, "cancel": 1}], [2, 9]
    )
    assert cancels == [
        {"order": 2, "cancel": True, "error": None},
        {"order": 9, "cancel": False, "error": "Incorrect order ID"},
    ]


def test_object_keyed_shapes_of_list_actions_are_read() -> None:
    assert protocol.parse_refills({"1": {"refill": "4"}, "2": {"error": "Order not eligible for refill."}}, [1, 2]) == [
        {"order": 1, "refill": 4, "error": None},
        {"order": 2, "refill": None, "error": "Order not eligible for refill."},
    ]
    assert protocol.parse_cancels({"3": 1}, [3])[0]["cancel"] is True


def test_real_catalogue_parses_into_4156_typed_records() -> None:
    raw = (resources.files("airflow_provider_mirpanel.sandbox") / "data" / "services-catalogue.json").read_bytes()
    records = protocol.parse_services(protocol.decode_reply(raw, 200, Action.SERVICES))
    assert len(records) == 4156
    first = records[0]
    assert isinstance(first["rate"], float) and isinstance(first["min"], int) and isinstance(first["refill"], bool)
    assert max(r["max"] or 0 for r in records) == 2147483647
    frame = pd.DataFrame(records)
    assert frame["service"].dtype == "int64" and frame["rate"].dtype == "float64"


def test_services_keep_extra_keys_and_read_azerbaijani_free_variants() -> None:
    records = protocol.parse_services(
        [
            {
                "service": "2",
                "name": "Comments",
                "type": "Custom Comments",
                "category": "C",
                "rate": 8,
                "min": "10",
                "max": "1500",
                "refill": "0",
                "cancel": 1,
                "desc": "about",
            }
        ]
    )
    assert records == [
        {
            "service": 2,
            "name": "Comments",
            "type": "Custom Comments",
            "category": "C",
            "rate": 8.0,
            "min": 10,
            "max": 1500,
            "refill": False,
            "cancel": True,
            "dripfeed": None,
            "desc": "about",
        }
    ]


@pytest.mark.parametrize(
    ("text", "status", "expected"),
    [
        ("Invalid API key.", 200, MirPanelAuthError),
        ("Incorrect API key", 200, MirPanelAuthError),
        ("invalid api_key", 401, MirPanelAuthError),
        ("Not enough funds on balance", 200, MirPanelInsufficientFundsError),
        ("neworder.error.not_enough_funds", 200, MirPanelInsufficientFundsError),
        ("Incorrect order ID", 200, MirPanelAPIError),
        ("Quantity less than minimal 50", 400, MirPanelAPIError),
        ("Hatalı sipariş ID", 200, MirPanelAPIError),
        ("Too many requests", 200, MirPanelTransientError),
    ],
)
def test_panel_error_texts_are_classified_by_keywords(text: str, status: int, expected: type) -> None:
    with pytest.raises(expected) as caught:
        decode({"error": text}, status)
    assert type(caught.value) is expected
    assert text in str(caught.value)


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (b"<html><title>520: Web server is returning an unknown error</title></html>", 520, MirPanelTransientError),
        (b"<!DOCTYPE html><html>Just a moment...</html>", 200, MirPanelTransientError),
        (b"", 502, MirPanelTransientError),
        (b"", 200, MirPanelTransientError),  # a crashed script's empty reply: lost, like a dropped connection
        (b'{"charge": "0.2', 200, MirPanelTransientError),  # cut off on the way
        (b'{"charge": "0.2"}}', 200, MirPanelResponseError),
        (b'{"ok": true}', 500, MirPanelTransientError),
    ],
)
def test_non_json_replies_become_typed_errors(body: bytes, status: int, expected: type) -> None:
    with pytest.raises(expected):
        decode(body, status)


def test_429_is_transient_not_processed_and_carries_retry_after() -> None:
    with pytest.raises(MirPanelTransientError) as caught:
        protocol.decode_reply(b'{"error": "Too many requests"}', 429, Action.ADD, retry_after="7")
    assert caught.value.retry_after == 7.0 and caught.value.request_sent is False
    assert protocol.may_retry(Action.ADD, caught.value)


def test_only_reads_are_retried_after_the_request_may_have_been_processed() -> None:
    lost = MirPanelTransientError("connection lost", request_sent=True)
    refused = MirPanelTransientError("refused", request_sent=False)
    assert protocol.may_retry(Action.STATUS, lost) and protocol.may_retry(Action.BALANCE, lost)
    for action in (Action.ADD, Action.REFILL, Action.CANCEL):
        assert not protocol.may_retry(action, lost)
        assert protocol.may_retry(action, refused)
    assert not protocol.may_retry(Action.STATUS, MirPanelAPIError("Incorrect request"))
    assert protocol.outcome_unknown(Action.ADD, lost)
    assert protocol.outcome_unknown(Action.ADD, MirPanelResponseError("not JSON"))
    assert not protocol.outcome_unknown(Action.ADD, refused)
    assert not protocol.outcome_unknown(Action.ADD, MirPanelInsufficientFundsError("Not enough funds"))


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    policy = protocol.RetryPolicy(retries=5, backoff=1.0, backoff_max=8.0)
    assert 0.5 <= policy.wait(1, None) <= 1.0
    assert 4.0 <= policy.wait(4, None) <= 8.0
    assert 4.0 <= policy.wait(10, None) <= 8.0
    assert policy.wait(1, MirPanelTransientError("429", retry_after=20)) == 20


def test_ids_are_normalized_deduplicated_and_batched() -> None:
    assert protocol.normalize_ids([3, "1", 3, " 2 "]) == [3, 1, 2]
    assert protocol.normalize_ids("[1, 2, 3]") == [1, 2, 3]
    assert protocol.normalize_ids(()) == []
    assert [len(chunk) for chunk in protocol.batches(list(range(1, 251)))] == [100, 100, 50]
    for bad in ([0], [-1], [1.5], [None], [[1]], [True], ["abc"], 5):
        with pytest.raises(MirPanelInputError):
            protocol.normalize_ids(bad)


def test_add_form_joins_lists_and_refuses_unknown_or_bad_values() -> None:
    form = protocol.build_add_form(
        5, {"link": "https://x", "comments": ["great", "nice"], "quantity": "10", "runs": None}
    )
    assert form == {"service": "5", "link": "https://x", "comments": "great\nnice", "quantity": "10"}
    with pytest.raises(MirPanelInputError, match="unknown order parameter"):
        protocol.build_add_form(5, {"linkk": "x"})
    with pytest.raises(MirPanelInputError, match="whole number"):
        protocol.build_add_form(5, {"link": "x", "quantity": 1.5})
    with pytest.raises(MirPanelInputError, match="control character"):
        protocol.build_add_form(5, {"link": "https://x\nquantity=9"})


def test_every_order_type_has_its_rules_checked() -> None:
    service = {"type": "Default", "min": 50, "max": 1000}
    assert protocol.order_problems(service, {"service": "1", "link": "x", "quantity": "100"}) == []
    assert protocol.order_problems(service, {"service": "1", "link": "x", "quantity": "10"}) == [
        "quantity 10 is below the service minimum 50"
    ]
    subscriptions = {"type": "Subscriptions"}
    problems = protocol.order_problems(
        subscriptions, {"service": "1", "username": "u", "min": "10", "max": "5", "delay": "7", "link": "x"}
    )
    assert any("delay" in p for p in problems) and any("min must not" in p for p in problems)
    assert any("do not take ['link']" in p for p in problems)
    traffic = {"type": "Web Traffic", "min": 1, "max": 10}
    assert "type_of_traffic 1 needs 'google_keyword'" in protocol.order_problems(
        traffic, {"service": "1", "link": "x", "quantity": "5", "country": "US", "device": "1", "type_of_traffic": "1"}
    )
    for kind in protocol.ORDER_TYPES.values():
        assert all(name in protocol.ORDER_PARAMS for name in kind.params)
