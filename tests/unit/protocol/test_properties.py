"""Property tests: arbitrary JSON and arbitrary bytes at the protocol module.

The rule of the bad-replies corpus, generalized: whatever a panel sends, ``decode_reply`` and every
parser give well-typed, JSON-safe records or raise a ``MirPanelError`` subclass — never anything else.
The same holds for the input side: any value given as IDs or order parameters is accepted as valid
input or refused with ``MirPanelInputError``.
"""

from __future__ import annotations

import json
import math
import pickle
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.replies import ADD_FORM, parse_reply

from airflow_provider_mirpanel import protocol
from airflow_provider_mirpanel.exceptions import MirPanelError, MirPanelInputError
from airflow_provider_mirpanel.placement.run import order_specs, parse_order_rows
from airflow_provider_mirpanel.protocol import Action

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Scalars panels really send in odd places, mixed with anything at all.
ODD_SCALARS = st.sampled_from(
    [
        "Unknown",
        "",
        " ",
        "0",
        "-5",
        "1,234.5",
        "0,27819",
        "1e400",
        "NaN",
        "Infinity",
        "١٢",
        "²",
        "1.5",
        "23501",
        "Completed",
        "cancelled",
        "In progress",
        "PROCESSING",
        "true",
        "false",
        "Invalid API key.",
        "neworder.error.not_enough_funds",
        2147483647,
        10**30,
        10**400,
        -(10**400),
        -1,
        0,
        1,
        1.0,
        0.5,
        True,
        False,
        None,
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    ODD_SCALARS,
)
FIELD_NAMES = st.sampled_from(
    [
        "order",
        "status",
        "charge",
        "start_count",
        "remains",
        "currency",
        "error",
        "refill",
        "cancel",
        "balance",
        "service",
        "name",
        "type",
        "category",
        "rate",
        "min",
        "max",
        "dripfeed",
        "1",
        "2",
        "10",
        "100",
        "x",
    ]
)
KEYS = st.one_of(FIELD_NAMES, st.text(max_size=8), st.integers(1, 120).map(str))


def json_values(leaves: st.SearchStrategy[Any] = SCALARS) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=6),
            st.dictionaries(KEYS, children, max_size=6),
            st.builds(lambda value: {"error": value}, children),  # nested per-ID errors
        ),
        max_leaves=30,
    )


ANY_JSON = json_values()
ID_LISTS = st.lists(st.integers(1, 120), min_size=1, max_size=12, unique=True)
ACTIONS = st.sampled_from(list(Action))
MULTI_ACTIONS = st.sampled_from(list(protocol.MULTI_PARSERS))
HTTP_STATUSES = st.one_of(
    st.sampled_from([200, 201, 204, 400, 401, 402, 403, 404, 422, 429, 500, 502, 503, 520]), st.integers(100, 599)
)
CONTENT_TYPES = st.sampled_from([None, "application/json", "text/html; charset=UTF-8", "text/plain", ""])

RECORD_FIELDS = {
    Action.STATUS: protocol.ORDER_STATUS_FIELDS,
    Action.REFILL: protocol.REFILL_FIELDS,
    Action.REFILL_STATUS: protocol.REFILL_STATUS_FIELDS,
    Action.CANCEL: protocol.CANCEL_FIELDS,
    Action.BALANCE: protocol.BALANCE_FIELDS,
}
ID_FIELD = {Action.STATUS: "order", Action.REFILL: "order", Action.REFILL_STATUS: "refill", Action.CANCEL: "order"}


def ids_for(action: Action, ids: list[int], single: bool) -> int | list[int] | None:
    if action in (Action.SERVICES, Action.BALANCE, Action.ADD):
        return None
    if single and action in protocol.SINGLE_ID_FIELD:
        return ids[0]
    return ids


def check_error(error: MirPanelError) -> None:
    """A raised error is printable, bounded, and survives pickling (triggers send errors across processes)."""
    text = str(error)
    assert text and len(text) < protocol.MAX_PANEL_TEXT + 600
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == text


def check_records(action: Action, ids: int | list[int] | None, result: Any) -> None:
    """Records are typed as documented and JSON-safe (they become XComs)."""
    json.dumps(result, allow_nan=False)
    records = result if isinstance(result, list) else [result]
    if isinstance(ids, list):
        assert [record[ID_FIELD[action]] for record in records] == ids, "one record per ID, in request order"
    elif isinstance(ids, int):
        assert records[0][ID_FIELD[action]] == ids
    for record in records:
        check_record(action, record)


