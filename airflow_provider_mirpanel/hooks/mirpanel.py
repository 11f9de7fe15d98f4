"""``MirPanelHook``: the whole Perfect Panel API v2 over an Airflow ``mirpanel`` connection.

The hook owns its ``requests.Session`` (a keep-alive pool sized to ``concurrency``) and only moves
bytes: reading the connection, planning multi-ID calls, decoding replies and merging chunks are
:mod:`airflow_provider_mirpanel.client.calls`'s; every rule of the API is :mod:`airflow_provider_mirpanel.protocol`'s.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import requests
from requests_toolbelt.adapters.socket_options import TCPKeepAliveAdapter
from tenacity import Retrying
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from airflow_provider_mirpanel.assets.lineage import collect_action
from airflow_provider_mirpanel.client.calls import HEADERS, USER_AGENT, MultiCall, PanelConnection
from airflow_provider_mirpanel.client.settings import ClientSettings
from airflow_provider_mirpanel.client.shared_budget import RedisBudget, password_of, url_of
from airflow_provider_mirpanel.exceptions import (
    MirPanelAmbiguousOrderError,
    MirPanelError,
    MirPanelTransientError,
)
from airflow_provider_mirpanel.hooks.base import MirPanelBaseHook
from airflow_provider_mirpanel.protocol import (
    Action,
    OrderParameter,
    action_form,
    build_add_form,
    normalize_id,
    outcome_unknown,
    parse_add,
    parse_balance,
    parse_order_status,
    parse_refill,
    parse_refill_status,
    parse_services,
    replies,
    retry_arguments,
    single_form,
)
from airflow_provider_mirpanel.utils.airflow_lines import connection_form_widgets, ui_field_behaviour
from airflow_provider_mirpanel.version_compat import mask_secret

__all__ = ["USER_AGENT", "MirPanelHook", "transport_error"]


def transport_error(error: requests.RequestException, action: Action) -> MirPanelError:
    """Return the provider's exception for a ``requests`` failure, knowing whether the request was sent."""
    if isinstance(error, requests.exceptions.SSLError):
        return MirPanelError(f"TLS failure talking to the panel ({action.value}): {error}")
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return MirPanelTransientError("connect timeout", request_sent=False, action=action.value)
    if isinstance(error, requests.exceptions.ReadTimeout):
        return MirPanelTransientError("no reply in time (read timeout)", action=action.value)
    if isinstance(error, requests.exceptions.ConnectionError):
        reason = getattr(error.args[0], "reason", None) if error.args else None
        never_connected = isinstance(reason, (NewConnectionError, ConnectTimeoutError))
        what = "could not connect" if never_connected else "connection lost before the reply"
        return MirPanelTransientError(
            f"{what}: {type(reason or error).__name__}", request_sent=not never_connected, action=action.value
        )
    if isinstance(error, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return MirPanelTransientError(f"reply cut off: {type(error).__name__}", action=action.value)
    return MirPanelError(f"request to the panel failed ({action.value}): {type(error).__name__}: {error}")


def _new_session(settings: ClientSettings) -> requests.Session:
    session = requests.Session()
    session.headers.update(HEADERS)
    session.verify = settings.verify
    adapter = TCPKeepAliveAdapter(
        idle=120, interval=30, count=20, pool_connections=1, pool_maxsize=settings.concurrency, max_retries=0
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _outcome(future: Future[list[Any]]) -> list[Any] | BaseException:
    return future.exception() or future.result()


class MirPanelHook(MirPanelBaseHook):
    """Talk to MirPanel, or any panel serving the Perfect Panel API v2.

    .. seealso::
        ``docs/reference.md``, "MirPanelHook": what it does, returns and raises;
        its connection: ``README.md``, "The hook".

    :param mirpanel_conn_id: the Airflow connection to use.
    """

    hook_name = "MirPanel"

    def __init__(self, mirpanel_conn_id: str = MirPanelBaseHook.default_conn_name) -> None:
        super().__init__(mirpanel_conn_id)
        self._lock = threading.Lock()
        self._session: requests.Session | None = None
        self._lineage_reported: set[Action] = set()

    # -- the connection form on Airflow 3.1 (3.2+ reads provider_info's conn-fields instead) --------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the form's extra fields, from provider_info's ``conn-fields`` (read by Airflow 3.1 only)."""
        from airflow_provider_mirpanel.get_provider_info import connection_type

        return connection_form_widgets(connection_type()["conn-fields"])

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden, relabelled and placeholder fields, from provider_info (read by Airflow 3.1 only)."""
        from airflow_provider_mirpanel.get_provider_info import connection_type

        return ui_field_behaviour(connection_type()["ui-field-behaviour"])

    # -- connection and session ------------------------------------------------------------------

    @property
    def panel(self) -> PanelConnection:
        """The connection, read once per hook (settings and key)."""
        if self._panel is None:
            with self._lock:
                if self._panel is None:
                    conn = self.get_connection(self.mirpanel_conn_id)
                    panel = PanelConnection.read(self.mirpanel_conn_id, conn, conn.extra_dejson)
                    mask_secret(panel.key)
                    self._limiter = self._rate_limiter(panel, self._shared_budget(panel))
                    self._panel = panel
        return self._panel

    def _shared_budget(self, panel: PanelConnection) -> RedisBudget | None:
        """Return the key's budgets in Redis, when the connection extra ``budget_redis`` names a Redis."""
        location = panel.settings.budget_redis
        if location is None:
            return None
        redis_conn = None if "://" in location else self.get_connection(location)
        url = url_of(location, redis_conn, redis_conn.extra_dejson if redis_conn is not None else None)
        if (password := password_of(url)) is not None:
            mask_secret(password)
        return RedisBudget(url, panel.settings.url, panel.key)

    @property
    def settings(self) -> ClientSettings:
        """The client settings of the connection (read once per hook)."""
        return self.panel.settings

    def get_conn(self) -> requests.Session:
        """Return the hook's ``requests.Session``, made on first use.

        A keep-alive pool sized to the concurrency, TLS verified, the provider's headers; shared by the
        hook's threads.
        """
        if self._session is None:
            settings = self.settings  # read before taking the lock: reading the connection takes it too
            with self._lock:
                if self._session is None:
                    self._session = _new_session(settings)
        return self._session

    def close(self) -> None:
        """Close the pooled connections (the hook opens them again when used)."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    # -- moving bytes ----------------------------------------------------------------------------

    def _send(self, action: Action, form: dict[str, str]) -> Any:
        """Send one request and decode its reply.

        Sent again only when the panel turned it away unprocessed for its rate limit (see
        :meth:`.RateLimiter.after_reply`).
        """
        session, panel = self.get_conn(), self.panel
        throttles = 0
        while True:
            self._limiter.wait(action.value, self.log)
            failure: MirPanelError | None = None
            try:
                response = session.post(
                    panel.settings.url,
                    data=panel.body(form),
                    allow_redirects=False,
                    timeout=(panel.settings.connect_timeout, panel.settings.timeout),
                )
            except requests.RequestException as error:
                failure = transport_error(error, action)
            if failure is not None:
                # Raised outside the except block: requests' exception holds the prepared request, whose
                # body holds the key, and must not ride along as __context__.
                raise failure
            try:
                payload = panel.decode(action, response.status_code, response.headers, response.content)
            except MirPanelError as error:
                if not self._limiter.after_reply(action.value, response.headers, error, throttles):
                    raise
                throttles += 1
                continue
            self._limiter.after_reply(action.value, response.headers, None, throttles)
            return payload

    def _call(self, action: Action, form: dict[str, str]) -> Any:
        """Send a request, retrying what the protocol allows to be retried."""
        if action not in self._lineage_reported:  # once per action: the collector counts every report
            self._lineage_reported.add(action)
            collect_action(self, self.mirpanel_conn_id, action.value)
        for attempt in Retrying(**retry_arguments(action, self.settings.retry_policy, self.log)):
            with attempt:
                return self._send(action, form)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _multi(self, action: Action, ids: Iterable[Any], what: str) -> list[Any]:
        """One record per distinct ID, in input order, from concurrent requests of at most 100 IDs."""
        call = MultiCall.plan(action, ids, what)

        def batch(chunk: list[int], form: dict[str, str]) -> list[Any]:
            try:
                reply = self._call(action, form)
            except Exception as error:  # the core decides what a failed chunk gives
                reply = error
            return call.records(chunk, reply)

        if len(call.chunks) <= 1:
            return [record for chunk, form in call.requests for record in batch(chunk, form)]
        with ThreadPoolExecutor(min(self.settings.concurrency, len(call.chunks)), "mirpanel") as pool:
            futures = [pool.submit(batch, chunk, form) for chunk, form in call.requests]
            return call.merge([_outcome(future) for future in futures])

    # -- the API ---------------------------------------------------------------------------------

    def get_services(self) -> list[replies.ServiceRecord]:
        """Return the panel's catalogue: one record per service.

        ``service, name, type, category, rate, min, max, refill, cancel, dripfeed`` are typed; other
        keys the panel sends are kept as they come.
        """
        return parse_services(self._call(Action.SERVICES, action_form(Action.SERVICES)))

    def add_order(self, service: int | str, **params: OrderParameter) -> replies.AddOrderRecord:
        """Place one order and return ``{order, service, <parameters sent>}``.

        Parameters are those of the service's type (``link``, ``quantity``, ``runs``, ``interval``,
        ``comments``, ``usernames``, …); lists in multi-line fields are joined with newlines.
        Unknown parameter names or bad values raise :class:`MirPanelInputError` before any request.
        If the panel may have placed the order but the reply was lost, raises
        :class:`MirPanelAmbiguousOrderError` — the order is never resent.
        """
        form = build_add_form(service, params)
        try:
            payload = self._call(Action.ADD, {**action_form(Action.ADD), **form})
            return parse_add(payload, form)
        except MirPanelError as error:
            if outcome_unknown(Action.ADD, error):
                raise MirPanelAmbiguousOrderError(form, str(error)) from error
            raise

    def get_order_status(self, order_id: int | str) -> replies.OrderStatusRecord:
        """Return the status record of one order: ``order, status, charge, start_count, remains, currency, error``."""
        number = normalize_id(order_id, "order")
        return parse_order_status(self._call(Action.STATUS, single_form(Action.STATUS, number)), number)

    def get_orders_status(self, order_ids: Iterable[int | str]) -> list[replies.OrderStatusRecord]:
        """Status records of any number of orders, one per distinct ID in input order."""
        return cast(list[replies.OrderStatusRecord], self._multi(Action.STATUS, order_ids, "order"))

    def refill_order(self, order_id: int | str) -> replies.RefillRecord:
        """Request a refill of one order: ``order, refill, error``."""
        number = normalize_id(order_id, "order")
        return parse_refill(self._call(Action.REFILL, single_form(Action.REFILL, number)), number)

    def refill_orders(self, order_ids: Iterable[int | str]) -> list[replies.RefillRecord]:
        """Request refills of any number of orders: one ``order, refill, error`` record per order."""
        return cast(list[replies.RefillRecord], self._multi(Action.REFILL, order_ids, "order"))

    def get_refill_status(self, refill_id: int | str) -> replies.RefillStatusRecord:
        """Return the status of one refill: ``refill, status, error``."""
        number = normalize_id(refill_id, "refill")
        return parse_refill_status(self._call(Action.REFILL_STATUS, single_form(Action.REFILL_STATUS, number)), number)

    def get_refills_status(self, refill_ids: Iterable[int | str]) -> list[replies.RefillStatusRecord]:
        """Statuses of any number of refills, one record per distinct refill ID in input order."""
        return cast(list[replies.RefillStatusRecord], self._multi(Action.REFILL_STATUS, refill_ids, "refill"))

    def cancel_orders(self, order_ids: Iterable[int | str]) -> list[replies.CancelRecord]:
        """Cancel any number of orders: one ``order, cancel, error`` record per order."""
        return cast(list[replies.CancelRecord], self._multi(Action.CANCEL, order_ids, "order"))

    def get_balance(self) -> replies.BalanceRecord:
        """Return the account balance: ``balance, currency``."""
        return parse_balance(self._call(Action.BALANCE, action_form(Action.BALANCE)))

    def test_connection(self) -> tuple[bool, str]:
        """Check the URL and key with a ``balance`` request (changes nothing on the panel)."""
        try:
            balance = self.get_balance()
        except Exception as error:
            return False, str(error)
        return True, f"Connected: balance {balance['balance']} {balance['currency'] or ''}".rstrip()
