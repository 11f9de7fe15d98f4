"""The API key never leaks, and insecure transport is refused unless the connection opts in.

With DEBUG logging on everywhere (root, requests, urllib3, aiohttp, airflow, tenacity), every hook
method runs against the sandbox on its success and failure paths, retries included; every log line
(the logging records and whatever reached stdout/stderr), exception text, repr and record is
scanned for the key. Operators, sensors and triggers are scanned the same way: XCom values,
rendered template fields, trigger ``serialize()`` and events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import traceback
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import aiohttp
import pytest
import requests
from support.task_context import task_context

from airflow_provider_mirpanel.client.settings import ClientSettings
from airflow_provider_mirpanel.exceptions import (
    MirPanelAmbiguousOrderError,
    MirPanelAuthError,
    MirPanelError,
    MirPanelInputError,
    MirPanelTransientError,
)
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.hooks.mirpanel_async import MirPanelAsyncHook
from airflow_provider_mirpanel.operators.mirpanel import (
    BalanceCheckOperator,
    CancelOrdersOperator,
    OrderStatusOperator,
    PlaceOrderOperator,
    RefillOperator,
    ServicesOperator,
)
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel
from airflow_provider_mirpanel.sensors.mirpanel import OrderStatusSensor, RefillStatusSensor
from airflow_provider_mirpanel.triggers.mirpanel import OrderStatusTrigger, RefillStatusTrigger
from airflow_provider_mirpanel.utils.fallback_stores import InProcessStateStore
from airflow_provider_mirpanel.version_compat import TaskDeferred

LOGGERS = (
    "",
    "requests",
    "urllib3",
    "aiohttp",
    "aiohttp.client",
    "airflow",
    "airflow.task",
    "airflow.hooks",
    "airflow_provider_mirpanel",
    "tenacity",
    "asyncio",
)
FAST = {"timeout": 0.5, "connect_timeout": 0.5, "retries": 2, "backoff": 0.01}


class Capture(logging.Handler):
    """Every log record, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class Scan:
    """Everything that could carry the key, collected to be searched at the end of a test."""

    def __init__(self, secrets: list[str], capture: Capture, capfd: pytest.CaptureFixture[str]) -> None:
        self.secrets = secrets
        self.capture = capture
        self.capfd = capfd
        self.texts: list[str] = []
        self.errors: list[BaseException] = []
        self.output = ""

    def value(self, value: Any) -> Any:
        """Scan a record, an XCom value, a serialization: its JSON, str and repr."""
        self.texts += [json.dumps(value, default=repr, ensure_ascii=False), str(value), repr(value)]
        return value

    def error(self, error: BaseException) -> BaseException:
        """Scan an exception and its whole chain: text, repr, args, attributes, traceback, pickle."""
        self.errors.append(error)
        seen: set[int] = set()
        current: BaseException | None = error
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            self.texts += [str(current), repr(current), repr(current.args), repr(vars(current))]
            current = current.__cause__ or current.__context__
        self.texts.append("".join(traceback.format_exception(error)))
        if isinstance(error, MirPanelError):
            self.texts.append(repr(pickle.loads(pickle.dumps(error)).__dict__))
        return error

    def call(self, run: Callable[[], Any]) -> Any:
        """Run a call; scan what it returns or raises (a MirPanelError or an Airflow exception)."""
        try:
            return self.value(run())
        except Exception as error:
            return self.error(error)

    def logs(self) -> str:
        """Everything logged so far: the logging records and what reached stdout/stderr (structlog)."""
        out, err = self.capfd.readouterr()
        self.output += out + err
        return "\n".join([*self.capture.lines, self.output])

    def check(self, min_log_lines: int = 1) -> None:
        logs = self.logs()
        everything = [*self.texts, logs]
        assert logs.count("\n") >= min_log_lines, "DEBUG logging was captured"
        for secret in self.secrets:
            leaks = [text for text in everything if secret in text]
            assert not leaks, f"the key leaked in {len(leaks)} place(s), e.g. {leaks[0][:300]!r}"