def check_record(action: Action, record: dict[str, Any]) -> None:
    if action in RECORD_FIELDS:
        assert tuple(record) == RECORD_FIELDS[action]
    error = record.get("error")
    assert error is None or (isinstance(error, str) and error)
    if action is Action.STATUS:
        assert record["status"] is None or isinstance(record["status"], str)
        assert (record["status"] is None) == (error is not None), "a record has a status or an error"
        assert all(record[name] is None or type(record[name]) is int for name in ("start_count", "remains"))
        assert record["charge"] is None or (type(record["charge"]) is float and math.isfinite(record["charge"]))
    elif action is Action.REFILL:
        assert (record["refill"] is None) == (error is not None)
        assert record["refill"] is None or (type(record["refill"]) is int and record["refill"] > 0)
    elif action is Action.REFILL_STATUS:
        assert (record["status"] is None) == (error is not None)
    elif action is Action.CANCEL:
        assert type(record["cancel"]) is bool and record["cancel"] == (error is None)
    elif action is Action.BALANCE:
        assert type(record["balance"]) is float and math.isfinite(record["balance"])
    elif action is Action.ADD:
        assert type(record["order"]) is int and record["order"] > 0
        assert record["service"] == int(ADD_FORM["service"])
    elif action is Action.SERVICES:
        assert type(record["service"]) is int
        assert record["rate"] is None or (type(record["rate"]) is float and math.isfinite(record["rate"]))
        assert all(record[name] is None or type(record[name]) is int for name in ("min", "max"))
        assert all(record[name] in (None, True, False) for name in ("refill", "cancel", "dripfeed"))


def outcome(action: Action, ids: int | list[int] | None, run: Any) -> None:
    """Run one decode/parse; the result must be valid records or a MirPanelError, nothing else."""
    try:
        result = run()
    except MirPanelError as error:
        check_error(error)
    else:
        check_records(action, ids, result)


@PROPERTY
@given(action=ACTIONS, payload=ANY_JSON, ids=ID_LISTS, single=st.booleans())
def test_every_parser_takes_arbitrary_json(action: Action, payload: Any, ids: list[int], single: bool) -> None:
    target = ids_for(action, ids, single)
    outcome(action, target, lambda: parse_reply(action, payload, target))


@PROPERTY
@given(
    action=MULTI_ACTIONS,
    entries=st.lists(st.tuples(st.integers(1, 12), json_values()), max_size=12),
    keyed=st.booleans(),
    ids=st.lists(st.integers(1, 12), min_size=1, max_size=12, unique=True),
)
def test_multi_parsers_take_arbitrary_entries_in_both_shapes(
    action: Action, entries: list[tuple[int, Any]], keyed: bool, ids: list[int]
) -> None:
    """Replies shaped like the real ones (keyed by ID, or a list of objects) but with arbitrary values."""
    id_key = ID_FIELD[action]
    if keyed:
        payload: Any = {str(number): value for number, value in entries}
    else:
        payload = [
            {id_key: number, **(value if isinstance(value, dict) else {"value": value})} for number, value in entries
        ]
    outcome(action, ids, lambda: protocol.MULTI_PARSERS[action](payload, ids))


@PROPERTY
@given(
    action=ACTIONS,
    payload=ANY_JSON,
    status=HTTP_STATUSES,
    content_type=CONTENT_TYPES,
    ids=ID_LISTS,
    single=st.booleans(),
    bom=st.booleans(),
)
def test_decode_then_parse_takes_arbitrary_json_at_any_status(
    action: Action, payload: Any, status: int, content_type: str | None, ids: list[int], single: bool, bom: bool
) -> None:
    body = (b"\xef\xbb\xbf" if bom else b"") + json.dumps(payload).encode()
    target = ids_for(action, ids, single)

    def run() -> Any:
        decoded = protocol.decode_reply(body, status, action, content_type=content_type)
        assert status < 400, "a 4xx/5xx reply is never taken as data"
        return parse_reply(action, decoded, target)

    outcome(action, target, run)


# Bytes that stress the JSON decoder itself: deep nesting, ints beyond Python's 4300-digit limit.
DECODER_STRESS = st.one_of(
    st.integers(900, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(900, 5000).map(lambda depth: b'{"a":' * depth),
    st.integers(4290, 4400).map(lambda digits: b'{"order": ' + b"7" * digits + b"}"),
)
ANY_BYTES = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=200).map(str.encode),
    DECODER_STRESS,
    ANY_JSON.map(lambda value: json.dumps(value).encode()[:-1]),
)  # truncated JSON


