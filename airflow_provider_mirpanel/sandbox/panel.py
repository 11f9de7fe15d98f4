"""``SandboxPanel``: a local Perfect Panel API v2 server for tests, demos, benchmarks and offline DAGs."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

from airflow_provider_mirpanel.client.defaults import RATE_LIMITS_OFF
from airflow_provider_mirpanel.protocol import order_cost, to_float, to_int
from airflow_provider_mirpanel.sandbox.actions import PanelApi
from airflow_provider_mirpanel.sandbox.catalogue import Catalogue, default_catalogue
from airflow_provider_mirpanel.sandbox.clock import SandboxClock
from airflow_provider_mirpanel.sandbox.faults import Faults
from airflow_provider_mirpanel.sandbox.ids import (
    FIRST_ORDER_ID,
    FIRST_REFILL_ID,
    ClockIds,
    CountingIds,
    IdFile,
    IdSource,
)
from airflow_provider_mirpanel.sandbox.limits import RateLimits
from airflow_provider_mirpanel.sandbox.log import RequestEntry
from airflow_provider_mirpanel.sandbox.server import SandboxServer
from airflow_provider_mirpanel.sandbox.state import Lifecycle, Order, PanelState, Refill, Remains

CONN_ENV_VAR = "AIRFLOW_CONN_MIRPANEL_DEFAULT"
#: Sandbox seconds per real second by default (``make sandbox``). With the default :class:`Lifecycle` an
#: order is Pending for 30 s and ends within 3 minutes (1,000 units: 80 s), as slow as a fast real panel:
#: a sensor run by a scheduler finds it unfinished at its check on the worker and defers. Tests and
#: ``make demo`` pick a faster clock.
DEFAULT_SPEED = 2.0


def require_loopback(host: str) -> None:
    """Refuse any host that is not a loopback address: the sandbox never listens on a network."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the sandbox panel only listens on loopback (127.0.0.1, ::1, localhost), not {host!r}")


def _id_sources(
    id_file: str | os.PathLike[str] | None, first_order_id: int | None, first_refill_id: int | None
) -> tuple[IdSource, IdSource]:
    """Where the panel's order and refill IDs come from (see :class:`SandboxPanel`)."""
    first = {"order": first_order_id or FIRST_ORDER_ID, "refill": first_refill_id or FIRST_REFILL_ID}
    if id_file is not None:
        ids = IdFile(id_file, first)
        return ids.source("order"), ids.source("refill")
    if first_order_id is not None or first_refill_id is not None:
        return CountingIds(first["order"]), CountingIds(first["refill"])
    return ClockIds("order"), ClockIds("refill")


