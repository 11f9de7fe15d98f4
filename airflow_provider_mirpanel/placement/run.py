"""Placing orders exactly once: one try of a placement, from input rows to records.

A :class:`PlacementRun` settles each order against the ledger (:mod:`~airflow_provider_mirpanel.ledger`),
checks the rest against the catalogue (and the balance), places them concurrently, recording in
the ledger *before* each request, and says how the try ended. It needs only a small part of a
hook (:class:`OrderPlacer`); :class:`~airflow_provider_mirpanel.operators.mirpanel.PlaceOrderOperator`
is a thin operator around it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_provider_mirpanel.exceptions import (
    MirPanelAmbiguousOrderError,
    MirPanelAPIError,
    MirPanelAuthError,
    MirPanelError,
    MirPanelInputError,
    MirPanelInsufficientFundsError,
    MirPanelTransientError,
)
from airflow_provider_mirpanel.placement.ledger import PAGE_SIZE, LedgerEntry, LedgerState, PlacementLedger
from airflow_provider_mirpanel.placement.order_rows import (
    OrderSpec,
    OrderState,
    check_against_catalogue,
    estimated_cost,
    order_record,
    order_specs,
    parse_order_rows,
)
from airflow_provider_mirpanel.protocol import AddOrderRecord, BalanceRecord, ServiceRecord
from airflow_provider_mirpanel.records import Record
from airflow_provider_mirpanel.utils.listing import errors_by, listing
from airflow_provider_mirpanel.version_compat import AirflowFailException

__all__ = [
    "OrderPlacer",
    "OrdersNotPlacedError",
    "OrdersUnresolvedError",
    "PlacementOptions",
    "PlacementRun",
    "estimated_cost",
    "order_specs",
    "parse_order_rows",
]

ON_UNKNOWN = ("fail", "skip", "resend")
ON_INVALID = ("fail", "skip")
#: Record states a retry of the same run cannot change: an unknown outcome stays unknown, an
#: invalid row stays invalid, a key stays in conflict.
_FINAL_FAILURES = frozenset({OrderState.UNKNOWN, OrderState.INVALID, OrderState.CONFLICT})


class OrdersNotPlacedError(MirPanelError):
    """Some orders of a placement were not placed; ``records`` says what each became."""

    def __init__(self, message: str, records: list[Record]):
        self.records = records
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.records))


class OrdersUnresolvedError(OrdersNotPlacedError, AirflowFailException):
    """Orders were not placed and a retry could not change it (unknown outcome, invalid, conflict).

    An :class:`~airflow.sdk.exceptions.AirflowFailException`: the task fails without retries.
    """


class OrderPlacer(Protocol):
    """What a placement needs of a hook (:class:`~airflow_provider_mirpanel.hooks.mirpanel.MirPanelHook`)."""

    def get_services(self) -> Sequence[ServiceRecord]:
        """Return the panel's catalogue."""

    def get_balance(self) -> BalanceRecord:
        """Return the account's balance."""

    def add_order(self, service: int, **params: Any) -> AddOrderRecord:
        """Send one ``add``; the order placed."""


@dataclass(frozen=True)
class PlacementOptions:
    """How a placement treats unknown outcomes, invalid rows and the balance (see PlaceOrderOperator)."""

    on_unknown: str = "fail"
    on_invalid: str = "fail"
    check_balance: bool = False
    concurrency: int = 8
    window: int = 50

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or not 1 <= self.window <= PAGE_SIZE:
            raise MirPanelInputError(f"ledger_window must be 1..{PAGE_SIZE}, got {self.window!r}; no order was sent")
        for name, allowed in (("on_unknown", ON_UNKNOWN), ("on_invalid", ON_INVALID)):
            if getattr(self, name) not in allowed:
                raise MirPanelInputError(
                    f"{name} must be one of {', '.join(map(repr, allowed))}, "
                    f"got {getattr(self, name)!r}; no order was sent"
                )