@PROPERTY
@given(
    action=ACTIONS,
    body=ANY_BYTES,
    status=HTTP_STATUSES,
    content_type=CONTENT_TYPES,
    retry_after=st.one_of(st.none(), st.text(max_size=12)),
    ids=ID_LISTS,
    single=st.booleans(),
)
def test_decode_then_parse_takes_arbitrary_bytes(
    action: Action,
    body: bytes,
    status: int,
    content_type: str | None,
    retry_after: str | None,
    ids: list[int],
    single: bool,
) -> None:
    target = ids_for(action, ids, single)

    def run() -> Any:
        decoded = protocol.decode_reply(body, status, action, content_type=content_type, retry_after=retry_after)
        return parse_reply(action, decoded, target)

    outcome(action, target, run)


@PROPERTY
@given(message=ANY_JSON, status=st.one_of(st.none(), HTTP_STATUSES), action=st.one_of(st.none(), st.text(max_size=10)))
def test_any_error_value_is_classified_into_a_provider_error(
    message: Any, status: int | None, action: str | None
) -> None:
    error = protocol.classify_error(message, status, action)
    assert isinstance(error, MirPanelError)
    check_error(error)


# -- the input side ------------------------------------------------------------------------------------------------

ANY_INPUT = st.one_of(
    json_values(st.one_of(SCALARS, st.binary(max_size=4))),
    st.sets(st.integers()),
    st.frozensets(st.text(max_size=3)),
    st.tuples(SCALARS, SCALARS),
)


@PROPERTY
@given(value=ANY_INPUT)
def test_any_id_input_is_normalized_or_refused_with_an_input_error(value: Any) -> None:
    try:
        ids = protocol.normalize_ids(value)
    except MirPanelInputError as error:
        assert str(error)
    else:
        assert all(type(item) is int and 0 < item <= protocol.MAX_WHOLE for item in ids)
        assert len(set(ids)) == len(ids)
    try:
        single = protocol.normalize_id(value)
    except MirPanelInputError:
        pass
    else:
        assert type(single) is int and single > 0


PARAM_NAMES = st.one_of(st.sampled_from(sorted(protocol.ORDER_PARAMS)), st.text(max_size=8), st.integers(0, 9))


PARAM_VALUES = st.one_of(
    st.integers(0, 10**6),
    st.integers(0, 10**6).map(str),
    st.text(max_size=12),
    st.lists(st.text(max_size=5), max_size=3),
    ANY_INPUT,
)
SERVICE_TYPES = st.one_of(st.sampled_from([kind.name for kind in protocol.ORDER_TYPES.values()]), SCALARS)


@PROPERTY
@given(
    service=st.one_of(st.integers(1, 10**6), ANY_INPUT),
    params=st.dictionaries(PARAM_NAMES, PARAM_VALUES, max_size=6),
    catalogue=st.fixed_dictionaries({}, optional={"type": SERVICE_TYPES, "min": SCALARS, "max": SCALARS}),
)
def test_any_order_input_is_a_clean_form_or_an_input_error(
    service: Any, params: dict[str, Any], catalogue: dict[str, Any]
) -> None:
    try:
        form = protocol.build_add_form(service, params)
    except MirPanelInputError as error:
        assert str(error)
        return
    assert all(isinstance(value, str) for value in form.values())
    assert set(form) <= protocol.ORDER_PARAMS | {"service"}
    for name, value in form.items():
        allowed = "\n" if name in protocol.MULTILINE_PARAMS else ""
        assert all(ch in allowed for ch in value if ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F), (name, value)
    problems = protocol.order_problems(catalogue, form)
    assert all(isinstance(problem, str) for problem in problems)


ROW_TEXT = st.one_of(
    st.text(max_size=60),
    ANY_JSON.map(json.dumps),
    ANY_JSON.map(repr),
    st.integers(1, 3000).map(lambda depth: "[" * depth),
    st.sampled_from(["{[]: 1}", '[{"service": 1, (1, 2): 3}]', "[{1: 2, 'a': 3}]", "{{}: 1}", "[" * 100_000]),
)


@PROPERTY
@given(text=ROW_TEXT)
def test_any_rendered_orders_text_is_rows_or_an_input_error(text: str) -> None:
    """What ``PlaceOrderOperator(orders=...)`` makes of any text a template renders."""
    try:
        rows = parse_order_rows(text)
    except MirPanelInputError as error:
        assert str(error)
        return
    assert all(isinstance(row, dict) for row in rows)
    for spec in order_specs(rows):
        if spec.error is None:
            assert spec.form is not None and all(isinstance(value, str) for value in spec.form.values())
        else:
            assert isinstance(spec.error, str) and spec.error
