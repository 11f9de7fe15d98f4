"""``MirPanelAsyncHook``: the Perfect Panel API v2 reads over aiohttp, for triggers.

The async twin of :class:`~airflow_provider_mirpanel.hooks.mirpanel.MirPanelHook` for the reads a
trigger needs (order and refill statuses, balance). It owns its ``aiohttp.ClientSession`` and only
moves bytes: the connection, the multi-ID plan, decoding and merging are
:mod:`airflow_provider_mirpanel.client.calls`'s, every rule of the API :mod:`airflow_provider_mirpanel.protocol`'s,
so it gives the same records and raises the same exceptions as the sync hook. Nothing in it blocks
the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any, cast

import aiohttp
from tenacity import AsyncRetrying

from airflow_provider_mirpanel.client.calls import HEADERS, REDACTED, MultiCall, PanelConnection, most_serious
from airflow_provider_mirpanel.client.settings import ClientSettings
from airflow_provider_mirpanel.client.shared_budget import RedisBudget, password_of, url_of
from airflow_provider_mirpanel.exceptions import MirPanelError, MirPanelInputError, MirPanelTransientError
from airflow_provider_mirpanel.hooks.base import MirPanelBaseHook
from airflow_provider_mirpanel.protocol import (
    READ_ONLY_ACTIONS,
    Action,
    BalanceRecord,
    OrderStatusRecord,
    RefillStatusRecord,
    action_form,
    parse_balance,
    retry_arguments,
)
from airflow_provider_mirpanel.utils.airflow_lines import aextra_dejson, amask_secret
from airflow_provider_mirpanel.version_compat import BaseHook

__all__ = ["KEEPALIVE_SECONDS", "REDACTED", "MirPanelAsyncHook", "most_serious", "transport_error"]

KEEPALIVE_SECONDS = 30.0  # idle pooled connections stay open this long between requests and polls


def transport_error(error: BaseException, action: Action) -> MirPanelError:
    """Return the provider's exception for an aiohttp failure, knowing whether the request was sent.

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