@pytest.fixture
def debug_logging() -> Iterator[Capture]:
    capture = Capture()
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    root = logging.getLogger()
    root.addHandler(capture)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def scan(
    panel: SandboxPanel, debug_logging: Capture, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Scan:
    """Small timeouts and quick retries on the sandbox connection, and a scanner for its key."""
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(**FAST)))
    return Scan([panel.api_key], debug_logging, capfd)


def refillable(panel: SandboxPanel) -> dict[str, Any]:
    """A Default service that takes refills and cancels."""
    return dict(
        next(
            service
            for service in panel.catalogue.services
            if service.get("type") == "Default" and service.get("refill") is True and service.get("cancel") is True
        )
    )


def urllib3_saw_requests(scan: Scan) -> bool:
    return any("POST /api/v2" in line for line in scan.capture.lines)


# -- the sync hook -------------------------------------------------------------------------------------------------


def test_every_hook_method_on_success_paths_keeps_the_key_out_of_everything(panel: SandboxPanel, scan: Scan) -> None:
    hook = MirPanelHook()
    service = refillable(panel)
    placed = scan.call(
        lambda: hook.add_order(service["service"], link="https://example.com/p/1", quantity=service["min"])
    )
    done = panel.create_orders(200, service=service["service"], status="Completed")
    pending = panel.create_orders(49, service=service["service"], status="Pending")
    ids = [placed["order"], *done, *pending]
    scan.call(hook.get_services)
    scan.call(lambda: hook.get_order_status(ids[0]))
    scan.call(lambda: hook.get_orders_status(ids))
    refill = scan.call(lambda: hook.refill_order(done[0]))
    refills = scan.call(lambda: hook.refill_orders(done[1:5]))
    scan.call(lambda: hook.get_refill_status(refill["refill"]))
    scan.call(lambda: hook.get_refills_status([record["refill"] for record in refills]))
    cancels = scan.call(lambda: hook.cancel_orders(pending[:3]))
    assert [record["cancel"] for record in cancels] == [True] * 3
    scan.call(hook.get_balance)
    scan.call(hook.test_connection)
    scan.value([repr(hook), repr(hook.settings), vars(hook.settings)])
    assert not scan.errors
    assert panel.count() == 13 and urllib3_saw_requests(scan)
    scan.check(min_log_lines=14)


def test_failures_and_retries_keep_the_key_out_of_everything(panel: SandboxPanel, scan: Scan) -> None:
    hook = MirPanelHook()
    service = panel.catalogue.first_of_type("Default")
    [order] = panel.create_orders(1)

    panel.faults.add("status", "http_status", status=503, times=2)  # retried, then succeeds
    scan.call(lambda: hook.get_order_status(order))
    panel.faults.add("balance", "rate_limit", retry_after=0, times=1)
    scan.call(hook.get_balance)
    panel.faults.add("status", "html", status=520, times=None)  # retried until given up
    scan.call(lambda: hook.get_orders_status([order]))
    panel.faults.clear()
    panel.faults.add("add", "drop_after_processing")
    scan.call(lambda: hook.add_order(service["service"], link="https://example.com/p/2", quantity=service["min"]))
    panel.faults.add("add", "delay_after_processing", seconds=1.0)
    scan.call(lambda: hook.add_order(service["service"], link="https://example.com/p/3", quantity=service["min"]))
    panel.faults.add("refill", "body", body=b'{"refill": "1', times=1)
    scan.call(lambda: hook.refill_order(order))
    panel.faults.add("cancel", "body", body=b"", status=502, times=None)
    scan.call(lambda: hook.cancel_orders([order]))
    panel.faults.add("services", "error", error="Incorrect request", status=400)
    scan.call(hook.get_services)
    with panel.outage():
        scan.call(hook.get_balance)
        scan.call(hook.test_connection)

    kinds = [type(error) for error in scan.errors]
    assert MirPanelAmbiguousOrderError in kinds and MirPanelTransientError in kinds
    assert len(scan.errors) >= 6
    assert "retry 1 of 2" in scan.logs(), "the retries were logged"
    scan.check(min_log_lines=20)


