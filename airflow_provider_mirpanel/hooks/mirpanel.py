"""``MirPanelHook``: the whole Perfect Panel API v2 over an Airflow ``mirpanel`` connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk.log import mask_secret
from requests_toolbelt.adapters.socket_options import TCPKeepAliveAdapter
from tenacity import Retrying
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from airflow_provider_mirpanel import __version__
from airflow_provider_mirpanel.exceptions import (
    MirPanelAmbiguousOrderError,
    MirPanelAPIError,
    MirPanelAuthError,
    MirPanelError,
    MirPanelInputError,
    MirPanelTransientError,
)
from airflow_provider_mirpanel.protocol import (
    MULTI_PARSERS,
    Action,
    batches,
    build_add_form,
    decode_reply,
    multi_form,
    normalize_id,
    normalize_ids,
    outcome_unknown,
    parse_add,
    parse_balance,
    parse_order_status,
    parse_refill,
    parse_refill_status,
    parse_services,
    retry_arguments,
    single_form,
)
from airflow_provider_mirpanel.ratelimit import RateLimiter
from airflow_provider_mirpanel.settings import ClientSettings

Record = dict[str, Any]

USER_AGENT = f"airflow-provider-mirpanel/{__version__}"


def transport_error(error: requests.RequestException, action: Action) -> MirPanelError:
    """The provider's exception for a ``requests`` failure, knowing whether the request was sent."""
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
        return MirPanelTransientError(f"{what}: {type(reason or error).__name__}",
                                      request_sent=not never_connected, action=action.value)
    if isinstance(error, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return MirPanelTransientError(f"reply cut off: {type(error).__name__}", action=action.value)
    return MirPanelError(f"request to the panel failed ({action.value}): {type(error).__name__}: {error}")


class MirPanelHook(HttpHook):
    """Talk to MirPanel, or any panel serving the Perfect Panel API v2.

    The connection's host is the API URL (empty: ``https://mirpanel.com/api/v2``), its password the
    API key. Connection extras set the client: ``timeout`` (s), ``retries``, ``concurrency``,
    ``rate_limit`` (requests/min), ``allow_insecure``.

    Multi-ID methods take any iterable of IDs, drop duplicates, send them in requests of at most 100
    IDs (``concurrency`` at once) and return one flat record per distinct ID in input order; a
    per-ID error is data (the record's ``error`` field), not an exception. Reads are retried with
    backoff through transient failures; ``add`` is never resent once it may have reached the panel.

    :param mirpanel_conn_id: the Airflow connection to use.
    """

    conn_name_attr = "mirpanel_conn_id"
    default_conn_name = "mirpanel_default"
    conn_type = "mirpanel"
    hook_name = "MirPanel"

    def __init__(self, mirpanel_conn_id: str = default_conn_name) -> None:
        super().__init__(method="POST", http_conn_id=mirpanel_conn_id)
        self.mirpanel_conn_id = mirpanel_conn_id
        self._lock = threading.Lock()
        self._session: requests.Session | None = None
        self._settings: ClientSettings | None = None
        self._key: str | None = None
        self._limiter = RateLimiter()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mirpanel_conn_id={self.mirpanel_conn_id!r})"

    # -- connection and session ------------------------------------------------------------------

    @property
    def settings(self) -> ClientSettings:
        """The client settings of the connection (read once per hook)."""
        self._load()
        assert self._settings is not None
        return self._settings

    def _load(self) -> None:
        if self._settings is not None:
            return
        with self._lock:
            if self._settings is not None:
                return
            conn = self.get_connection(self.mirpanel_conn_id)
            if not conn.password:
                raise MirPanelInputError(
                    f"connection {self.mirpanel_conn_id!r} has no API key: put it in the password field"
                )
            mask_secret(conn.password)
            settings = ClientSettings.from_connection(conn.host, conn.schema, conn.port, conn.extra_dejson)
            self._key = conn.password
            self._limiter = RateLimiter(settings.rate_limit)
            self._settings = settings

    def get_conn(self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None) -> Any:
        """A ``requests.Session`` for the panel: keep-alive pool sized to the concurrency, TLS verified."""
        settings = self.settings
        self.keep_alive_adapter = TCPKeepAliveAdapter(
            idle=120, interval=30, count=20, pool_connections=1, pool_maxsize=settings.concurrency, max_retries=0
        )
        session = super().get_conn({"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})})
        return session

    def _set_base_url(self, connection: Any) -> None:
        self.base_url = self.settings.url
        self._srv_lookup_enabled = False
        self._base_url_initialized = True

    def _configure_session_from_auth(self, session: requests.Session, connection: Any) -> requests.Session:
        session.auth = None  # the key travels in the POST body, never as HTTP auth
        return session

    def _configure_session_from_extra(
        self, session: requests.Session, connection: Any, extra_options: dict[str, Any]
    ) -> requests.Session:
        # HttpHook would send every unknown extra key as an HTTP header: our settings are not headers.
        session.verify = self.settings.verify
        return session

    def _get_session(self) -> requests.Session:
        if self._session is None:
            self._load()
            with self._lock:
                if self._session is None:
                    self._session = self.get_conn()
        return self._session

    def close(self) -> None:
        """Close the pooled connections (the hook opens them again when used)."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    # -- one request -----------------------------------------------------------------------------

    def _send(self, action: Action, form: dict[str, str]) -> Any:
        """Send one request once and decode its reply."""
        session = self._get_session()
        settings = self.settings
        delay = self._limiter.reserve()
        if delay:
            time.sleep(delay)
        failure: MirPanelError | None = None
        try:
            response = session.post(
                settings.url,
                data={"key": self._key, **form},
                timeout=(settings.connect_timeout, settings.timeout),
                allow_redirects=False,
            )
        except requests.RequestException as error:
            failure = transport_error(error, action)
        if failure is not None:
            # Raised outside the except block: requests' exception holds the prepared request, whose
            # body holds the key, and must not ride along as __context__.
            raise failure
        return decode_reply(
            response.content,
            response.status_code,
            action,
            content_type=response.headers.get("Content-Type"),
            retry_after=response.headers.get("Retry-After"),
            location=response.headers.get("Location"),
            secret=self._key,
        )

    def _call(self, action: Action, form: dict[str, str]) -> Any:
        """Send a request, retrying what the protocol allows to be retried."""
        for attempt in Retrying(**retry_arguments(action, self.settings.retry_policy, self.log)):
            with attempt:
                return self._send(action, form)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _multi(self, action: Action, ids: Iterable[Any], what: str) -> list[Record]:
        """One record per distinct ID, in input order, from concurrent requests of at most 100 IDs."""
        distinct = normalize_ids(ids, what)
        if not distinct:
            return []
        parse = MULTI_PARSERS[action]
        make_records: Callable[[list[int]], list[Record]]
        if action in (Action.REFILL, Action.CANCEL):
            make_records = lambda chunk: self._write_batch(action, chunk, parse)  # noqa: E731
        else:
            make_records = lambda chunk: parse(self._call(action, multi_form(action, chunk)), chunk)  # noqa: E731
        chunks = batches(distinct)
        if len(chunks) == 1:
            return make_records(chunks[0])
        workers = min(self.settings.concurrency, len(chunks))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mirpanel") as pool:
            return [record for chunk in pool.map(make_records, chunks) for record in chunk]

    def _write_batch(
        self, action: Action, chunk: list[int], parse: Callable[[Any, list[int]], list[Record]]
    ) -> list[Record]:
        """A refill/cancel batch: a failure becomes per-ID errors so other batches' results survive.

        A bad key still raises: nothing can succeed with it.
        """
        try:
            return parse(self._call(action, multi_form(action, chunk)), chunk)
        except MirPanelAuthError:
            raise
        except MirPanelAPIError as error:
            reason = error.panel_message
        except MirPanelError as error:
            known = isinstance(error, MirPanelTransientError) and not error.request_sent
            reason = f"{'not sent' if known else 'outcome unknown'}: {error}"
        return parse({str(item): {"error": reason} for item in chunk}, chunk)

    # -- the API ---------------------------------------------------------------------------------

    def get_services(self) -> list[Record]:
        """The panel's catalogue: one record per service (``service, name, type, category, rate, min,
        max, refill, cancel, dripfeed`` typed; other keys the panel sends kept as they come)."""
        return parse_services(self._call(Action.SERVICES, {"action": Action.SERVICES.value}))

    def add_order(self, service: int | str, **params: Any) -> Record:
        """Place one order and return ``{order, service, <parameters sent>}``.

        Parameters are those of the service's type (``link``, ``quantity``, ``runs``, ``interval``,
        ``comments``, ``usernames``, …); lists in multi-line fields are joined with newlines.
        Unknown parameter names or bad values raise :class:`MirPanelInputError` before any request.
        If the panel may have placed the order but the reply was lost, raises
        :class:`MirPanelAmbiguousOrderError` — the order is never resent.
        """
        form = build_add_form(service, params)
        try:
            payload = self._call(Action.ADD, {"action": Action.ADD.value, **form})
            return parse_add(payload, form)
        except MirPanelError as error:
            if outcome_unknown(Action.ADD, error):
                raise MirPanelAmbiguousOrderError(form, str(error)) from error
            raise

    def get_order_status(self, order_id: int | str) -> Record:
        """The status record of one order: ``order, status, charge, start_count, remains, currency, error``."""
        number = normalize_id(order_id, "order")
        return parse_order_status(self._call(Action.STATUS, single_form(Action.STATUS, number)), number)

    def get_orders_status(self, order_ids: Iterable[int | str]) -> list[Record]:
        """Status records of any number of orders, one per distinct ID in input order."""
        return self._multi(Action.STATUS, order_ids, "order")

    def refill_order(self, order_id: int | str) -> Record:
        """Request a refill of one order: ``order, refill, error``."""
        number = normalize_id(order_id, "order")
        return parse_refill(self._call(Action.REFILL, single_form(Action.REFILL, number)), number)

    def refill_orders(self, order_ids: Iterable[int | str]) -> list[Record]:
        """Request refills of any number of orders: one ``order, refill, error`` record per order."""
        return self._multi(Action.REFILL, order_ids, "order")

    def get_refill_status(self, refill_id: int | str) -> Record:
        """The status of one refill: ``refill, status, error``."""
        number = normalize_id(refill_id, "refill")
        return parse_refill_status(
            self._call(Action.REFILL_STATUS, single_form(Action.REFILL_STATUS, number)), number
        )

    def get_refills_status(self, refill_ids: Iterable[int | str]) -> list[Record]:
        """Statuses of any number of refills, one record per distinct refill ID in input order."""
        return self._multi(Action.REFILL_STATUS, refill_ids, "refill")

    def cancel_orders(self, order_ids: Iterable[int | str]) -> list[Record]:
        """Cancel any number of orders: one ``order, cancel, error`` record per order."""
        return self._multi(Action.CANCEL, order_ids, "order")

    def get_balance(self) -> Record:
        """The account balance: ``balance, currency``."""
        return parse_balance(self._call(Action.BALANCE, {"action": Action.BALANCE.value}))

    def test_connection(self) -> tuple[bool, str]:
        """Check the URL and key with a ``balance`` request (changes nothing on the panel)."""
        try:
            balance = self.get_balance()
        except Exception as error:
            return False, str(error)
        return True, f"Connected: balance {balance['balance']} {balance['currency'] or ''}".rstrip()
