"""records.to_dataframe: explicit dtypes for every kind of record, also for empty lists."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
from support.airflow_compat import deserialize, serialize

from airflow_provider_mirpanel.records import DTYPES, KIND_COLUMNS, dtype_of, infer_kind, to_dataframe

SAMPLES: dict[str, list[dict[str, Any]]] = {
    "service": [
        {
            "service": 1,
            "name": "Followers",
            "type": "Default",
            "category": "Instagram",
            "rate": 0.9,
            "min": 50,
            "max": 10000,
            "refill": True,
            "cancel": False,
            "dripfeed": None,
            "desc": "fast",
        },
    ],
    "order_status": [
        {
            "order": 23501,
            "status": "Partial",
            "charge": 0.27819,
            "start_count": 3572,
            "remains": 157,
            "currency": "USD",
            "error": None,
            "checked_at": "2026-01-05T10:00:00.123+00:00",
        },
        {
            "order": 10,
            "status": None,
            "charge": None,
            "start_count": None,
            "remains": None,
            "currency": None,
            "error": "Incorrect order ID",
            "checked_at": "2026-01-05T10:00:00.123+00:00",
        },
    ],
    "placed_order": [
        {
            "key": "0",
            "state": "placed",
            "order": 23501,
            "service": 1,
            "link": "https://x",
            "quantity": 100,
            "runs": 2,
            "interval": 30,
            "cost": 0.09,
            "error": None,
        },
        {
            "key": "1",
            "state": "refused",
            "order": None,
            "service": 1,
            "link": "https://y",
            "quantity": 100,
            "cost": 0.09,
            "error": "Bad link",
        },
    ],
    "refill": [{"order": 1, "refill": 5, "error": None}, {"order": 2, "refill": None, "error": "Not eligible"}],
    "refill_status": [{"refill": 5, "status": "Completed", "error": None, "checked_at": "2026-01-05T10:00:00Z"}],
    "cancel": [{"order": 1, "cancel": True, "error": None}, {"order": 2, "cancel": False, "error": "refused"}],
    "balance": [{"balance": 100.84292, "currency": "USD", "checked_at": "2026-01-05T10:00:00+00:00"}],
}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_kind_is_inferred_from_its_columns(kind: str) -> None:
    assert infer_kind(SAMPLES[kind][0]) == kind


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_column_gets_its_dtype_from_the_table(kind: str) -> None:
    frame = to_dataframe(SAMPLES[kind])

    assert len(frame) == len(SAMPLES[kind])
    assert list(frame.columns[: len(KIND_COLUMNS[kind])]) == list(KIND_COLUMNS[kind])
    for column in frame.columns:
        assert str(frame[column].dtype) == dtype_of(column, kind), column


@pytest.mark.parametrize("kind", sorted(KIND_COLUMNS))
def test_an_empty_list_of_a_known_kind_gives_typed_empty_columns(kind: str) -> None:
    frame = to_dataframe([], kind=kind)

    assert frame.empty and list(frame.columns) == list(KIND_COLUMNS[kind])
    assert {c: str(t) for c, t in frame.dtypes.items()} == {c: dtype_of(c, kind) for c in KIND_COLUMNS[kind]}


def test_dtypes_are_the_documented_ones() -> None:
    frame = to_dataframe(SAMPLES["order_status"])

    assert frame.dtypes.astype(str).to_dict() == {
        "order": "Int64",
        "status": "string",
        "charge": "Float64",
        "start_count": "Int64",
        "remains": "Int64",
        "currency": "string",
        "error": "string",
        "checked_at": "datetime64[ns, UTC]",
    }
    assert frame.loc[1, "remains"] is pd.NA
    assert frame.loc[0, "checked_at"] == pd.Timestamp("2026-01-05T10:00:00.123", tz="UTC")


def test_a_services_refill_is_a_flag_but_a_refill_records_refill_is_an_id() -> None:
    assert str(to_dataframe(SAMPLES["service"])["refill"].dtype) == "boolean"
    assert str(to_dataframe(SAMPLES["refill"])["refill"].dtype) == "Int64"


def test_records_survive_airflow_xcom_serialization_unchanged() -> None:
    for records in SAMPLES.values():
        pulled = deserialize(json.loads(json.dumps(serialize(records))))
        assert pulled == records
        assert to_dataframe(pulled).equals(to_dataframe(records))


def test_one_balance_dict_is_one_row() -> None:
    frame = to_dataframe(SAMPLES["balance"][0])

    assert len(frame) == 1 and frame.loc[0, "balance"] == pytest.approx(100.84292)


def test_missing_kind_columns_are_added_as_na() -> None:
    frame = to_dataframe([{"order": 1, "status": "Completed"}])

    assert list(frame.columns) == list(KIND_COLUMNS["order_status"])
    assert frame["charge"].isna().all() and str(frame["checked_at"].dtype) == "datetime64[ns, UTC]"


def test_values_of_the_wrong_python_type_are_coerced() -> None:
    frame = to_dataframe([{"order": "12", "status": "Completed", "charge": "0.5", "link": 5}], kind="order_status")

    assert frame.loc[0, "order"] == 12 and frame.loc[0, "charge"] == 0.5 and frame.loc[0, "link"] == "5"


def test_unknown_columns_get_the_best_nullable_dtype() -> None:
    frame = to_dataframe([{"order": 1, "cancel": True, "error": None, "batch": 7, "note": "x"}])

    assert str(frame["batch"].dtype) == "Int64" and str(frame["note"].dtype) == "string"


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown record kind 'orders'"):
        to_dataframe([], kind="orders")


def test_records_of_no_known_kind_still_make_a_frame() -> None:
    assert infer_kind(["a", "b"]) is None
    assert to_dataframe([{"a": 1, "b": "x"}]).dtypes.astype(str).to_dict() == {"a": "Int64", "b": "string"}
    assert to_dataframe([]).empty


def test_every_column_of_every_kind_has_a_dtype() -> None:
    for kind, columns in KIND_COLUMNS.items():
        assert all(dtype_of(column, kind) for column in columns), kind
    assert set(DTYPES.values()) == {"Int64", "Float64", "boolean", "string", "datetime64[ns, UTC]"}