class PlacementRun:
    """One try of a placement: triage against the ledger, check, place, report.

    :param hook: what sends the requests.
    :param rows: the input rows (see :func:`~airflow_provider_mirpanel.order_rows.parse_order_rows`).
    :param ledger: the exactly-once ledger of the placement's scope.
    :param options: the placement's options.
    :param log: where the run logs.
    :param catalogue: the services to check orders against (``services`` records); None asks the panel.
    """

    def __init__(
        self,
        hook: OrderPlacer,
        rows: Iterable[Mapping[str, Any]],
        ledger: PlacementLedger,
        options: PlacementOptions,
        log: logging.Logger | Any,
        catalogue: list[Mapping[str, Any]] | None = None,
    ):
        self.hook = hook
        self.catalogue = catalogue
        self.specs = order_specs(list(rows))
        self.ledger = ledger
        self.options = options
        self.log = log
        self.records: dict[int, Record] = {}
        self.earlier: set[int] = set()  # indexes of the orders placed by an earlier try or run
        self.currency: str | None = None
        self.stop_reason: str | None = None
        self.balance_note = ""
        self._stop = threading.Lock()
        self._causes: dict[int, str] = {}  # why each order of unknown outcome is unknown, for the ledger
        self._ended: list[OrderSpec] = []  # orders of finished windows
        self._to_send: list[OrderSpec] | None = None  # once prepared

    def prepare(self) -> None:
        """Everything before sending: settle the orders against the ledger, check the rest, check the balance.

        It only reads (the ledger, the catalogue, the balance), so a scope's claim runs it while it waits to
        verify; run again, it starts over.
        """
        self.records, self.earlier, self.currency, self.balance_note = {}, set(), None, ""
        to_send = self._triage()
        if to_send:
            catalogue = self.catalogue if self.catalogue is not None else self.hook.get_services()
            check_against_catalogue(to_send, {service["service"]: service for service in catalogue})
        self._refuse_invalid()
        to_send = [spec for spec in to_send if spec.error is None]
        if to_send and self.options.check_balance:
            self._check_balance(to_send)
        self._to_send = to_send

    def execute(self) -> list[Record]:
        """Place what needs placing (prepared first, unless :meth:`prepare` ran); the records of every row."""
        if self._to_send is None:
            self.prepare()
        if self._to_send:
            self._place(self._to_send)
        return [self.records[spec.index] for spec in self.specs]

    # -- before sending ----------------------------------------------------------------------------

    def _triage(self) -> list[OrderSpec]:
        """Settle the orders an earlier try or run dealt with; return those to send on this try."""
        to_send: list[OrderSpec] = []
        valid = [spec for spec in self.specs if spec.error is None]
        earlier = {} if self.ledger.blind else self.ledger.load(spec.key for spec in valid)
        for spec in valid:
            entry = self._blind_entry(spec) if self.ledger.blind else earlier.get(spec.key)
            if entry is None or entry.state is LedgerState.REFUSED:
                to_send.append(spec)
            elif entry.digest != spec.digest:
                held = f"order {entry.order}" if entry.order else entry.state.value
                self.records[spec.index] = order_record(
                    spec,
                    OrderState.CONFLICT,
                    entry.order,
                    f"key {spec.key!r} was used earlier in {self.ledger.where} ({held}) for an order with other "
                    "parameters; not placed",
                )
            elif entry.state is LedgerState.PLACED:
                self.earlier.add(spec.index)
                self.records[spec.index] = order_record(spec, OrderState.PLACED, entry.order, cost=entry.cost)
            elif self.options.on_unknown == "resend":
                self.log.warning("Resending %s (outcome unknown earlier) as on_unknown='resend' asks", spec.label)
                to_send.append(spec)
            else:
                state = OrderState.SKIPPED if self.options.on_unknown == "skip" else OrderState.UNKNOWN
                self.records[spec.index] = order_record(spec, state, error=_unknown_text(entry.error))
        return to_send

    @staticmethod
    def _blind_entry(spec: OrderSpec) -> LedgerEntry:
        """Return a retry with no store: whatever earlier tries sent is unaccounted for."""
        return LedgerEntry(
            LedgerState.UNKNOWN,
            spec.digest,
            error="this retry has no task_state_store, so what earlier tries placed cannot be known",
        )

    def _refuse_invalid(self) -> None:
        """With ``on_invalid="fail"``, refuse every order if any is invalid; else record the invalid ones."""
        invalid = [spec for spec in self.specs if spec.error is not None]
        if invalid and self.options.on_invalid == "fail":
            raise MirPanelInputError(
                f"{len(invalid)} of {len(self.specs)} orders are invalid; no order was sent: "
                + "; ".join(f"{spec.label}: {spec.error}" for spec in invalid)
            )
        for spec in invalid:
            self.records[spec.index] = order_record(spec, OrderState.INVALID, error=spec.error)

    def _check_balance(self, to_send: list[OrderSpec]) -> None:
        balance = self.hook.get_balance()
        self.currency = balance["currency"]
        total = sum(spec.cost or 0.0 for spec in to_send)
        unpriced = sum(1 for spec in to_send if spec.cost is None)
        note = f" ({unpriced} orders without an estimate not counted)" if unpriced else ""
        if total > balance["balance"]:
            raise MirPanelError(
                f"the estimated cost {total:,.2f} {self.currency or ''} of {len(to_send)} orders exceeds the balance "
                f"{balance['balance']:,.2f} {self.currency or ''}{note}; no order was sent"
            )
        self.balance_note = f"; balance {balance['balance']:,.2f} {self.currency or ''} covered it{note}"

    # -- sending -----------------------------------------------------------------------------------

    def _place(self, to_send: list[OrderSpec]) -> None:
        """Send the orders in windows, each window's ``sending`` marks written in one page before its orders leave.

        The outcomes of every window that has ended since are written in one page, when no mark is due.

        A window is marked when the workers can take it: the free workers' share, plus — only while
        orders are ending — twice as many as ended since the last mark (up to ``window``), so a fast
        panel never waits for the ledger while a stalled one gets nothing marked ahead. The orders
        marked but not yet sent stay few, so after a crash few orders that never left are reported
        as of unknown outcome.
        """
        workers = max(1, min(self.options.concurrency, len(to_send)))
        windows: list[tuple[list[OrderSpec], list[Future[Record]]]] = []
        queued = deque(to_send)
        ended_at_mark = 0
        # wake up to renew a scope's lease while every worker waits on a slow panel
        renew = self.ledger.lease.timing.renew_every / 2 if self.ledger.lease is not None else None
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mirpanel-add") as pool:
            try:
                while queued or windows:
                    self.ledger.keep_alive()
                    busy = [future for _, futures in windows for future in futures if not future.done()]
                    ended = sum(len(futures) for _, futures in windows) - len(busy) + len(self._ended)
                    ahead = min(self.options.window, 2 * (ended - ended_at_mark))
                    if queued and len(busy) < workers + ahead and not self.stop_reason:
                        size = min(self.options.window, len(queued), workers + ahead - len(busy))
                        specs = [queued.popleft() for _ in range(size)]
                        self.ledger.append({spec.key: LedgerEntry(LedgerState.SENDING, spec.digest) for spec in specs})
                        windows.append((specs, [pool.submit(self._send, spec) for spec in specs]))
                        ended_at_mark = ended
                        continue
                    finished = [window for window in windows if all(future.done() for future in window[1])]
                    if finished:
                        windows = [window for window in windows if window not in finished]
                        self._finish(
                            [spec for specs, _ in finished for spec in specs],
                            [future for _, futures in finished for future in futures],
                        )
                    elif busy:
                        wait(busy, timeout=renew, return_when=FIRST_COMPLETED)
                    if self.stop_reason and queued and not windows:  # never marked: certainly not sent
                        for spec in queued:
                            self.records[spec.index] = self._not_sent(spec)
                        queued.clear()
            except BaseException:  # a failed ledger write, or the try is dying: send nothing more
                self._stop_all("placing was interrupted")
                for _, futures in windows:
                    for future in futures:
                        future.cancel()
                raise

    def _finish(self, specs: list[OrderSpec], futures: list[Future[Record]]) -> None:
        """Collect ended windows' records and write their outcomes (a lost write leaves them ``sending``)."""
        for spec, future in zip(specs, futures, strict=True):
            self.records[spec.index] = future.result()
        self._ended.extend(specs)
        outcomes = [
            (spec.key, _outcome(spec, self.records[spec.index], self._causes.get(spec.index))) for spec in specs
        ]
        try:
            for start in range(0, len(outcomes), PAGE_SIZE):
                self.ledger.append(dict(outcomes[start : start + PAGE_SIZE]))
        except Exception:
            self.log.exception(
                "The outcomes of %d orders could not be written to the ledger: later tries will report them as unknown",
                len(specs),
            )

    def _stop_all(self, reason: str) -> None:
        with self._stop:
            self.stop_reason = self.stop_reason or reason

    def _send(self, spec: OrderSpec) -> Record:
        """Send one order (its ``sending`` mark is in the ledger already); its record."""
        if self.stop_reason:
            return self._not_sent(spec)
        assert spec.form is not None and spec.service is not None
        try:
            placed = self.hook.add_order(spec.service, **spec.params)
        except Exception as error:
            return self._failed(spec, error)
        return order_record(spec, OrderState.PLACED, placed["order"])

    def _not_sent(self, spec: OrderSpec) -> Record:
        return order_record(spec, OrderState.NOT_SENT, error=f"not sent: placing stopped ({self.stop_reason})")

    def _failed(self, spec: OrderSpec, error: Exception) -> Record:
        """Return the record of a failed add: refused and never-sent orders may be placed again, anything else not."""
        if isinstance(error, (MirPanelInsufficientFundsError, MirPanelAuthError)):
            self._stop_all(error.panel_message)
        if isinstance(error, MirPanelAPIError):
            return order_record(spec, OrderState.REFUSED, error=error.panel_message)
        if isinstance(error, MirPanelTransientError) and not error.request_sent:
            return order_record(spec, OrderState.NOT_SENT, error=f"not sent: {error}")
        if isinstance(error, MirPanelInputError):
            return order_record(spec, OrderState.INVALID, error=str(error))
        self._causes[spec.index] = _cause(error)
        return order_record(spec, OrderState.UNKNOWN, error=_unknown_text(self._causes[spec.index]))

    # -- reporting ---------------------------------------------------------------------------------

    def _by_state(self) -> dict[str, list[Record]]:
        grouped: dict[str, list[Record]] = {}
        for record in self.records.values():
            grouped.setdefault(record["state"], []).append(record)
        return grouped

    def summary(self) -> str:
        """One line: ``placed 18 of 20 orders (2 earlier), 1 refused: 12 (Bad link); … spent ~1.20 USD``."""
        grouped = self._by_state()
        placed = grouped.get(OrderState.PLACED.value, [])
        line = f"placed {len(placed)} of {len(self.specs)} orders"
        if self.earlier:
            line += f" ({len(self.earlier)} by an earlier try or run, not sent again)"
        for state in OrderState:
            if state is not OrderState.PLACED and grouped.get(state.value):
                line += f", {len(grouped[state.value])} {state.value}: {errors_by(grouped[state.value], 'key')}"
        spent = sum(
            record["cost"] or 0.0
            for index, record in self.records.items()
            if record["state"] == OrderState.PLACED.value and index not in self.earlier
        )
        spent_text = f"; spent ~{spent:,.2f} {self.currency or ''}".rstrip()
        return line + spent_text + " (estimated from the catalogue rates)" + self.balance_note

    def failure(self) -> OrdersNotPlacedError | None:
        """Return the exception the try ends with when orders were not placed, or None.

        :class:`OrdersUnresolvedError` (no retries) when a retry could not change the outcome.
        """
        failed_states = {OrderState.REFUSED, OrderState.NOT_SENT, OrderState.INVALID, OrderState.CONFLICT}
        if self.options.on_invalid == "skip":
            failed_states.discard(OrderState.INVALID)
        if self.options.on_unknown != "skip":
            failed_states.add(OrderState.UNKNOWN)
        failed = [record for record in self.records.values() if OrderState(record["state"]) in failed_states]
        if not failed:
            return None
        records = [self.records[spec.index] for spec in self.specs]
        text = "; ".join(f"key {record['key']} {record['state']}: {record['error']}" for record in failed[:20])
        more = f" … (+{len(failed) - 20} more)" if len(failed) > 20 else ""
        message = f"{len(failed)} of {len(self.specs)} orders were not placed: {text}{more}."
        unknown = [record for record in failed if record["state"] == OrderState.UNKNOWN.value]
        if unknown:
            message += " " + self._resolve_hint(unknown)
        if all(OrderState(record["state"]) in _FINAL_FAILURES for record in failed):
            return OrdersUnresolvedError(
                message + " A retry cannot change this: the task fails without retries.", records
            )
        return OrdersNotPlacedError(message, records)

    def _resolve_hint(self, unknown: list[Record]) -> str:
        """Return what to do about orders of unknown outcome: where to look, and the ways to resolve them."""
        looks = listing(
            f"{record['key']} (service {record['service']}, {record.get('link') or 'no link'})" for record in unknown
        )
        hint = (
            f"{len(unknown)} orders may exist on the panel: look for them in the panel's order list: {looks}. "
            "Then either run again with on_unknown='skip' (leave them out) or 'resend' (place them again: "
            "pays twice for any that exists)"
        )
        if self.ledger.scope is None:
            return hint + "; a new DAG run does not know them (set ledger_scope to keep keys across runs)."
        return (
            hint + f", or record what you found with ResolveOrdersOperator(ledger_scope={self.ledger.scope!r}, "
            "resolutions={key: order_id, or 'not_placed'}); later runs of the scope then place only what is "
            "missing."
        )


def _outcome(spec: OrderSpec, record: Record, cause: str | None) -> LedgerEntry:
    """Return what the ledger keeps of a sent order's record: placed, unknown, or known not placed."""
    state = OrderState(record["state"])
    if state is OrderState.PLACED:
        return LedgerEntry(LedgerState.PLACED, spec.digest, record["order"], spec.cost)
    if state is OrderState.UNKNOWN:
        return LedgerEntry(LedgerState.UNKNOWN, spec.digest, error=cause)
    return LedgerEntry(LedgerState.REFUSED, spec.digest, error=record["error"])


def _cause(error: Exception) -> str:
    return error.cause if isinstance(error, MirPanelAmbiguousOrderError) else f"{type(error).__name__}: {error}"


def _unknown_text(cause: str | None) -> str:
    detail = f" ({cause})" if cause else " (the try ended between sending it and recording the reply)"
    return f"outcome unknown{detail}; not resent: check the panel's order list before placing it again"