class MirPanelAsyncHook(MirPanelBaseHook):
    """Read order and refill statuses and the balance from a panel, asynchronously.

    .. seealso::
        ``docs/reference.md``, "MirPanelAsyncHook": what it does, returns and raises.

    :param mirpanel_conn_id: the Airflow connection to use.
    """

    hook_name = "MirPanel (async)"

    def __init__(self, mirpanel_conn_id: str = MirPanelBaseHook.default_conn_name) -> None:
        super().__init__(mirpanel_conn_id)
        self._session: aiohttp.ClientSession | None = None
        self._reading = asyncio.Lock()  # concurrent first calls read the connection once

    async def __aenter__(self) -> MirPanelAsyncHook:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- connection and session ------------------------------------------------------------------

    async def get_panel(self) -> PanelConnection:
        """Return the connection, read once per hook (settings and key)."""
        async with self._reading:
            if self._panel is None:
                conn = await BaseHook.aget_connection(self.mirpanel_conn_id)
                panel = PanelConnection.read(self.mirpanel_conn_id, conn, await aextra_dejson(conn))
                await amask_secret(panel.key)
                self._limiter = self._rate_limiter(panel, await self._shared_budget(panel))
                self._panel = panel
        return self._panel

    async def _shared_budget(self, panel: PanelConnection) -> RedisBudget | None:
        """Return the key's budgets in Redis, when the connection extra ``budget_redis`` names a Redis."""
        location = panel.settings.budget_redis
        if location is None:
            return None
        redis_conn = None if "://" in location else await BaseHook.aget_connection(location)
        url = url_of(location, redis_conn, await aextra_dejson(redis_conn) if redis_conn is not None else None)
        if (password := password_of(url)) is not None:
            await amask_secret(password)
        return RedisBudget(url, panel.settings.url, panel.key)

    async def get_settings(self) -> ClientSettings:
        """Return the client settings of the connection (read once per hook)."""
        return (await self.get_panel()).settings

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced, for messages that leave the hook (events, logs)."""
        return self._panel.redact(text) if self._panel is not None else text

    async def get_conn(self) -> aiohttp.ClientSession:
        """Return the hook's ``aiohttp.ClientSession``, made on first use.

        At most ``concurrency`` keep-alive connections, TLS verified, the provider's headers.
        """
        settings = await self.get_settings()
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=settings.concurrency, keepalive_timeout=KEEPALIVE_SECONDS, ssl=settings.verify
            )
            timeout = aiohttp.ClientTimeout(sock_connect=settings.connect_timeout, sock_read=settings.timeout)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=HEADERS, trust_env=True)
        return self._session

    async def close(self) -> None:
        """Close the pooled connections (the hook opens them again when used)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- moving bytes ----------------------------------------------------------------------------

    async def _send(self, action: Action, form: dict[str, str]) -> Any:
        """Send one request and decode its reply.

        Sent again only when the panel turned it away unprocessed for its rate limit (see
        :meth:`.RateLimiter.after_reply`).
        """
        session, panel = await self.get_conn(), await self.get_panel()
        throttles = 0
        while True:
            await self._limiter.await_turn(action.value, self.log)
            failure: MirPanelError | None = None
            try:
                async with session.post(panel.settings.url, data=panel.body(form), allow_redirects=False) as response:
                    status, headers, body = response.status, response.headers, await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                failure = transport_error(error, action)
            if failure is not None:
                raise failure  # outside the except block, so the transport's exception is not its __context__
            try:
                payload = panel.decode(action, status, headers, body)
            except MirPanelError as error:
                if not self._limiter.after_reply(action.value, headers, error, throttles):
                    raise
                throttles += 1
                continue
            self._limiter.after_reply(action.value, headers, None, throttles)
            return payload

    async def _call(self, action: Action, form: dict[str, str]) -> Any:
        """Send a request, retrying what the protocol allows to be retried."""
        settings = await self.get_settings()
        async for attempt in AsyncRetrying(**retry_arguments(action, settings.retry_policy, self.log)):
            with attempt:
                return await self._send(action, form)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _multi(self, action: Action, ids: Iterable[Any], what: str) -> list[Any]:
        """One record per distinct ID, in input order, from concurrent requests of at most 100 IDs."""
        if action not in READ_ONLY_ACTIONS:
            raise MirPanelInputError(f"the async hook only reads; {action.value!r} is not a read")
        call = MultiCall.plan(action, ids, what)
        if not call.chunks:
            return []
        slots = asyncio.Semaphore((await self.get_settings()).concurrency)
        await self.get_conn()  # one pool for all batches, made before they start

        async def batch(chunk: list[int], form: dict[str, str]) -> list[Any]:
            try:
                async with slots:
                    reply = await self._call(action, form)
            except Exception as error:  # the core decides what a failed chunk gives
                reply = error
            return call.records(chunk, reply)

        results = await asyncio.gather(*(batch(chunk, form) for chunk, form in call.requests), return_exceptions=True)
        return call.merge(list(results))

    # -- the API ---------------------------------------------------------------------------------

    async def get_orders_status(self, order_ids: Iterable[int | str]) -> list[OrderStatusRecord]:
        """Return the status records of any number of orders, one per distinct ID in input order.

        Records: ``order, status, charge, start_count, remains, currency, error``; an unknown ID is a
        record with an error.

        :raises MirPanelAuthError: the key is refused.
        :raises MirPanelResponseError: a reply is not what the API promises.
        :raises MirPanelTransientError: a batch still failed after the retries.
        """
        return cast(list[OrderStatusRecord], await self._multi(Action.STATUS, order_ids, "order"))

    async def get_refills_status(self, refill_ids: Iterable[int | str]) -> list[RefillStatusRecord]:
        """Return the statuses of any number of refills, one per distinct ID in input order.

        Records: ``refill, status, error``. Raises like :meth:`get_orders_status`.
        """
        return cast(list[RefillStatusRecord], await self._multi(Action.REFILL_STATUS, refill_ids, "refill"))

    async def get_balance(self) -> BalanceRecord:
        """Return the account balance: ``balance, currency``."""
        return parse_balance(await self._call(Action.BALANCE, action_form(Action.BALANCE)))
