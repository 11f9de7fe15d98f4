"""The sandbox panel's HTTP server: aiohttp on loopback, on its own event loop in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web

from airflow_provider_mirpanel.sandbox.actions import INCORRECT_REQUEST, PanelApi, Reply, error, requested_ids
from airflow_provider_mirpanel.sandbox.faults import Fault, FaultKind, Faults
from airflow_provider_mirpanel.sandbox.limits import RateLimits
from airflow_provider_mirpanel.sandbox.log import RequestEntry

T = TypeVar("T")

API_PATHS = frozenset({"/api/v2", "/api/v2/", "/"})
_SHUTDOWN_GRACE = 0.25  # seconds in-flight requests get when the server stops


class SandboxServer:
    """Serves a :class:`PanelApi` over HTTP/1.1 with keep-alive, applying faults and logging requests.

    ``latency`` (seconds) delays every reply and may be changed at any time. ``connections`` is
    the number of distinct client connections (``host:port`` peers) that sent a request. ``limits``
    (per key and action) turn requests over a limit away with 429 before faults or the panel see them.
    """

    def __init__(
        self,
        api: PanelApi,
        faults: Faults,
        log: list[RequestEntry],
        host: str,
        port: int,
        limits: RateLimits | None = None,
    ):
        self.api = api
        self.faults = faults
        self.limits = limits or RateLimits({})
        self.log = log
        self.host = host
        self.port = port
        self.latency = 0.0
        self._peers: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._web: web.Server | None = None
        self._listener: asyncio.Server | None = None
        self._reopen: asyncio.TimerHandle | None = None

    @property
    def connections(self) -> int:
        """The HTTP connections open now."""
        return len(self._peers)

    @property
    def running(self) -> bool:
        """Whether the server accepts requests."""
        return self._thread is not None

    @property
    def accepting(self) -> bool:
        """Whether new connections are accepted (False while the panel is down)."""
        return self._listener is not None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread and listen; ``port`` becomes the bound port."""
        if self._thread is not None:
            raise RuntimeError("the sandbox server is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run_loop, args=(loop,), name="mirpanel-sandbox", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._call(self._open())
        except BaseException:
            self._stop_loop()
            raise

    def stop(self) -> None:
        """Close every connection, stop listening and end the loop thread."""
        if self._thread is None:
            return
        try:
            self._call(self._close())
        finally:
            self._stop_loop()

    def down(self, seconds: float | None = None) -> None:
        """Refuse connections (and close open ones); come back by itself after ``seconds`` if given."""
        self._call(self._down(seconds))

    def up(self) -> None:
        """Accept connections again, on the same port."""
        self._call(self._up())

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the sandbox server is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    async def _open(self) -> None:
        self._web = web.Server(self._handle, access_log=None, keepalive_timeout=75)
        await self._listen()

    async def _listen(self) -> None:
        assert self._web is not None, "_open() creates the server first"
        loop = asyncio.get_running_loop()
        # A large backlog so thousands of clients connecting at once are not turned away.
        self._listener = await loop.create_server(self._web, self.host, self.port, backlog=4096, reuse_address=True)
        self.port = self._listener.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.close()
        for handler in self._web.connections if self._web else []:
            handler.force_close()
        await listener.wait_closed()

    async def _close(self) -> None:
        self._cancel_reopen()
        await self._unlisten()
        if self._web is not None:
            await self._web.shutdown(_SHUTDOWN_GRACE)
        # Handlers whose connection is already gone (a delayed reply to a client that gave up)
        # are not cancelled by shutdown(); end them so the loop closes with no task pending.
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _down(self, seconds: float | None) -> None:
        self._cancel_reopen()
        await self._unlisten()
        if seconds is not None:
            loop = asyncio.get_running_loop()
            self._reopen = loop.call_later(seconds, lambda: loop.create_task(self._up()))

    async def _up(self) -> None:
        self._cancel_reopen()
        if self._listener is None:
            await self._listen()

    def _cancel_reopen(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None

    # -- requests -----------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        peer = _peer(request)
        self._peers.add(peer)
        if request.path not in API_PATHS:
            return _response(error("Not found", 404))
        if request.method != "POST":
            refusal = error(INCORRECT_REQUEST, 405)
            refusal.headers["Allow"] = "POST"
            return _response(refusal)
        form = await _read_form(request)
        public = {name: value for name, value in form.items() if name != "key"}
        action = form.get("action", "")
        verdict = self.limits.check(form.get("key", ""), action)
        if verdict is not None and not verdict.allowed:
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            refusal = verdict.refusal()
            self.log.append(
                RequestEntry(
                    action=action,
                    form=public,
                    peer=peer,
                    ids=requested_ids(form),
                    status=refusal.status,
                    processed=False,
                    path=request.path,
                )
            )
            return _response(refusal)
        fault = self.faults.match(action, public)
        delay = self.latency + (fault.seconds if fault is not None and fault.kind is FaultKind.LATENCY else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        processed = self.api.handle(form) if fault is None or fault.processes else None
        reply: Reply | None = processed if fault is None else fault.reply(processed)
        if reply is not None and verdict is not None:
            reply.headers = {**verdict.headers, **reply.headers}
        self.log.append(
            RequestEntry(
                action=action,
                form=public,
                peer=peer,
                ids=requested_ids(form),
                created=processed.created if processed is not None else [],
                status=reply.status if reply is not None else None,
                fault=fault.kind.value if fault is not None else None,
                processed=processed is not None,
                path=request.path,
            )
        )
        return await self._deliver(request, reply, fault)

    async def _deliver(self, request: web.BaseRequest, reply: Reply | None, fault: Fault | None) -> web.StreamResponse:
        if reply is None:
            # Closing the transport before any byte is written: the client sees the connection
            # end without a response (http.client's RemoteDisconnected).
            request.protocol.force_close()
            return web.Response()
        if fault is not None and fault.kind is FaultKind.DELAY_AFTER_PROCESSING:
            await asyncio.sleep(fault.seconds)
        return _response(reply)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


def _peer(request: web.BaseRequest) -> str:
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return str(peername)


async def _read_form(request: web.BaseRequest) -> dict[str, str]:
    if request.content_type.startswith("multipart/"):
        data = await request.post()
        return {name: value for name, value in data.items() if isinstance(value, str)}
    body = await request.read()
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _response(reply: Reply) -> web.Response:
    headers = {"Content-Type": reply.content_type, **reply.headers}
    return web.Response(body=reply.body, status=reply.status, headers=headers)
