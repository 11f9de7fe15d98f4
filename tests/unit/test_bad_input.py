"""Bad input is refused with a ``MirPanelInputError`` naming the problem, before any request.

Against the sandbox panel over real HTTP: its request log is the evidence that nothing was sent
(for catalogue checks, that nothing but the ``services`` request was sent and no order exists).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from airflow.sdk import DAG
from support.task_context import task_context

from airflow_provider_mirpanel import protocol
from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.operators.mirpanel import (
    CancelOrdersOperator,
    OrderStatusOperator,
    PlaceOrderOperator,
    RefillOperator,
)
from airflow_provider_mirpanel.sandbox import SandboxPanel

LINK = "https://example.com/p/1"

# (value, what the message must say about it)
BAD_IDS: list[tuple[Any, str]] = [
    ("abc", "'abc'"),
    ("12a", "'12a'"),
    ("", "''"),
    ("   ", "'   '"),
    (-1, "must be positive"),
    ("-7", "'-7'"),
    (0, "must be positive"),
    ("0", "must be positive"),
    (1.5, "1.5"),
    (2.0, "2.0"),
    ("2.0", "'2.0'"),
    ("1e3", "'1e3'"),
    ("0x10", "'0x10'"),
    (None, "None"),
    (True, "True"),
    (False, "False"),
    ([[1]], "[1]"),
    ({"order": 1}, "order"),
    (b"12", "12"),
    ("²", "'²'"),
    ("１２", "'１２'"),
    (10**30, "too large"),
    ("9" * 40, "'999"),
    (object(), "object"),
]
BAD_ID_IDS = [repr(value)[:20] for value, _ in BAD_IDS]

SINGLE_ID_METHODS: dict[str, Callable[[MirPanelHook, Any], Any]] = {
    "get_order_status": MirPanelHook.get_order_status,
    "refill_order": MirPanelHook.refill_order,
    "get_refill_status": MirPanelHook.get_refill_status,
}
MULTI_ID_METHODS: dict[str, Callable[[MirPanelHook, Any], Any]] = {
    "get_orders_status": MirPanelHook.get_orders_status,
    "refill_orders": MirPanelHook.refill_orders,
    "get_refills_status": MirPanelHook.get_refills_status,
    "cancel_orders": MirPanelHook.cancel_orders,
}


def refused(panel: SandboxPanel, call: Callable[[], Any], *fragments: str) -> str:
    """Run ``call``; it must raise MirPanelInputError naming every fragment, with no request sent."""
    with pytest.raises(MirPanelInputError) as caught:
        call()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert panel.requests == [], f"requests were sent: {[entry.action for entry in panel.requests]}"
    assert not panel.state.orders
    return message


def default_service(panel: SandboxPanel) -> Mapping[str, Any]:
    return panel.catalogue.first_of_type("Default")


# -- IDs ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(SINGLE_ID_METHODS))
@pytest.mark.parametrize(("bad", "named"), BAD_IDS, ids=BAD_ID_IDS)
def test_a_bad_id_for_a_single_id_method_is_refused_before_any_request(
    panel: SandboxPanel, method: str, bad: Any, named: str
) -> None:
    hook = MirPanelHook()
    refused(panel, lambda: SINGLE_ID_METHODS[method](hook, bad), named)


@pytest.mark.parametrize("method", sorted(MULTI_ID_METHODS))
@pytest.mark.parametrize(("bad", "named"), BAD_IDS, ids=BAD_ID_IDS)
def test_one_bad_id_among_good_ones_refuses_the_whole_call(
    panel: SandboxPanel, method: str, bad: Any, named: str
) -> None:
    hook = MirPanelHook()
    good = list(range(1001, 1251))  # three requests' worth: none of them may go out
    refused(panel, lambda: MULTI_ID_METHODS[method](hook, [*good, bad]), named)


@pytest.mark.parametrize("method", sorted(MULTI_ID_METHODS))
@pytest.mark.parametrize("bad", [None, 5, True, 2.5, {"1": 1}, b"1,2", object()], ids=repr)
def test_a_multi_id_method_refuses_what_is_not_a_list_of_ids(panel: SandboxPanel, method: str, bad: Any) -> None:
    hook = MirPanelHook()
    message = refused(panel, lambda: MULTI_ID_METHODS[method](hook, bad))
    assert "ID" in message


@pytest.mark.parametrize("method", sorted(SINGLE_ID_METHODS))
@pytest.mark.parametrize("many", [[1001, 1002], (1001, 1002), {1001, 1002}, "1001,1002", "1001, 1002", [1001]])
def test_more_than_one_id_in_a_single_id_method_says_so(panel: SandboxPanel, method: str, many: Any) -> None:
    hook = MirPanelHook()
    refused(panel, lambda: SINGLE_ID_METHODS[method](hook, many), "one ", "ID expected", "many IDs")


def test_more_than_100_ids_in_one_request_form_is_refused() -> None:
    with pytest.raises(MirPanelInputError, match="at most 100 IDs per request, got 101"):
        protocol.multi_form(protocol.Action.STATUS, list(range(1, 102)))


def test_the_hook_splits_250_ids_into_three_requests_instead(panel: SandboxPanel) -> None:
    ids = panel.create_orders(250)
    records = MirPanelHook().get_orders_status(ids)
    assert [record["order"] for record in records] == ids
    assert sorted(len(entry.ids) for entry in panel.requests) == [50, 100, 100]  # sent concurrently


# -- order parameters -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"speed": "fast"}, "'speed'"),
        ({"quantiy": 100}, "'quantiy'"),
        ({"key": "someone-elses-key"}, "'key'"),
        ({"action": "balance"}, "'action'"),
        ({"orders": "1,2"}, "'orders'"),
        ({"Link": LINK}, "'Link'"),
    ],
    ids=["speed", "typo", "key", "action", "orders", "case"],
)
def test_an_unknown_order_parameter_is_refused_by_name(panel: SandboxPanel, params: dict[str, Any], named: str) -> None:
    service = default_service(panel)["service"]
    message = refused(
        panel,
        lambda: MirPanelHook().add_order(service, link=LINK, quantity=100, **params),
        "unknown order parameter",
        named,
    )
    assert "link" in message and "quantity" in message, "the known parameters are listed"


@pytest.mark.parametrize(
    "quantity",
    [10.5, "10.5", "ten", True, "1e3", -5, "-5", [100], {"q": 100}, "²", "", "None", 10**30, "1,000"],
    ids=repr,
)
def test_a_quantity_that_is_not_a_whole_number_is_refused(panel: SandboxPanel, quantity: Any) -> None:
    service = default_service(panel)["service"]
    refused(panel, lambda: MirPanelHook().add_order(service, link=LINK, quantity=quantity), "quantity")


@pytest.mark.parametrize("name", ["runs", "interval", "answer_number", "device", "delay", "min", "max"])
def test_every_count_parameter_is_checked_like_quantity(panel: SandboxPanel, name: str) -> None:
    service = default_service(panel)["service"]
    refused(panel, lambda: MirPanelHook().add_order(service, link=LINK, quantity=100, **{name: "5.5"}), name)


@pytest.mark.parametrize("service", ["abc", 0, -3, None, 1.5, [1], True, "", "1,2"], ids=repr)
def test_a_bad_service_id_is_refused(panel: SandboxPanel, service: Any) -> None:
    refused(panel, lambda: MirPanelHook().add_order(service, link=LINK, quantity=100), "service")


@pytest.mark.parametrize(
    "link",
    [
        "https://example.com/p/1\nquantity=9",
        "https://example.com/p/1\r\n",
        "https://example.com/p/1\r",
        "https://example.com/\tp/1",
        "https://example.com/p/1\x00",
        "https://example.com/p/1\x1b[31m",
        "https://example.com/p/1\x7f",
        "https://example.com/p/1\x85",
        "https://example.com/p/1\u2028",
        "https://example.com/p/1\u2029",
    ],
    ids=["LF-injection", "CRLF", "CR", "TAB", "NUL", "ESC", "DEL", "NEL", "LS", "PS"],
)
def test_a_link_with_a_line_break_or_control_character_is_refused(panel: SandboxPanel, link: str) -> None:
    service = default_service(panel)["service"]
    refused(
        panel,
        lambda: MirPanelHook().add_order(service, link=link, quantity=100),
        "link",
        "line break or control character",
    )


@pytest.mark.parametrize(
    ("link", "named"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        (["https://a"], "must be text"),
        ({"url": "x"}, "must be text"),
        (True, "must be text"),
        (b"https://a", "must be text"),
    ],
    ids=repr,
)
def test_an_empty_or_non_text_link_is_refused(panel: SandboxPanel, link: Any, named: str) -> None:
    service = default_service(panel)["service"]
    refused(panel, lambda: MirPanelHook().add_order(service, link=link, quantity=100), "link", named)


@pytest.mark.parametrize(
    ("comments", "named"),
    [
        ([], "must not be an empty list"),
        (["good", {"text": "x"}], "must be text"),
        (["a\r\nb"], "control"),
        ("first\nsecond\x00", "control"),
        (["ok", ""], "must not be empty"),
    ],
    ids=["empty-list", "dict-item", "CR", "NUL", "empty-line"],
)
def test_bad_multi_line_values_are_refused(panel: SandboxPanel, comments: Any, named: str) -> None:
    service = panel.catalogue.first_of_type("Custom Comments")["service"]
    refused(panel, lambda: MirPanelHook().add_order(service, link=LINK, comments=comments), "comments", named)


def test_multi_line_values_keep_their_line_breaks(panel: SandboxPanel) -> None:
    """The control: a list of comments is sent as lines, and that is the only newline allowed."""
    service = panel.catalogue.first_of_type("Custom Comments")["service"]
    placed = MirPanelHook().add_order(service, link=LINK, comments=["great", "nice"])
    assert placed["comments"] == "great\nnice"
    assert [entry.form["comments"] for entry in panel.requests if entry.action == "add"] == ["great\nnice"]


# -- catalogue rules at hook level (protocol.order_problems) -------------------------------------------------------


def problems_for(panel: SandboxPanel, type_name: str, **params: Any) -> list[str]:
    service = panel.catalogue.first_of_type(type_name)
    return protocol.order_problems(service, protocol.build_add_form(service["service"], params))


def test_order_problems_name_quantity_outside_min_max_and_missing_parameters(panel: SandboxPanel) -> None:
    service = default_service(panel)
    low, high = protocol.to_int(service["min"]), protocol.to_int(service["max"])
    assert low is not None and high is not None
    assert problems_for(panel, "Default", link=LINK, quantity=low) == []
    assert problems_for(panel, "Default", link=LINK, quantity=low - 1) == [
        f"quantity {low - 1} is below the service minimum {low}"
    ]
    assert problems_for(panel, "Default", link=LINK, quantity=high + 1) == [
        f"quantity {high + 1} is above the service maximum {high}"
    ]
    assert problems_for(panel, "Default", link=LINK) == ["missing 'quantity' for a Default service"]
    assert problems_for(panel, "Custom Comments", link=LINK) == ["missing 'comments' for a Custom Comments service"]
    assert problems_for(panel, "Default", link=LINK, quantity=low, runs=5) == [
        "drip-feed needs both 'runs' and 'interval'"
    ]
    assert problems_for(panel, "Package", link=LINK, quantity=1) == ["Package services do not take ['quantity']"]
    assert panel.requests == []


# -- operators: rendered templates and catalogue checks ------------------------------------------------------------


def render(operator: Any, params: dict[str, Any]) -> Any:
    operator.render_template_fields({"params": params})
    return operator


def in_dag(native: bool, make: Callable[[], Any]) -> Any:
    with DAG(f"bad_input_{native}", schedule=None, render_template_as_native_obj=native):
        return make()


@pytest.mark.parametrize("native", [False, True], ids=["text", "native"])
@pytest.mark.parametrize(
    ("rendered", "named"),
    [
        (None, "None"),
        ([1001, None], "None"),
        ("[1001, 'x']", "'x'"),
        ({"a": 1}, "a"),
        (1.5, "1.5"),
        ([[1001, 1002]], "flat list"),
        (-4, "-4"),
    ],
    ids=["None", "list-with-None", "text-with-word", "dict", "float", "nested", "negative"],
)
@pytest.mark.parametrize(
    "operator", [OrderStatusOperator, RefillOperator, CancelOrdersOperator], ids=lambda cls: cls.__name__
)
def test_order_ids_rendering_to_a_wrong_type_are_refused_before_any_request(
    panel: SandboxPanel, native: bool, rendered: Any, named: str, operator: type
) -> None:
    op = in_dag(native, lambda: operator(task_id="ids", order_ids="{{ params.ids }}"))
    render(op, {"ids": rendered})
    refused(panel, lambda: op.execute({}), named)


@pytest.mark.parametrize("native", [False, True], ids=["text", "native"])
@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"quantity": None}, "quantity"),
        ({"quantity": 10.5}, "quantity"),
        ({"quantity": "many"}, "quantity"),
        ({"service": None}, "service"),
        ({"service": "abc"}, "service"),
        ({"link": "a\nb"}, "link"),
    ],
    ids=["quantity-None", "quantity-float", "quantity-word", "service-None", "service-word", "link-newline"],
)
def test_order_fields_rendering_to_wrong_types_are_refused_before_any_request(
    panel: SandboxPanel, native: bool, params: dict[str, Any], named: str
) -> None:
    service = default_service(panel)
    values = {"service": service["service"], "link": LINK, "quantity": service["min"], **params}
    op = in_dag(
        native,
        lambda: PlaceOrderOperator(
            task_id="place", service="{{ params.service }}", link="{{ params.link }}", quantity="{{ params.quantity }}"
        ),
    )
    render(op, values)
    if native and params == {"quantity": None}:  # None is "not given": a catalogue check, after reading it
        with pytest.raises(MirPanelInputError, match="missing 'quantity' for a Default service"):
            op.execute(task_context())
        assert [entry.action for entry in panel.requests] == ["services"] and not panel.state.orders
        return
    message = refused(panel, lambda: op.execute(task_context()), named)
    assert "no order was sent" in message


def test_place_order_operator_checks_min_max_and_required_parameters_against_the_catalogue(
    panel: SandboxPanel,
) -> None:
    default = default_service(panel)
    comments = panel.catalogue.first_of_type("Custom Comments")
    low, high = protocol.to_int(default["min"]), protocol.to_int(default["max"])
    assert low is not None and high is not None
    orders = [
        {"service": default["service"], "link": LINK, "quantity": low},  # valid
        {"service": default["service"], "link": LINK, "quantity": low - 1},
        {"service": default["service"], "link": LINK, "quantity": high + 1},
        {"service": default["service"], "link": LINK},
        {"service": comments["service"], "link": LINK},
        {"service": 99999999, "link": LINK, "quantity": 100},
    ]
    op = PlaceOrderOperator(task_id="place", orders=orders)
    with pytest.raises(MirPanelInputError) as caught:
        op.execute(task_context())
    message = str(caught.value)
    assert "5 of 6 orders are invalid; no order was sent" in message
    assert f"row 1: quantity {low - 1} is below the service minimum {low}" in message
    assert f"row 2: quantity {high + 1} is above the service maximum {high}" in message
    assert "row 3: missing 'quantity' for a Default service" in message
    assert "row 4: missing 'comments' for a Custom Comments service" in message
    assert "row 5: service 99999999 is not in the panel's catalogue" in message
    assert [entry.action for entry in panel.requests] == ["services"], "only the catalogue was read"
    assert not panel.state.orders


@pytest.mark.parametrize(
    "orders",
    ["{[]: 1}", '[{"service": 1, "link": "x"}', "[" * 100_000, "{'a': {[]: 1}}", "None", "42", "[1, 2]", '"a string"'],
    ids=["unhashable-key", "unclosed", "deep", "nested-unhashable", "None", "number", "list-of-ints", "string"],
)
def test_orders_text_that_is_not_a_list_of_rows_is_refused_before_any_request(panel: SandboxPanel, orders: str) -> None:
    op = PlaceOrderOperator(task_id="place", orders=orders)
    refused(panel, lambda: op.execute(task_context()), "orders must be a list of dicts")


def test_rows_with_non_text_parameter_names_are_refused_by_name(panel: SandboxPanel) -> None:
    service = default_service(panel)
    rows = [{"service": service["service"], "link": LINK, "quantity": service["min"], 1: 2, "colour": "red"}]
    op = PlaceOrderOperator(task_id="place", orders=rows)
    refused(panel, lambda: op.execute(task_context()), "row 0: unknown order parameter(s) ['colour', 1]")
