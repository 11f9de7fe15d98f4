"""Triggers that wait in the triggerer for orders or refills to end, without holding a worker slot.

A deferrable ``OrderStatusSensor`` / ``RefillStatusSensor`` hands its wait to one of these. Each
poll asks the panel only about the IDs not yet in a terminal status, 100 per request, several
requests at once; the wait logic is :class:`~airflow_provider_mirpanel.utils.waiting.WaitProgress`, the
same as the sensors' poke mode, so every mode ends the same way with the same records.

Every trigger yields exactly one event, a small dict (a few hundred bytes, whatever the number of
IDs: events travel through the metadata DB and are logged whole) with ``status`` and ``message``:

- ``"success"``: every watched ID has ended; ``ended`` (how many) and ``deadline`` (the wait's,
  so that a sensor resuming and deferring again keeps it). The records are not in the event: the
  resumed sensor reads them with one poll, as poke mode does;
- ``"failed"``: ``message`` (why), ``count`` and ``ids`` (the IDs that ended in a failed status or
  that the panel could not report; the first :data:`MAX_EVENT_IDS`);
- ``"timeout"``: ``message``, ``count`` and ``ids`` (the IDs still pending at the deadline; the
  first :data:`MAX_EVENT_IDS`);
- ``"error"``: ``message`` (a refused key, a malformed reply, a bad connection).

A sensor hands a trigger at most :data:`MAX_TRIGGER_IDS` IDs, so the trigger's serialized
arguments stay under 64 KB too; when they have ended it resumes, polls the rest once, and defers
again with the next ones while any are pending.

Transient failures (timeouts, 5xx, 429, HTML pages, refused connections) never end a wait: the
hook retries them with backoff, and a poll that still fails is logged and tried again at the next
interval until the deadline. No event or log line ever holds the API key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, cast

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_mirpanel.exceptions import MirPanelError, MirPanelInputError, MirPanelTransientError
from airflow_provider_mirpanel.protocol import normalize_ids
from airflow_provider_mirpanel.records import CHECKED_AT, Record, utc_now
from airflow_provider_mirpanel.triggers import DEFAULT_CONN_ID, async_hook_class, classpath_of
from airflow_provider_mirpanel.utils.waiting import WaitKind, WaitOutcome, WaitProgress, status_set

if TYPE_CHECKING:  # imported in run(), off the event loop: aiohttp alone is ~0.1 s
    from airflow_provider_mirpanel.hooks.mirpanel_async import MirPanelAsyncHook

Payload = dict[str, Any]

#: IDs a sensor hands one trigger: 2,500 IDs of up to 19 digits serialize to about 53 KB, under the
#: 64 KB a trigger's arguments (stored in the metadata DB) should stay below.
MAX_TRIGGER_IDS = 2_500
#: IDs named in a failed or timeout event; ``count`` says how many there were.
MAX_EVENT_IDS = 100


class _StatusTrigger(BaseTrigger):
    """The wait shared by both triggers; subclasses name what is waited for and how it is read."""

    kind: ClassVar[WaitKind]
    ids_argument: ClassVar[str]

    def __init__(
        self,
        ids: Iterable[int | str],
        mirpanel_conn_id: str,
        poll_interval: float,
        terminal_statuses: Iterable[str] | None,
        failed_statuses: Iterable[str] | None,
        deadline: float | None,
    ) -> None:
        super().__init__()
        if poll_interval < 0:
            raise MirPanelInputError(f"poll_interval must not be negative, got {poll_interval!r}")
        self.ids = normalize_ids(ids, self.kind.value)
        self.mirpanel_conn_id = mirpanel_conn_id
        self.poll_interval = float(poll_interval)
        self.terminal_statuses = _status_list(terminal_statuses)
        self.failed_statuses = _status_list(failed_statuses)
        self.deadline = None if deadline is None else float(deadline)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self.ids)} {self.kind.value}s, "
            f"mirpanel_conn_id={self.mirpanel_conn_id!r}, poll_interval={self.poll_interval})"
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the class path and the JSON keyword arguments that rebuild this trigger."""
        return (
            classpath_of(self),
            {
                self.ids_argument: list(self.ids),
                "mirpanel_conn_id": self.mirpanel_conn_id,
                "poll_interval": self.poll_interval,
                "terminal_statuses": self.terminal_statuses,
                "failed_statuses": self.failed_statuses,
                "deadline": self.deadline,
            },
        )

    async def fetch(self, hook: MirPanelAsyncHook, ids: list[int]) -> list[Record]:
        """Return the current records of ``ids``."""
        raise NotImplementedError

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until every ID has ended, one has failed, the deadline passes or an error ends the wait."""
        # The triggerer imports this module on its event loop, so the hook's module (aiohttp, ~0.1 s)
        # is imported here, in a thread, the first time a trigger runs.
        hook = (await asyncio.to_thread(async_hook_class))(self.mirpanel_conn_id)
        try:
            async with hook:
                payload = await self._wait(hook, self._progress())
        except MirPanelError as error:
            self.log.error("Waiting for %s %ss ended with an error: %s", len(self.ids), self.kind.value, error)
            payload = {"status": "error", "message": str(error)}
        yield TriggerEvent(_redact(payload, hook))

    def _progress(self) -> WaitProgress:
        return WaitProgress.create(self.kind, self.ids, self.terminal_statuses, self.failed_statuses)

    async def _wait(self, hook: MirPanelAsyncHook, progress: WaitProgress) -> Payload:
        while True:
            latest = await self._poll(hook, progress.pending)
            failure = latest if isinstance(latest, str) else None
            if not isinstance(latest, str):
                outcome = progress.update(latest)
                if outcome is WaitOutcome.DONE:
                    self.log.info("All %s %ss have ended: %s", len(self.ids), self.kind.value, progress.message)
                    return {
                        "status": "success",
                        "message": progress.message,
                        "ended": len(self.ids),
                        "deadline": self.deadline,
                    }
                if outcome is WaitOutcome.FAILED:
                    self.log.warning("%s", progress.message)
                    return {"status": "failed", "message": progress.message, **_some(progress.problem_ids)}
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                return self._timeout(progress, failure)
            pause = self.poll_interval if remaining is None else min(self.poll_interval, remaining)
            if failure is None:
                self.log.info("%s; next poll in %.3g s", progress.message, pause)
            else:
                self.log.warning("%s", progress.poll_failed(failure, f"asking again in {pause:.3g} s"))
            await asyncio.sleep(pause)

    async def _poll(self, hook: MirPanelAsyncHook, ids: list[int]) -> list[Record] | str:
        """One poll's records, or why it failed transiently (the wait goes on)."""
        remaining = self._remaining()
        # A poll may overrun the deadline by at most one request timeout: the last look is allowed to land.
        limit = None if remaining is None else max(remaining, (await hook.get_settings()).timeout)
        try:
            records = await asyncio.wait_for(self.fetch(hook, ids), timeout=limit)
        except MirPanelError as error:
            if ends_wait(error):
                raise
            return hook.redact(str(error))
        except asyncio.TimeoutError:
            return "cut short by the deadline"
        checked_at = utc_now()
        for record in records:
            record[CHECKED_AT] = checked_at
        return records

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()

    def _timeout(self, progress: WaitProgress, failure: str | None) -> Payload:
        pending = progress.pending
        message = (
            f"{len(pending)} of {len(self.ids)} {self.kind.value}s had not ended by the deadline ({progress.summary()})"
        )
        if failure is not None:
            message += f"; the last poll failed ({failure})"
        self.log.warning("%s", message)
        return {"status": "timeout", "message": message, **_some(pending)}


