"""``MirPanelAsyncHook``: the Perfect Panel API v2 reads over aiohttp, for triggers.

The async twin of :class:`~airflow_provider_mirpanel.hooks.mirpanel.MirPanelHook` for the reads a
trigger needs (order and refill statuses, balance). Request forms, reply parsing, error
classification and retry rules all come from :mod:`airflow_provider_mirpanel.protocol`; this module
only moves bytes. Nothing in it blocks the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import aiohttp
from airflow.providers.http.hooks.http import AsyncHttpSession, HttpAsyncHook, SessionConfig
from airflow.sdk import BaseHook
from airflow.sdk.log import amask_secret
from tenacity import AsyncRetrying

from airflow_provider_mirpanel.exceptions import (
    MirPanelAuthError,
    MirPanelError,
    MirPanelInputError,
    MirPanelTransientError,
)
from airflow_provider_mirpanel.hooks.mirpanel import USER_AGENT
from airflow_provider_mirpanel.protocol import (
    MULTI_PARSERS,
    READ_ONLY_ACTIONS,
    Action,
    batches,
    decode_reply,
    multi_form,
    normalize_ids,
    parse_balance,
    retry_arguments,
)
from airflow_provider_mirpanel.ratelimit import RateLimiter
from airflow_provider_mirpanel.settings import ClientSettings

Record = dict[str, Any]

KEEPALIVE_SECONDS = 30.0  # idle pooled connections stay open this long between requests and polls
REDACTED = "***"


def transport_error(error: BaseException, action: Action) -> MirPanelError:
    """The provider's exception for an aiohttp failure, knowing whether the request was sent.

    ``request_sent`` is False only when the connection was never made (refused, DNS, connect
    timeout); a dropped connection or a read timeout may have left the request processed.
    """
    name = action.value
    if isinstance(error, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch)):
        return MirPanelError(f"TLS failure talking to the panel ({name}): {error}")
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return MirPanelTransientError("connect timeout", request_sent=False, action=name)
    if isinstance(error, aiohttp.ClientConnectorError):
        return MirPanelTransientError(f"could not connect: {type(error).__name__}", request_sent=False, action=name)
    if isinstance(error, (aiohttp.SocketTimeoutError, asyncio.TimeoutError)):
        return MirPanelTransientError("no reply in time (read timeout)", action=name)
    if isinstance(error, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
        return MirPanelTransientError(f"connection lost before the reply: {type(error).__name__}", action=name)
    return MirPanelError(f"request to the panel failed ({name}): {type(error).__name__}: {error}")


def most_serious(errors: list[BaseException]) -> BaseException:
    """The error to raise for a multi call whose batches failed: a bug, then a bad key, then any
    other refusal or malformed reply, and a transient failure only when nothing worse happened."""

    def rank(error: BaseException) -> int:
        if not isinstance(error, MirPanelError):
            return 0
        if isinstance(error, MirPanelAuthError):
            return 1
        return 3 if isinstance(error, MirPanelTransientError) else 2

    return min(errors, key=rank)


class MirPanelAsyncHook(HttpAsyncHook):
    """Read order and refill statuses and the balance from a panel, asynchronously.

    Uses the same ``mirpanel`` connection as :class:`MirPanelHook` (host = API URL, password = API
    key, extras = client settings; none of the extras is ever sent). Multi-ID methods split the IDs
    into requests of at most 100, run ``concurrency`` of them at once over one keep-alive pool, and
    return one record per distinct ID in input order; transient failures are retried with the
    protocol's backoff. Use it as ``async with MirPanelAsyncHook(...) as hook:`` or call
    :meth:`close` so that the pool is released.

    :param mirpanel_conn_id: the Airflow connection to use.
    """

    conn_name_attr = "mirpanel_conn_id"
    default_conn_name = "mirpanel_default"
    conn_type = "mirpanel"
    hook_name = "MirPanel (async)"

    def __init__(self, mirpanel_conn_id: str = default_conn_name) -> None:
        # One attempt per request here: the protocol's rules decide the retries, not HttpAsyncHook's.
        super().__init__(method="POST", http_conn_id=mirpanel_conn_id, auth_type=None, retry_limit=1)
        self.mirpanel_conn_id = mirpanel_conn_id
        self._settings: ClientSettings | None = None
        self._key: str | None = None
        self._limiter = RateLimiter()
        self._session: aiohttp.ClientSession | None = None
        self._http: AsyncHttpSession | None = None
        self._reading = asyncio.Lock()  # concurrent first calls read the connection once

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mirpanel_conn_id={self.mirpanel_conn_id!r})"

    async def __aenter__(self) -> MirPanelAsyncHook:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- connection and session ------------------------------------------------------------------

    async def config(self) -> SessionConfig:
        """Read the connection once: settings from ``ClientSettings``, no extra sent as a header."""
        async with self._reading:
            if self._config is None:
                self._config = await self._read_connection()
        return self._config

    async def _read_connection(self) -> SessionConfig:
        conn = await BaseHook.aget_connection(self.mirpanel_conn_id)
        if not conn.password:
            raise MirPanelInputError(
                f"connection {self.mirpanel_conn_id!r} has no API key: put it in the password field"
            )
        await amask_secret(conn.password)
        extra = await conn.aextra_dejson()
        settings = ClientSettings.from_connection(conn.host, conn.schema, conn.port, extra)
        self._key, self._settings = conn.password, settings
        self._limiter = RateLimiter(settings.rate_limit)
        self.base_url = settings.url
        return SessionConfig(base_url=settings.url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})

    async def get_settings(self) -> ClientSettings:
        """The client settings of the connection (read once per hook)."""
        await self.config()
        assert self._settings is not None
        return self._settings

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced, for messages that leave the hook (events, logs)."""
        return text.replace(self._key, REDACTED) if self._key else text

    async def _get_http(self) -> AsyncHttpSession:
        config = await self.config()
        settings = await self.get_settings()
        if self._http is None:
            connector = aiohttp.TCPConnector(
                limit=settings.concurrency,
                keepalive_timeout=KEEPALIVE_SECONDS,
                ssl=settings.verify,
            )
            timeout = aiohttp.ClientTimeout(sock_connect=settings.connect_timeout, sock_read=settings.timeout)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=True)
            self._http = AsyncHttpSession(hook=self, request=self._session.post, config=config)
        return self._http

    async def close(self) -> None:
        """Close the pooled connections (the hook opens them again when used)."""
        session, self._session, self._http = self._session, None, None
        if session is not None:
            await session.close()

    # -- one request -----------------------------------------------------------------------------

    async def _send(self, action: Action, form: dict[str, str]) -> Any:
        """Send one request once and decode its reply."""
        http = await self._get_http()
        delay = self._limiter.reserve()
        if delay:
            await asyncio.sleep(delay)
        failure: MirPanelError | None = None
        try:
            response = await http.run(
                data={"key": self._key or "", **form},
                extra_options={"check_response": False, "allow_redirects": False},
            )
            async with response:
                body = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            failure = transport_error(error, action)
        if failure is not None:
            raise failure  # outside the except block, so the transport's exception is not its __context__
        return decode_reply(
            body,
            response.status,
            action,
            content_type=response.headers.get("Content-Type"),
            retry_after=response.headers.get("Retry-After"),
            location=response.headers.get("Location"),
            secret=self._key,
        )

    async def _call(self, action: Action, form: dict[str, str]) -> Any:
        """Send a request, retrying what the protocol allows to be retried."""
        settings = await self.get_settings()
        async for attempt in AsyncRetrying(**retry_arguments(action, settings.retry_policy, self.log)):
            with attempt:
                return await self._send(action, form)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _multi(self, action: Action, ids: Iterable[Any], what: str) -> list[Record]:
        """One record per distinct ID, in input order, from concurrent requests of at most 100 IDs."""
        if action not in READ_ONLY_ACTIONS:
            raise MirPanelInputError(f"the async hook only reads; {action.value!r} is not a read")
        distinct = normalize_ids(ids, what)
        if not distinct:
            return []
        settings = await self.get_settings()
        await self._get_http()
        parse = MULTI_PARSERS[action]
        slots = asyncio.Semaphore(settings.concurrency)

        async def batch(chunk: list[int]) -> list[Record]:
            async with slots:
                payload = await self._call(action, multi_form(action, chunk))
            return parse(payload, chunk)

        results = await asyncio.gather(*(batch(chunk) for chunk in batches(distinct)), return_exceptions=True)
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            raise most_serious(errors)
        return [record for chunk in results if isinstance(chunk, list) for record in chunk]

    # -- the API ---------------------------------------------------------------------------------

    async def get_orders_status(self, order_ids: Iterable[int | str]) -> list[Record]:
        """Status records of any number of orders (``order, status, charge, start_count, remains,
        currency, error``), one per distinct ID in input order; an unknown ID is a record with an error.

        :raises MirPanelAuthError: the key is refused.
        :raises MirPanelResponseError: a reply is not what the API promises.
        :raises MirPanelTransientError: a batch still failed after the retries.
        """
        return await self._multi(Action.STATUS, order_ids, "order")

    async def get_refills_status(self, refill_ids: Iterable[int | str]) -> list[Record]:
        """Statuses of any number of refills (``refill, status, error``), one per distinct ID in input
        order. Raises like :meth:`get_orders_status`."""
        return await self._multi(Action.REFILL_STATUS, refill_ids, "refill")

    async def get_balance(self) -> Record:
        """The account balance: ``balance, currency``."""
        return parse_balance(await self._call(Action.BALANCE, {"action": Action.BALANCE.value}))
