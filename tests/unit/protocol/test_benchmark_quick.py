"""What the benchmark's parse numbers rest on: the usual status reply reads every order right.

Status replies are parsed by one general path (no fast path: at ≤ 5 × ``json.loads`` parsing is
never the bottleneck against a panel allowing ~120 status requests a minute). The benchmark itself
runs in ``make test`` as ``make bench-quick``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_mirpanel import protocol

NUMBER_TEXTS = st.sampled_from(
    [
        "0",
        "19000",
        "0.00575",
        " 5 ",
        "1,234.5",
        "0,27819",
        "1_000",
        "Unknown",
        "",
        "inf",
        "nan",
        "-3",
        "1e400",
        "٣",
        "12.0",
        "1.5",
    ]
)


@given(
    status=st.sampled_from(["Completed", "In progress", "Partial", "Pending", "Canceled", "Refunded", "Weird"]),
    charge=NUMBER_TEXTS,
    start=NUMBER_TEXTS,
    remains=NUMBER_TEXTS,
)
def test_the_usual_order_object_reads_into_the_seven_fields(status: str, charge: str, start: str, remains: str) -> None:
    raw = {"charge": charge, "start_count": start, "status": status, "remains": remains, "currency": "USD"}
    record: dict[str, Any] = dict(protocol.order_status_record(7, raw))
    assert tuple(record) == protocol.ORDER_STATUS_FIELDS
    assert record["status"] == protocol.canonical_status(status) and record["error"] is None
    assert record["charge"] == protocol.to_float(charge) and record["remains"] == protocol.to_int(remains)


def test_a_usual_reply_of_100_orders_reads_each_order() -> None:
    ids = list(range(1000, 1100))
    payload = {
        str(item): {"charge": "0.5", "start_count": "10", "status": "completed", "remains": "0", "currency": "USD"}
        for item in ids
    }
    records = protocol.parse_orders_status(payload, ids)
    assert [record["order"] for record in records] == ids
    assert records[0] == {
        "order": 1000,
        "status": "Completed",
        "charge": 0.5,
        "start_count": 10,
        "remains": 0,
        "currency": "USD",
        "error": None,
    }