class OrderStatusTrigger(_StatusTrigger):
    """Wait in the triggerer until every order has reached a terminal status.

    .. seealso::
        ``docs/reference.md``, "OrderStatusTrigger, RefillStatusTrigger": what it does, returns and raises;
        the events: ``docs/deferrable.md``.

    :param order_ids: the orders to wait for (ints or numeric strings; duplicates dropped).
    :param mirpanel_conn_id: the ``mirpanel`` connection.
    :param poll_interval: seconds between polls.
    :param terminal_statuses: statuses that end the wait for an order (default: Completed, Partial,
        Canceled, Refunded).
    :param failed_statuses: statuses that fail the whole wait as soon as one order reaches them.
    :param deadline: epoch seconds after which the wait ends with a ``timeout`` event (None: never).
    """

    kind = WaitKind.ORDER
    ids_argument = "order_ids"

    def __init__(
        self,
        order_ids: Iterable[int | str],
        mirpanel_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        terminal_statuses: Iterable[str] | None = None,
        failed_statuses: Iterable[str] | None = None,
        deadline: float | None = None,
    ) -> None:
        super().__init__(order_ids, mirpanel_conn_id, poll_interval, terminal_statuses, failed_statuses, deadline)

    @property
    def order_ids(self) -> list[int]:
        """The orders waited for."""
        return self.ids

    async def fetch(self, hook: MirPanelAsyncHook, ids: list[int]) -> list[Record]:
        """Return the status records of ``ids``."""
        return cast(list[Record], await hook.get_orders_status(ids))  # read alike by the wait logic


