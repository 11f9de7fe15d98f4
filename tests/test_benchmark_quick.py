"""What the benchmark's parse numbers rest on: the fast paths of status parsing change no record.

``protocol`` reads the usual status reply (an object keyed by exactly the requested IDs, each
order an object with a text status and number texts) without the general path's checks. These
properties hold it to the general path for arbitrary replies, so a speed-up can never change a
record. The benchmark itself runs in ``make test`` as ``make bench-quick``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_mirpanel import protocol
from airflow_provider_mirpanel.exceptions import MirPanelError
from airflow_provider_mirpanel.protocol import Action

NUMBER_TEXTS = st.sampled_from(["0", "19000", "0.00575", " 5 ", "1,234.5", "0,27819", "1_000", "Unknown", "", "inf",
                                "nan", "-3", "1e400", "٣", "12.0", "1.5"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 2**70), st.floats(allow_nan=True), st.text(max_size=8),
                    NUMBER_TEXTS)
STATUS_VALUES = st.one_of(SCALARS, st.sampled_from(["Completed", "in progress", " Pending ", "cancelled", "  ", "Odd"]),
                          st.fixed_dictionaries({"error": SCALARS}))
ENTRIES = st.one_of(
    SCALARS,
    st.dictionaries(st.sampled_from(["status", "charge", "start_count", "remains", "currency", "error", "order"]),
                    st.one_of(STATUS_VALUES, NUMBER_TEXTS, SCALARS), max_size=7),
)


def general_status_record(order_id: int, raw: Any) -> dict[str, Any]:
    """The record through the general path only."""
    return protocol._order_status_any(order_id, raw)


@given(order_id=st.integers(1, 10**6), raw=ENTRIES)
def test_the_fast_status_record_is_the_general_one(order_id: int, raw: Any) -> None:
    assert protocol.order_status_record(order_id, raw) == general_status_record(order_id, raw)


@given(status=st.sampled_from(["Completed", "In progress", "Partial", "Pending", "Canceled", "Refunded", "Weird"]),
       charge=NUMBER_TEXTS, start=NUMBER_TEXTS, remains=NUMBER_TEXTS)
def test_the_usual_order_object_reads_as_the_general_path_reads_it(
    status: str, charge: str, start: str, remains: str
) -> None:
    raw = {"charge": charge, "start_count": start, "status": status, "remains": remains, "currency": "USD"}
    assert protocol.order_status_record(7, raw) == general_status_record(7, raw)


ID_KEYS = st.one_of(st.integers(-5, 2**66).map(str), st.sampled_from([" 5", "05", "5.0", "x", "", "1,2"]))


def by_id_entries(payload: Any, ids: list[int]) -> list[Any]:
    indexed = protocol._by_id(payload, "order", Action.STATUS)
    return [indexed.get(item) for item in ids]


def outcome(call: Any) -> Any:
    try:
        return call()
    except MirPanelError as error:
        return type(error)


@given(ids=st.lists(st.integers(-3, 10**20), max_size=8, unique=True), data=st.data())
def test_entries_are_those_indexing_by_id_finds(ids: list[int], data: st.DataObject) -> None:
    exact = {str(item): {"status": str(item)} for item in ids}
    payload = data.draw(st.one_of(
        st.just(exact),  # the usual reply: exactly the requested IDs, in order
        st.just(dict(reversed(exact.items()))),
        st.dictionaries(ID_KEYS, st.one_of(SCALARS, st.just({"status": "Completed"})), max_size=8),
        st.lists(st.fixed_dictionaries({"order": st.one_of(SCALARS, ID_KEYS)}), max_size=8),
        SCALARS,
    ))
    fast = outcome(lambda: protocol._entries(payload, ids, "order", Action.STATUS))
    general = outcome(lambda: by_id_entries(payload, ids))
    if isinstance(general, list):
        assert isinstance(fast, list) and len(fast) == len(general)
        assert all(a is b for a, b in zip(fast, general, strict=True)), "the same entry objects"
    else:
        assert fast is general


def test_a_usual_reply_of_100_orders_reads_each_order() -> None:
    ids = list(range(1000, 1100))
    payload = {str(item): {"charge": "0.5", "start_count": "10", "status": "completed", "remains": "0",
                           "currency": "USD"} for item in ids}
    records = protocol.parse_orders_status(payload, ids)
    assert [record["order"] for record in records] == ids
    assert records[0] == {"order": 1000, "status": "Completed", "charge": 0.5, "start_count": 10, "remains": 0,
                          "currency": "USD", "error": None}