class SandboxPanel:
    """A faithful local panel serving the Perfect Panel API v2 over real HTTP on loopback.

    ::

        with SandboxPanel() as panel:
            requests.post(panel.url, data={"key": panel.api_key, "action": "balance"}).json()

    Args:
        host: loopback address to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port` after start).
        api_key: the key clients must send; a random one by default.
        balance: starting balance.
        currency: currency of ``status`` and ``balance`` replies.
        speed: sandbox seconds per real second (default :data:`DEFAULT_SPEED`, 2: orders take a minute
            or two); 0 freezes the clock (move it with :meth:`advance`), 1000 ends orders within 0.3 s.
        catalogue: services to sell (a list of service dicts or a :class:`Catalogue`); default the
            packaged real 4,156-service catalogue.
        lifecycle: how fast orders and refills progress, and which end Partial/Rejected.
        latency: seconds added to every reply (settable later as :attr:`latency`).
        id_file: a JSON file keeping the next order and refill IDs: a panel started with the same file
            continues where the last one stopped (a new file starts at 1000 and 1, or at
            ``first_order_id`` / ``first_refill_id``). One running panel per file.
        first_order_id, first_refill_id: without ``id_file``, count IDs up from these: the same IDs
            in every run, for tests that name them (a restarted panel hands them out again).
        rate_limits: per-key limits to enforce, action → (requests, per seconds), e.g.
            ``{"add": (600, 60)}``; over a limit the panel answers 429 with ``Retry-After`` and
            ``X-RateLimit-*`` headers (see :mod:`~airflow_provider_mirpanel.sandbox.limits`). Default:
            none, the sandbox answers every request.
        limits_clock: the time the limits are kept in (seconds, monotonic; real time by default,
            not the sandbox clock: a client's budget is in real seconds). Tests give a fake one.

    Without ``id_file`` or a first ID, IDs come from the clock (microseconds since 2026-01-01 UTC,
    e.g. ``29001234567890``): a panel started later never hands out an ID an earlier one did, so
    orders of a restarted sandbox never collide with those already in a warehouse.

    ``state`` holds orders, refills and balance, ``faults`` the fault rules, ``requests`` the
    request log (a list of :class:`RequestEntry`; ``panel.requests.clear()`` empties it),
    ``limits`` the rate limits and their counters (``panel.limits.refused["add"]``: 429s sent).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        balance: float = 1000.0,
        currency: str = "USD",
        speed: float = DEFAULT_SPEED,
        catalogue: Catalogue | Iterable[Mapping[str, Any]] | None = None,
        lifecycle: Lifecycle | None = None,
        latency: float = 0.0,
        id_file: str | os.PathLike[str] | None = None,
        first_order_id: int | None = None,
        first_refill_id: int | None = None,
        rate_limits: Mapping[str, tuple[int, float]] | None = None,
        limits_clock: Callable[[], float] = time.monotonic,
    ):
        require_loopback(host)
        self.api_key = api_key if api_key is not None else secrets.token_hex(16)
        if catalogue is None:
            catalogue = default_catalogue()
        self.catalogue = catalogue if isinstance(catalogue, Catalogue) else Catalogue(catalogue)
        self.clock = SandboxClock(speed)
        order_ids, refill_ids = _id_sources(id_file, first_order_id, first_refill_id)
        self.state = PanelState(self.clock, lifecycle or Lifecycle(), balance, currency, order_ids, refill_ids)
        self.faults = Faults()
        self.requests: list[RequestEntry] = []
        self.limits = RateLimits(rate_limits or {}, limits_clock)
        self._server = SandboxServer(
            PanelApi(self.state, self.catalogue, self.api_key), self.faults, self.requests, host, port, self.limits
        )
        self._server.latency = latency

    def __repr__(self) -> str:
        where = self.url if self._server.running else "stopped"
        return f"SandboxPanel({where}, orders={len(self.state.orders)}, refills={len(self.state.refills)})"

    # -- running ------------------------------------------------------------------------------

    def start(self) -> SandboxPanel:
        """Start serving in a background thread."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving; in-flight requests are cut off."""
        self._server.stop()

    def __enter__(self) -> SandboxPanel:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def down(self, seconds: float | None = None) -> None:
        """Go down: connections are refused (open ones closed) until :meth:`up`, or for ``seconds``."""
        self._server.down(seconds)

    def up(self) -> None:
        """Come back up on the same port."""
        self._server.up()

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Refuse connections inside the ``with`` block."""
        self.down()
        try:
            yield
        finally:
            self.up()

    # -- where and how to reach it ------------------------------------------------------------

    @property
    def host(self) -> str:
        """The host the panel listens on."""
        return self._server.host

    @property
    def port(self) -> int:
        """The port the panel listens on."""
        return self._server.port

    @property
    def url(self) -> str:
        """The API endpoint, e.g. ``http://127.0.0.1:8765/api/v2``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/api/v2"

    def connection(self, **extra: Any) -> dict[str, Any]:
        """Return the Airflow connection's fields, to reach this panel.

        conn_type ``mirpanel``, host = :attr:`url`, password = key, and ``extra``: the client settings
        given (``panel.connection(retries=1)``) and ``rate_limits`` ``false``.

        The sandbox answers as fast as the machine allows and has no request limit of its own, and tests, demos and
        benchmarks send thousands of requests: the published limits' budgets, which a connection to
        a real panel gets by default, would only make them wait (``rate_limits=None`` keeps them).
        """
        return {
            "conn_type": "mirpanel",
            "host": self.url,
            "password": self.api_key,
            "extra": {"rate_limits": RATE_LIMITS_OFF, **extra},
        }

    def connection_json(self, **extra: Any) -> str:
        """Return the Airflow connection as JSON, the form ``AIRFLOW_CONN_*`` variables take."""
        return json.dumps(self.connection(**extra))

    def connection_uri(self) -> str:
        """Return the Airflow connection as a URI (``airflow connections add --conn-uri``).

        With ``rate_limits`` ``false``, as :meth:`connection`.
        """
        scheme, rest = self.url.split("://", 1)
        return f"mirpanel://{scheme}://:{quote(self.api_key, safe='')}@{quote(rest, safe='')}?rate_limits=false"

    def env(self, **extra: Any) -> dict[str, str]:
        """``{"AIRFLOW_CONN_MIRPANEL_DEFAULT": <json>}``, to put in ``os.environ``."""
        return {CONN_ENV_VAR: self.connection_json(**extra)}

    # -- observing ----------------------------------------------------------------------------

    @property
    def latency(self) -> float:
        """Seconds added to every reply; change it at any time."""
        return self._server.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must not be negative")
        self._server.latency = seconds

    @property
    def connections(self) -> int:
        """How many distinct TCP connections have sent requests."""
        return self._server.connections

    def count(self, action: str | None = None) -> int:
        """How many requests were received (for one action, or all)."""
        entries = list(self.requests)
        return len(entries) if action is None else sum(1 for entry in entries if entry.action == action)

    @property
    def balance(self) -> float:
        """The current balance (also ``state.balance``)."""
        return self.state.balance

    # -- steering -----------------------------------------------------------------------------

    @property
    def speed(self) -> float:
        """Sandbox seconds per real second (0: frozen)."""
        return self.clock.speed

    @speed.setter
    def speed(self, value: float) -> None:
        self.clock.speed = value

    def advance(self, seconds: float) -> None:
        """Move the sandbox clock forward: orders and refills progress as if that time had passed."""
        self.clock.advance(seconds)

    def set_order(self, order_id: int, status: str | None = None, remains: Remains | None = None) -> Order:
        """Force an order's status and remains (any spelling: ``"cancelled"``, ``"processing"``).

        Partial/Canceled refund the undelivered part, Refunded the whole charge. ``remains``
        defaults to 0 for Completed, the order's quantity for Pending/Canceled/others, and may be a
        text such as ``"Unknown"``.
        """
        return self.state.set_order(order_id, status, remains)

    def set_refill(self, refill_id: int, status: str) -> Refill:
        """Force a refill's status."""
        return self.state.set_refill(refill_id, status)

    def complete_all(self) -> None:
        """End every unfinished order and refill as Completed."""
        self.state.complete_all()

    def create_orders(
        self,
        n: int,
        service: int | None = None,
        quantity: int | None = None,
        link: str = "https://example.com/sandbox/{id}",
        status: str | None = None,
        remains: Remains | None = None,
    ) -> list[int]:
        """Insert ``n`` orders straight into the state (no HTTP, no validation, balance untouched).

        ``service`` defaults to the catalogue's first Default service and ``quantity`` to its
        minimum; ``{id}`` in ``link`` becomes each order's ID. With ``status`` the orders are frozen
        in it. Returns the new order IDs. Fast enough for 100,000 orders.
        """
        entry = self.catalogue.by_id[service] if service is not None else self.catalogue.first_of_type("Default")
        if quantity is None:
            quantity = to_int(entry.get("min")) or 1
        cost = round(order_cost(to_float(entry.get("rate")), quantity), 5)
        service_id = to_int(entry.get("service"))
        assert service_id is not None  # the catalogue refuses services without one
        return self.state.insert_orders(n, service_id, link, quantity, cost, status, remains)