class RefillStatusTrigger(_StatusTrigger):
    """Wait in the triggerer until every refill has reached a terminal status.

    .. seealso::
        ``docs/reference.md``, "OrderStatusTrigger, RefillStatusTrigger": what it does, returns and raises;
        the events: ``docs/deferrable.md``.

    :param refill_ids: the refills to wait for (ints or numeric strings; duplicates dropped).
    :param mirpanel_conn_id: the ``mirpanel`` connection.
    :param poll_interval: seconds between polls.
    :param terminal_statuses: statuses that end the wait for a refill (default: Completed, Rejected,
        Canceled, Error).
    :param failed_statuses: statuses that fail the whole wait as soon as one refill reaches them.
    :param deadline: epoch seconds after which the wait ends with a ``timeout`` event (None: never).
    """

    kind = WaitKind.REFILL
    ids_argument = "refill_ids"

    def __init__(
        self,
        refill_ids: Iterable[int | str],
        mirpanel_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        terminal_statuses: Iterable[str] | None = None,
        failed_statuses: Iterable[str] | None = None,
        deadline: float | None = None,
    ) -> None:
        super().__init__(refill_ids, mirpanel_conn_id, poll_interval, terminal_statuses, failed_statuses, deadline)

    @property
    def refill_ids(self) -> list[int]:
        """The refills waited for."""
        return self.ids

    async def fetch(self, hook: MirPanelAsyncHook, ids: list[int]) -> list[Record]:
        """Return the status records of ``ids``."""
        return cast(list[Record], await hook.get_refills_status(ids))


def ends_wait(error: MirPanelError) -> bool:
    """Whether a poll that failed with ``error`` (after the hook's retries) ends the wait.

    A transient failure never does (the protocol decides what is transient: timeouts, lost
    connections, 429, HTML pages, 5xx with a gateway's text); the next poll asks again. A refused
    key, a malformed reply or any other refusal by the panel does.
    """
    return not isinstance(error, MirPanelTransientError)


def _status_list(statuses: Iterable[str] | None) -> list[str] | None:
    """Canonical, sorted statuses for serialization; None stays None (the kind's default)."""
    return None if statuses is None else sorted(status_set(statuses))


def _some(ids: list[int]) -> Payload:
    """``count`` and the first :data:`MAX_EVENT_IDS` of ``ids``: an event's size does not grow with N."""
    return {"count": len(ids), "ids": ids[:MAX_EVENT_IDS]}


def _redact(value: Any, hook: MirPanelAsyncHook) -> Any:
    """``value`` with the API key blanked out of every string, in case a panel echoed it."""
    if isinstance(value, str):
        return hook.redact(value)
    if isinstance(value, Mapping):
        return {key: _redact(item, hook) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact(item, hook) for item in value]
    return value