def test_a_wrong_key_is_not_leaked_either(
    panel: SandboxPanel, debug_logging: Capture, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "wrong-key-" + panel.api_key[::-1]
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps({**panel.connection(**FAST), "password": wrong}))
    scan = Scan([wrong, panel.api_key], debug_logging, capfd)
    hook = MirPanelHook()
    error = scan.call(hook.get_balance)
    assert isinstance(error, MirPanelAuthError)
    scan.call(hook.test_connection)
    scan.call(lambda: hook.get_orders_status([1, 2]))
    scan.check()


@pytest.mark.parametrize("status", [200, 401, 429, 500])
def test_a_panel_that_echoes_the_key_in_its_reply_does_not_leak_it(
    panel: SandboxPanel, scan: Scan, status: int
) -> None:
    """Some panels repeat the request in their error text; the key must not ride along into errors or logs."""
    echo = f"Invalid API key: {panel.api_key}. Request: key={panel.api_key}&action=balance"
    panel.faults.add(None, "error", error=echo, status=status, times=None)
    hook = MirPanelHook()
    error = scan.call(hook.get_balance)
    assert isinstance(error, MirPanelError)
    if status != 429:
        assert "Invalid API key: ***" in str(error), "the panel's text is kept, without the key"
    scan.call(hook.test_connection)
    scan.call(lambda: hook.get_orders_status([1, 2]))
    panel.faults.clear()
    panel.faults.add("services", "body", body=json.dumps([{"service": 1, "name": "x", "desc": panel.api_key}]))
    scan.call(hook.get_services)
    asyncio.run(async_calls(scan, lambda hook: hook.get_balance(), lambda hook: hook.get_orders_status([1, 2])))
    scan.check()


# -- the async hook ------------------------------------------------------------------------------------------------


async def async_calls(scan: Scan, *calls: Callable[[MirPanelAsyncHook], Any]) -> None:
    async with MirPanelAsyncHook() as hook:
        for call in calls:
            try:
                scan.value(await call(hook))
            except Exception as error:
                scan.error(error)
        scan.value(repr(hook))


def test_the_async_hook_keeps_the_key_out_of_everything(panel: SandboxPanel, scan: Scan) -> None:
    ids = panel.create_orders(150)
    panel.faults.add("status", "http_status", status=502, times=2)
    panel.faults.add("balance", "drop", times=1)
    asyncio.run(
        async_calls(
            scan,
            lambda hook: hook.get_orders_status(ids),
            lambda hook: hook.get_refills_status([1, 2]),
            lambda hook: hook.get_balance(),
        )
    )
    with panel.outage():
        asyncio.run(async_calls(scan, lambda hook: hook.get_balance()))
    assert [type(error) for error in scan.errors] == [MirPanelTransientError], "only the outage failed"
    assert panel.count("status") >= 4
    scan.check(min_log_lines=5)


# -- operators, sensors, triggers ----------------------------------------------------------------------------------


def test_operators_keep_the_key_out_of_xcom_rendered_fields_and_errors(panel: SandboxPanel, scan: Scan) -> None:
    service = panel.catalogue.first_of_type("Default")
    orders = [
        {"service": service["service"], "link": f"https://example.com/o/{i}", "quantity": service["min"]}
        for i in range(5)
    ]
    panel.faults.add("add", "drop_after_processing", when=lambda form: form.get("link", "").endswith("/3"))
    store = InProcessStateStore()
    place = PlaceOrderOperator(task_id="place", orders=orders)
    scan.call(lambda: place.execute(task_context(store)))
    scan.value(store.values)
    ids = [order.id for order in panel.state.orders.values()]
    operators = [
        ServicesOperator(task_id="services", category="Instagram"),
        OrderStatusOperator(task_id="status", order_ids=ids),
        RefillOperator(task_id="refill", order_ids=ids[:2]),
        CancelOrdersOperator(task_id="cancel", order_ids=ids[2:]),
        BalanceCheckOperator(task_id="balance", min_balance=10**9),
    ]
    for op in operators:
        scan.call(partial(op.execute, task_context()))
    for op in [place, *operators]:
        scan.value({name: getattr(op, name) for name in op.template_fields})
        scan.value(repr(op))
    assert any(isinstance(error, MirPanelError) for error in scan.errors), "the ambiguous add failed the task"
    assert len(ids) == 5
    scan.check()


