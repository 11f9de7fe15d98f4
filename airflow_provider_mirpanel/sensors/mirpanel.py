"""Sensors that wait for orders or refills to finish on a Perfect Panel API v2 panel.

Both sensors run the shared wait logic of :mod:`airflow_provider_mirpanel.utils.waiting`: each poke asks
only about the IDs not yet in a terminal status (100 per request), logs one progress line, fails
early on an unknown ID or a status the user names, and returns the final status records through
XCom when every ID has finished. They work in ``poke`` and ``reschedule`` mode, and with
``deferrable=True`` they check once on the worker and hand the rest of the wait to a trigger
(:mod:`airflow_provider_mirpanel.triggers.mirpanel`) that runs in the triggerer.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any, ClassVar, NoReturn, cast

from airflow_provider_mirpanel.assets.lineage import ORDERS, REFILLS, panel_lineage
from airflow_provider_mirpanel.exceptions import MirPanelError
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.protocol import ORDER_STATUS_FIELDS, REFILL_STATUS_FIELDS
from airflow_provider_mirpanel.records import CHECKED_AT, Record, utc_now
from airflow_provider_mirpanel.triggers.mirpanel import (
    MAX_TRIGGER_IDS,
    OrderStatusTrigger,
    RefillStatusTrigger,
    ends_wait,
)
from airflow_provider_mirpanel.utils.arguments import IdsArgument
from airflow_provider_mirpanel.utils.state_stores import RecordPages, digest, store_of
from airflow_provider_mirpanel.utils.waiting import WaitKind, WaitOutcome, WaitProgress
from airflow_provider_mirpanel.version_compat import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    Context,
    PokeReturnValue,
    conf,
)

#: Prefix of the sensors' keys in ``task_state_store`` (finished records kept across pokes).
STATE_PREFIX = "mirpanel.wait."

#: The ``status`` values a trigger's event may carry.
EVENT_STATUSES = frozenset({"success", "failed", "timeout", "error"})

#: How long past the sensor's ``timeout`` the scheduler lets a deferred sensor be: the trigger's own
#: ``timeout`` event comes first; this only ends a wait whose triggerer is gone.
DEFER_GRACE_SECONDS = 300.0


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

    Subclasses set :attr:`kind`, :attr:`trigger_class` and :meth:`_ids`. Deferrable mode runs the
    same first poke on the worker and, when not done, defers to :attr:`trigger_class`; on resume,
    :meth:`execute_complete` ends the same way a poke would.
    """

    kind: ClassVar[WaitKind]
    fields: ClassVar[tuple[str, ...]]
    trigger_class: ClassVar[type[OrderStatusTrigger] | type[RefillStatusTrigger]]

    def __init__(
        self,
        *,
        terminal_statuses: Iterable[str] | None = None,
        failed_statuses: Iterable[str] | None = None,
        mirpanel_conn_id: str = MirPanelHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.terminal_statuses = terminal_statuses
        self.failed_statuses = failed_statuses
        self.mirpanel_conn_id = mirpanel_conn_id
        self.deferrable = deferrable
        self._progress: WaitProgress | None = None
        self._pages: RecordPages | None = None
        self._deadline: float | None = None

    @cached_property
    def hook(self) -> MirPanelHook:
        """The hook of ``mirpanel_conn_id`` (one per sensor instance, its HTTP session reused)."""
        return MirPanelHook(mirpanel_conn_id=self.mirpanel_conn_id)

    def _ids(self) -> Any:
        raise NotImplementedError

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the panel's ``orders`` (or ``refills``) dataset as input; None without OpenLineage."""
        return panel_lineage(self.hook.settings.url, [REFILLS if self.kind is WaitKind.REFILL else ORDERS])

    def _fetch(self, ids: list[int]) -> list[Record]:
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        """Poke until done (``poke``/``reschedule`` mode), or check once and defer to the trigger.

        :raises AirflowFailException: an ID is unknown or ended in a failed status (no retries).
        """
        self._progress = None  # a new try (or a new reschedule poke) starts from the state store
        self._deadline = time.time() + self.timeout  # where a deferred wait times out
        if not self.deferrable:
            return super().execute(context)
        return self._poke_or_defer(context)

    def _poke_or_defer(self, context: Context) -> Any:
        """One check on the worker: the final records when every ID has ended, else defer."""
        try:
            result = self.poke(context)
        except AirflowFailException as error:
            if self.soft_fail or self.never_fail:
                raise AirflowSkipException(f"{error} (skipped: soft_fail/never_fail)") from error
            raise
        if result.is_done:
            return result.xcom_value
        self._defer(self._restore(context))

    # -- the wait ----------------------------------------------------------------------------------

    def new_progress(self) -> WaitProgress:
        """Return a fresh wait for the (rendered) IDs and statuses; invalid arguments raise here."""
        return WaitProgress.create(
            self.kind, self._ids(), _statuses(self.terminal_statuses), _statuses(self.failed_statuses)
        )

    def check(self, progress: WaitProgress) -> WaitOutcome:
        """One poll: ask the panel about the pending IDs only and feed the records to ``progress``."""
        records = self._fetch(progress.pending)
        checked_at = utc_now()
        for record in records:
            record[CHECKED_AT] = checked_at
        return progress.update(records)

    def conclude(self, outcome: WaitOutcome, progress: WaitProgress) -> PokeReturnValue:
        """Return the poke's answer: done with the final records, not yet, or an ``AirflowFailException``.

        Failures (an unknown ID, a status in ``failed_statuses``) are final: no retries.
        """
        if outcome is WaitOutcome.FAILED:
            raise AirflowFailException(progress.message)
        self.log.info(progress.message)
        if outcome is WaitOutcome.DONE:
            return PokeReturnValue(is_done=True, xcom_value=progress.records())
        return PokeReturnValue(is_done=False)

    def poke(self, context: Context) -> PokeReturnValue:
        """One check of the pending IDs: done with the final records, or not yet.

        A transient failure outlasting the hook's retries (outage, 5xx, 429) is "not yet": like the
        trigger, the wait goes on and the next poke (or the trigger) asks again, until the timeout.
        """
        progress = self._restore(context)
        try:
            outcome = self.check(progress)
        except MirPanelError as error:
            if ends_wait(error):
                raise
            if self.deferrable:
                then = "the triggerer asks again"
            elif self.exponential_backoff:
                then = "asking again at the next poke"
            else:
                then = f"asking again in {self.poke_interval:.3g} s"
            self.log.warning("%s", progress.poll_failed(str(error), then))
            self._remember(progress)
            return PokeReturnValue(is_done=False)
        self._remember(progress)
        return self.conclude(outcome, progress)

    # -- deferrable mode ---------------------------------------------------------------------------

    def _defer(self, progress: WaitProgress) -> NoReturn:
        """Hand the rest of the wait to the triggerer, up to the sensor's ``timeout``."""
        # The trigger watches some of the pending IDs (its arguments stay small); when they have ended,
        # execute_complete polls the rest and defers again while any are pending.
        ids = progress.pending[:MAX_TRIGGER_IDS]
        deadline = self._deadline if self._deadline is not None else time.time() + self.timeout
        if deadline <= time.time():
            raise AirflowSensorTimeout(
                f"{len(progress.pending)} of {len(progress.ids)} {self.kind.value}s had not "
                f"ended by the deadline ({progress.summary()})"
            )
        trigger = self.trigger_class(
            ids,
            mirpanel_conn_id=self.mirpanel_conn_id,
            poll_interval=self.poke_interval,
            terminal_statuses=sorted(progress.terminal_statuses),  # as this sensor read them
            failed_statuses=sorted(progress.failed_statuses),
            deadline=deadline,
        )
        self.log.info(
            "Deferring: the triggerer watches %d %ss%s, polling every %s s",
            len(ids),
            self.kind.value,
            f" of the {len(progress.pending)} pending" if len(ids) < len(progress.pending) else "",
            self.poke_interval,
        )
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            timeout=timedelta(seconds=max(deadline - time.time(), 0.0) + DEFER_GRACE_SECONDS),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger's event: the same records as poke mode, or the same failure.

        On ``success`` (the watched IDs have ended) one poll reads the pending IDs' records, as a poke
        does; if some are still pending (more than one trigger's worth), the sensor defers again.

        :raises AirflowFailException: an ID is unknown or ended in a failed status.
        :raises AirflowSensorTimeout: the sensor's ``timeout`` passed first.
        :raises MirPanelError: the trigger stopped on a refused key or a malformed reply.
        :raises AirflowException: the event is missing or not one the trigger sends.
        """
        status = event.get("status") if isinstance(event, dict) else None
        if event is None or status not in EVENT_STATUSES:
            raise AirflowException(
                f"Unexpected trigger event for {self.task_id}: {type(event).__name__} with status {status!r}"
            )
        message = str(event.get("message") or status)
        if status == "failed":
            raise AirflowFailException(message)
        if status == "timeout":
            raise AirflowSensorTimeout(message)
        if status == "error":
            raise MirPanelError(message)
        deadline = event.get("deadline")
        if deadline is not None and not isinstance(deadline, (int, float)):
            raise AirflowException(f"The trigger's success event for {self.task_id} has a bad deadline {deadline!r}")
        self._deadline = deadline
        return self._poke_or_defer(context)

    # -- memory across pokes (reschedule mode re-creates the sensor) and retries -------------------

    def _restore(self, context: Context) -> WaitProgress:
        if self._progress is not None:
            return self._progress
        progress = self.new_progress()
        store = store_of(context)
        if store is None:
            if self.reschedule:
                self.log.warning(
                    "No task_state_store in the context: every reschedule poke asks about all %d IDs", len(progress.ids)
                )
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
            self.log.info("%d of %d %ss finished on earlier pokes", len(progress.final), len(progress.ids), id_field)

    def _remember(self, progress: WaitProgress) -> None:
        if self._pages is not None:
            self._pages.save(list(progress.final.values()))


class OrderStatusSensor(_PanelWaitSensor):
    """Wait until every order is in a terminal status (Completed, Partial, Canceled, Refunded).

    .. seealso::
        ``docs/reference.md``, "OrderStatusSensor": what it does, returns and raises;
        deferrable mode: ``docs/deferrable.md``.

    :param order_ids: the order IDs (a list, an ``XComArg``, or text such as ``"1,2,3"``).
    :param terminal_statuses: statuses that end the wait for an order (any spelling; default
        Completed, Partial, Canceled, Refunded).
    :param failed_statuses: statuses that fail the sensor as soon as one order reaches them, e.g.
        ``{"Canceled", "Refunded"}``; they end the wait too.
    :param mirpanel_conn_id: the Airflow connection of the panel.
    :param deferrable: check once on the worker, then wait in the triggerer without holding a
        worker slot (needs a running triggerer). Default: ``[operators] default_deferrable``.
    """

    ui_color = "#c9efe9"

    kind = WaitKind.ORDER
    fields = (*ORDER_STATUS_FIELDS, CHECKED_AT)
    trigger_class = OrderStatusTrigger
    template_fields: Sequence[str] = ("order_ids", "terminal_statuses", "failed_statuses", "mirpanel_conn_id")

    def __init__(self, *, order_ids: IdsArgument, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.order_ids = order_ids

    def _ids(self) -> Any:
        return self.order_ids

    def _fetch(self, ids: list[int]) -> list[Record]:
        return cast(list[Record], self.hook.get_orders_status(ids))  # read alike by the wait logic


class RefillStatusSensor(_PanelWaitSensor):
    """Wait until every refill is in a terminal status (Completed, Rejected, Canceled, Error).

    .. seealso::
        ``docs/reference.md``, "RefillStatusSensor": what it does, returns and raises;
        deferrable mode: ``docs/deferrable.md``.

    :param refill_ids: the refill IDs (e.g. from :class:`RefillOperator`'s records).
    :param terminal_statuses: statuses that end the wait for a refill.
    :param failed_statuses: statuses that fail the sensor, e.g. ``{"Rejected"}``.
    :param mirpanel_conn_id: the Airflow connection of the panel.
    :param deferrable: wait in the triggerer instead of on a worker (see :class:`OrderStatusSensor`).
    """

    ui_color = "#dcd3f5"

    kind = WaitKind.REFILL
    fields = (*REFILL_STATUS_FIELDS, CHECKED_AT)
    trigger_class = RefillStatusTrigger
    template_fields: Sequence[str] = ("refill_ids", "terminal_statuses", "failed_statuses", "mirpanel_conn_id")

    def __init__(self, *, refill_ids: IdsArgument, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refill_ids = refill_ids

    def _ids(self) -> Any:
        return self.refill_ids

    def _fetch(self, ids: list[int]) -> list[Record]:
        return cast(list[Record], self.hook.get_refills_status(ids))
