"""Sensors that wait for orders or refills to finish on a Perfect Panel API v2 panel.

Both sensors run the shared wait logic of :mod:`airflow_provider_mirpanel.waiting`: each poke asks
only about the IDs not yet in a terminal status (100 per request), logs one progress line, fails
early on an unknown ID or a status the user names, and returns the final status records through
XCom when every ID has finished. They work in ``poke`` and ``reschedule`` mode.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import Any, ClassVar

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.protocol import ORDER_STATUS_FIELDS, REFILL_STATUS_FIELDS
from airflow_provider_mirpanel.records import CHECKED_AT, utc_now
from airflow_provider_mirpanel.taskstate import RecordPages, digest, store_of
from airflow_provider_mirpanel.waiting import WaitKind, WaitOutcome, WaitProgress

Record = dict[str, Any]

#: Prefix of the sensors' keys in ``task_state_store`` (finished records kept across pokes).
STATE_PREFIX = "mirpanel.wait."



def _statuses(value: Any) -> Any:
    """Statuses as given, or read from the text Jinja renders: ``"['Canceled', 'Refunded']"``, ``"A, B"``."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text[:1] in "[({":
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed = None
        if isinstance(parsed, (list, tuple, set, frozenset)):
            return [str(item) for item in parsed]
    return [part.strip() for part in text.split(",") if part.strip()]


class _PanelWaitSensor(BaseSensorOperator):
    """Wait for every ID to reach a terminal status; the poke logic lives in :meth:`check`.

    Subclasses set :attr:`kind` and :meth:`_ids`. A deferrable mode can reuse
    :meth:`new_progress`, :meth:`check` (one poll) and :meth:`conclude` (the outcome as a
    ``PokeReturnValue`` or an exception).
    """

    kind: ClassVar[WaitKind]
    fields: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        *,
        terminal_statuses: Iterable[str] | None = None,
        failed_statuses: Iterable[str] | None = None,
        mirpanel_conn_id: str = MirPanelHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.terminal_statuses = terminal_statuses
        self.failed_statuses = failed_statuses
        self.mirpanel_conn_id = mirpanel_conn_id
        self._progress: WaitProgress | None = None
        self._pages: RecordPages | None = None

    @cached_property
    def hook(self) -> MirPanelHook:
        """The hook of ``mirpanel_conn_id`` (one per sensor instance, its HTTP session reused)."""
        return MirPanelHook(mirpanel_conn_id=self.mirpanel_conn_id)

    def _ids(self) -> Any:
        raise NotImplementedError

    def _fetch(self, ids: list[int]) -> list[Record]:
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        self._progress = None  # a new try (or a new reschedule poke) starts from the state store
        return super().execute(context)

    # -- the wait ----------------------------------------------------------------------------------

    def new_progress(self) -> WaitProgress:
        """A fresh wait for the (rendered) IDs and statuses; invalid arguments raise here."""
        return WaitProgress.create(self.kind, self._ids(), _statuses(self.terminal_statuses),
                                   _statuses(self.failed_statuses))

    def check(self, progress: WaitProgress) -> WaitOutcome:
        """One poll: ask the panel about the pending IDs only and feed the records to ``progress``."""
        records = self._fetch(progress.pending)
        checked_at = utc_now()
        for record in records:
            record[CHECKED_AT] = checked_at
        return progress.update(records)

    def conclude(self, outcome: WaitOutcome, progress: WaitProgress) -> PokeReturnValue:
        """The poke's answer: done with the final records, not yet, or an ``AirflowFailException``.

        Failures (an unknown ID, a status in ``failed_statuses``) are final: no retries.
        """
        if outcome is WaitOutcome.FAILED:
            raise AirflowFailException(progress.message)
        self.log.info(progress.message)
        if outcome is WaitOutcome.DONE:
            return PokeReturnValue(is_done=True, xcom_value=progress.records())
        return PokeReturnValue(is_done=False)

    def poke(self, context: Context) -> PokeReturnValue:
        progress = self._restore(context)
        outcome = self.check(progress)
        self._remember(progress)
        return self.conclude(outcome, progress)

    # -- memory across pokes (reschedule mode re-creates the sensor) and retries -------------------

    def _restore(self, context: Context) -> WaitProgress:
        if self._progress is not None:
            return self._progress
        progress = self.new_progress()
        store = store_of(context)
        if store is None:
            if self.reschedule:
                self.log.warning("No task_state_store in the context: every reschedule poke asks about all %d IDs",
                                 len(progress.ids))
        else:
            owner = digest([self.kind.value, progress.ids])
            self._pages = RecordPages(store, f"{STATE_PREFIX}{self.kind.value}.", self.fields, owner)
            self._adopt(progress, self._pages.load())
        self._progress = progress
        return progress

    def _adopt(self, progress: WaitProgress, records: list[Record]) -> None:
        """Take the finished records of earlier pokes (those still terminal by today's settings)."""
        id_field = self.kind.value
        wanted = set(progress.ids)
        for record in records:
            if record.get(id_field) in wanted and record.get("status") in progress.terminal_statuses:
                progress.final[record[id_field]] = record
        if progress.final:
            self.log.info("%d of %d %ss finished on earlier pokes", len(progress.final), len(progress.ids),
                          id_field)

    def _remember(self, progress: WaitProgress) -> None:
        if self._pages is not None:
            self._pages.save(list(progress.final.values()))


class OrderStatusSensor(_PanelWaitSensor):
    """Wait until every order is in a terminal status (Completed, Partial, Canceled, Refunded).

    Each poke asks only about the orders not finished yet (100 IDs per request) and logs progress:
    ``37/100 orders done; 12,400 remaining units; statuses: …``. Finished records are kept in the
    task's ``task_state_store``, so in ``reschedule`` mode (and on a retry) finished orders are not
    asked about again; without a store, reschedule mode asks about all of them every poke.

    XCom: the final status record of every order, in input order: ``order, status, charge,
    start_count, remains, currency, error, checked_at``.

    Fails at once, without retries (``AirflowFailException``), when the panel does not know an
    order ("Incorrect order ID"; the IDs are named) or an order ends in one of ``failed_statuses``.

    :param order_ids: the order IDs (a list, an ``XComArg``, or text such as ``"1,2,3"``).
    :param terminal_statuses: statuses that end the wait for an order (any spelling; default
        Completed, Partial, Canceled, Refunded).
    :param failed_statuses: statuses that fail the sensor as soon as one order reaches them, e.g.
        ``{"Canceled", "Refunded"}``; they end the wait too.
    :param mirpanel_conn_id: the Airflow connection of the panel.
    """

    kind = WaitKind.ORDER
    fields = (*ORDER_STATUS_FIELDS, CHECKED_AT)
    template_fields: Sequence[str] = ("order_ids", "terminal_statuses", "failed_statuses")

    def __init__(self, *, order_ids: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.order_ids = order_ids

    def _ids(self) -> Any:
        return self.order_ids

    def _fetch(self, ids: list[int]) -> list[Record]:
        return self.hook.get_orders_status(ids)


class RefillStatusSensor(_PanelWaitSensor):
    """Wait until every refill is in a terminal status (Completed, Rejected, Canceled, Error).

    Works like :class:`OrderStatusSensor`. XCom: the final record of every refill, in input
    order: ``refill, status, error, checked_at``. "Refill not found" fails the sensor at once.

    :param refill_ids: the refill IDs (e.g. from :class:`RefillOperator`'s records).
    :param terminal_statuses: statuses that end the wait for a refill.
    :param failed_statuses: statuses that fail the sensor, e.g. ``{"Rejected"}``.
    :param mirpanel_conn_id: the Airflow connection of the panel.
    """

    kind = WaitKind.REFILL
    fields = (*REFILL_STATUS_FIELDS, CHECKED_AT)
    template_fields: Sequence[str] = ("refill_ids", "terminal_statuses", "failed_statuses")

    def __init__(self, *, refill_ids: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refill_ids = refill_ids

    def _ids(self) -> Any:
        return self.refill_ids

    def _fetch(self, ids: list[int]) -> list[Record]:
        return self.hook.get_refills_status(ids)