def test_sensors_and_triggers_keep_the_key_out_of_xcom_events_and_serialization(
    panel: SandboxPanel, scan: Scan
) -> None:
    ids = panel.create_orders(120)
    panel.complete_all()
    sensor = OrderStatusSensor(task_id="wait", order_ids=ids, poke_interval=0.01, timeout=10)
    panel.faults.add("status", "http_status", status=503, times=1)
    scan.call(lambda: sensor.poke(task_context()))
    scan.call(lambda: RefillStatusSensor(task_id="wait_refills", refill_ids=[404]).poke({}))
    scan.value({name: getattr(sensor, name) for name in sensor.template_fields})

    trigger = OrderStatusTrigger(order_ids=ids, poll_interval=0.01)
    refill_trigger = RefillStatusTrigger(refill_ids=[404], poll_interval=0.01)
    for each in (trigger, refill_trigger):
        scan.value(each.serialize())
        scan.value(repr(each))
    panel.faults.add("status", "html", status=503, times=1)
    events = asyncio.run(first_events(trigger, refill_trigger))
    scan.value([event.payload for event in events])
    assert events[0].payload["status"] == "success" and events[0].payload["ended"] == 120
    assert events[1].payload["status"] == "failed"
    scan.check()


async def first_events(*triggers: Any) -> list[Any]:
    events = []
    for trigger in triggers:
        async for event in trigger.run():
            events.append(event)
            break
    return events


# -- transport security (settings.py) ------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and block) any request either hook would send."""
    attempts: list[str] = []

    def blocked_send(self: Any, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        attempts.append(str(request.url))
        raise AssertionError("a request was attempted")

    async def blocked_request(self: Any, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(str(url))
        raise AssertionError("a request was attempted")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", blocked_send)
    monkeypatch.setattr(aiohttp.ClientSession, "_request", blocked_request)
    return attempts


INSECURE = [
    ({"host": "http://panel.example.com/api/v2"}, "plain http:// to panel.example.com"),
    ({"host": "HTTP://panel.example.com/api/v2"}, "plain http:// to panel.example.com"),
    ({"host": "panel.example.com/api/v2", "schema": "http"}, "plain http:// to panel.example.com"),
    ({"host": "http://10.0.0.5/api/v2"}, "plain http:// to 10.0.0.5"),
    ({"host": "http://0.0.0.0:8080/api/v2"}, "plain http:// to 0.0.0.0"),
    ({"host": "http://localhost.evil.example/api/v2"}, "plain http:// to localhost.evil.example"),
    ({"host": "http://127.0.0.1.nip.io/api/v2"}, "plain http:// to 127.0.0.1.nip.io"),
    ({"host": "https://panel.example.com/api/v2", "extra": {"verify": False}}, "TLS certificate verification"),
    ({"host": "https://panel.example.com/api/v2", "extra": {"verify_ssl": "false"}}, "TLS certificate verification"),
    (
        {"host": "https://panel.example.com/api/v2", "extra": {"verify": "0", "allow_insecure": "false"}},
        "TLS certificate verification",
    ),
]


def connection(fields: dict[str, Any]) -> str:
    return json.dumps({"conn_type": "mirpanel", "password": "k3y-" + "x" * 28, **fields})


@pytest.mark.parametrize(("fields", "problem"), INSECURE, ids=[json.dumps(f) for f, _ in INSECURE])
def test_insecure_transport_is_refused_before_any_request(
    fields: dict[str, Any], problem: str, no_network: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONN_ENV_VAR, connection(fields))
    with pytest.raises(MirPanelInputError, match="allow_insecure") as caught:
        MirPanelHook().get_balance()
    assert problem in str(caught.value)
    assert "k3y-" not in str(caught.value)
    with pytest.raises(MirPanelInputError, match="allow_insecure"):
        asyncio.run(async_balance())
    ok, message = MirPanelHook().test_connection()
    assert not ok and problem in message
    assert no_network == []


async def async_balance() -> Any:
    async with MirPanelAsyncHook() as hook:
        return await hook.get_balance()


@pytest.mark.parametrize("opt_in", [True, "true", "1", "yes"], ids=repr)
@pytest.mark.parametrize(("fields", "problem"), [INSECURE[0], INSECURE[7]], ids=["http", "no-verify"])
def test_allow_insecure_lets_it_through_with_a_warning(
    fields: dict[str, Any],
    problem: str,
    opt_in: Any,
    no_network: list[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fields = {**fields, "extra": {**fields.get("extra", {}), "allow_insecure": opt_in}}
    monkeypatch.setenv(CONN_ENV_VAR, connection(fields))
    with (
        caplog.at_level(logging.WARNING, logger="airflow_provider_mirpanel.client.settings"),
        pytest.raises(AssertionError, match="a request was attempted"),
    ):
        MirPanelHook().get_balance()
    assert len(no_network) == 1 and no_network[0].startswith(fields["host"].split("/api")[0].lower()[:12])
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("allowed by allow_insecure" in text and problem.split(" to ")[0] in text for text in warnings)


@pytest.mark.parametrize(
    "host",
    [
        "http://127.0.0.1:8765/api/v2",
        "http://localhost:8765/api/v2",
        "http://[::1]:8765/api/v2",
        "http://127.0.0.2/api/v2",
        "http://api.localhost/v2",
        "https://panel.example.com/api/v2",
        "panel.example.com/api/v2",
        "",
    ],
)
def test_loopback_http_and_https_need_no_opt_in(host: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        settings = ClientSettings.from_connection(host, None, None, {})
    assert settings.verify is True
    assert settings.url.startswith(("http://", "https://"))
    assert not [record for record in caplog.records if "allow_insecure" in record.getMessage()]


def test_a_url_that_is_not_http_is_refused(monkeypatch: pytest.MonkeyPatch, no_network: list[str]) -> None:
    for host in ("ftp://panel.example.com/api/v2", "file:///etc/passwd", "https://"):
        with pytest.raises(MirPanelInputError, match="http"):
            ClientSettings.from_connection(host, None, None, {"allow_insecure": True})
    assert no_network == []


def test_a_deferred_sensor_keeps_the_key_out_of_its_trigger_and_its_result(panel: SandboxPanel, scan: Scan) -> None:
    panel.speed = 0  # before the orders exist: they stay Pending, so the sensor defers
    ids = panel.create_orders(30)
    store = InProcessStateStore()
    sensor = OrderStatusSensor(task_id="wait", order_ids=ids, poke_interval=0.01, timeout=30, deferrable=True)
    with pytest.raises(TaskDeferred) as caught:  # TaskDeferred is a BaseException
        sensor.execute(task_context(store))
    deferred = caught.value
    scan.value([str(deferred), repr(deferred)])
    scan.value(deferred.trigger.serialize())
    scan.value([repr(deferred.trigger), repr(deferred.kwargs), deferred.method_name])
    panel.complete_all()
    event = asyncio.run(first_events(deferred.trigger))[0]
    scan.value(event.payload)
    records = scan.call(lambda: sensor.execute_complete(task_context(store), event.payload))
    assert [record["order"] for record in records] == ids
    scan.value(store.values)
    scan.check()
