"""The base of the operators that write a ledger scope: the scope's lease, waiting for it, mapped inlets.

``PlaceOrderOperator`` and ``ResolveOrdersOperator`` write a scope's ledger only while they hold
its lease (:mod:`~airflow_provider_mirpanel.placement.lease`). A task that finds the scope held defers — it
frees its worker slot — to a :class:`~airflow_provider_mirpanel.triggers.scope.LedgerScopeTrigger`,
which reads the lease every ``ledger_wait_poll`` seconds in the triggerer and resumes the task once
it is free, up to ``ledger_wait_timeout``; then the task fails naming the holder. docs/operators.md ("Concurrent writers
of a scope") states the mechanism and its assumptions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from airflow_provider_mirpanel.exceptions import MirPanelError
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.operators.base import MirPanelBaseOperator, as_list
from airflow_provider_mirpanel.placement.lease import Claim, LeaseTiming
from airflow_provider_mirpanel.placement.ledger import PlacementLedger
from airflow_provider_mirpanel.placement.ledger import ledger_asset as ledger_asset_of
from airflow_provider_mirpanel.triggers.scope import LedgerScopeTrigger
from airflow_provider_mirpanel.utils.airflow_lines import requires_state_stores
from airflow_provider_mirpanel.utils.listing import listing
from airflow_provider_mirpanel.version_compat import STATE_STORES, Asset, Context

#: The XCom key of what claiming the scope took (``scope, waited, claim, polls, holders``).
LEDGER_CLAIM_XCOM_KEY = "ledger_claim"
DEFAULT_LEASE = 60.0
DEFAULT_WAIT_POLL = 5.0
DEFAULT_WAIT_TIMEOUT = timedelta(hours=24)


class MirPanelScopeBusyError(MirPanelError):
    """Another task held the ledger scope for longer than ``ledger_wait_timeout``; nothing was sent."""


@dataclass
class ScopeWait:
    """A wait for a held scope, carried across deferrals: since when (epoch s), how many looks, whom it saw."""

    since: float
    polls: int = 0
    holders: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """Return the wait as the JSON a deferral carries."""
        return {"since": self.since, "polls": self.polls, "holders": self.holders}

    @classmethod
    def from_json(cls, value: Any) -> ScopeWait | None:
        """Return the wait a deferral carried; None for a value that is not one."""
        if not isinstance(value, Mapping):
            return None
        return cls(float(value.get("since", 0.0)), int(value.get("polls", 0)), list(value.get("holders", [])))


def seconds_of(name: str, value: float | timedelta) -> float:
    """Return a positive duration in seconds from a number or a timedelta, or ValueError naming ``name``."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive number of seconds or a timedelta, got {value!r}")
    return float(seconds)


def _ledger_asset(kwargs: Mapping[str, Any], ledger_asset: Asset | None) -> Asset:
    """Return the ledger asset a task's arguments name: given, else the connection's (which must not be templated)."""
    if ledger_asset is not None:
        return ledger_asset
    conn_id = kwargs.get("mirpanel_conn_id", MirPanelHook.default_conn_name)
    if not isinstance(conn_id, str) or "{{" in conn_id:
        raise ValueError(
            f"with a ledger_scope, mirpanel_conn_id must be a plain connection ID (the ledger asset, "
            f"a task inlet, is named after it), got {conn_id!r}; or give ledger_asset= as well"
        )
    return ledger_asset_of(conn_id)


class ScopedLedgerOperator(MirPanelBaseOperator):
    """An operator that writes a ledger scope under its lease (``PlaceOrderOperator``, ``ResolveOrdersOperator``).

    :param ledger_scope: (templated) the scope's name; None for no scope (only ``PlaceOrderOperator``).
    :param ledger_asset: the asset whose state store holds the scope (default: the connection's).
    :param ledger_lease: how long the scope's lease lasts without renewal, in seconds (default 60):
        a killed holder keeps others waiting this long (plus 5 s for clocks); its own retry does not wait.
    :param ledger_wait_poll: while another task holds the scope, read its lease every this many seconds (5).
    :param ledger_wait_timeout: give up waiting for a held scope after this long (seconds or a
        timedelta; default 24 hours), failing with the holder named; nothing is sent.
    :param deferrable: wait for a held scope deferred, without holding a worker slot (default True);
        False waits in the worker.
    """

    def __init__(
        self,
        *,
        ledger_scope: str | None,
        ledger_asset: Asset | None = None,
        ledger_lease: float = DEFAULT_LEASE,
        ledger_wait_poll: float = DEFAULT_WAIT_POLL,
        ledger_wait_timeout: float | timedelta = DEFAULT_WAIT_TIMEOUT,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        if ledger_scope is not None:
            requires_state_stores(f"{type(self).__name__}'s ledger_scope")
            ledger_asset = _ledger_asset(kwargs, ledger_asset)
            kwargs["inlets"] = [*as_list(kwargs.get("inlets")), ledger_asset]
        super().__init__(**kwargs)
        self.ledger_scope = ledger_scope
        self.ledger_asset = ledger_asset
        self.ledger_lease = seconds_of("ledger_lease", ledger_lease)
        LeaseTiming(ttl=self.ledger_lease)  # refuses a lease too short for its own claim, at parse time
        self.ledger_wait_poll = seconds_of("ledger_wait_poll", ledger_wait_poll)
        self.ledger_wait_timeout = seconds_of("ledger_wait_timeout", ledger_wait_timeout)
        self.deferrable = deferrable

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """``BaseOperator.partial``, with the connection's ledger asset among the inlets from parse time.

        A mapped task reaches only the assets its serialized ``partial()`` names (its ``__init__``
        runs too late), so the ledger asset goes in here whenever the scope may be given — in
        ``partial()`` or mapped in ``expand()``. Give ``mirpanel_conn_id`` to ``partial()``.
        """
        if STATE_STORES and kwargs.get("ledger_scope", "") is not None:
            asset = _ledger_asset(kwargs, kwargs.get("ledger_asset"))
            kwargs["inlets"] = [*as_list(kwargs.get("inlets")), asset]
        return super().partial(**kwargs)

    def ledger_of(self, context: Context) -> PlacementLedger:
        """Return this task's ledger: the scope's (under its lease) or, without a scope, the task's own."""
        return PlacementLedger.from_context(
            context, self.ledger_scope, self.ledger_asset, timing=LeaseTiming(ttl=self.ledger_lease)
        )

    def claim_scope(
        self,
        context: Context,
        ledger: PlacementLedger,
        wait: ScopeWait | None,
        meanwhile: Callable[[], object] | None = None,
    ) -> None:
        """Return once this task holds the scope's lease; while another task holds it, defer (or sleep) and retry.

        :param meanwhile: work that only reads (the ledger among it), done while each claim waits to
            verify; the claim that holds has done it last.
        """
        if ledger.lease is None:
            return
        clock = ledger.lease.clock
        wait = wait or ScopeWait(since=clock.time())
        while True:
            claim = ledger.claim(meanwhile)
            if claim.held:
                self._claimed(context, ledger, wait, claim)
                return
            holder = claim.holder.describe() if claim.holder is not None else None
            if claim.holder is not None and str(claim.holder.owner) not in wait.holders:
                wait.holders = [*wait.holders[-4:], str(claim.holder.owner)]
            waited = clock.time() - wait.since
            if waited >= self.ledger_wait_timeout:
                raise MirPanelScopeBusyError(
                    f"{ledger.where} is still held by {holder or 'a contended claim'} after waiting {waited:,.0f} s "
                    f"(ledger_wait_timeout); nothing was sent. A holder renews its lease while it writes; a holder "
                    f"that is gone keeps the scope for at most {self.ledger_lease:g} s more. Holders seen: "
                    f"{listing(wait.holders) or 'none'}"
                )
            wait.polls += 1
            if holder is None:  # nobody holds it, but the claim could not be trusted: try again soon
                self.log.warning("Claiming %s: %s", ledger.where, claim.note)
                clock.sleep(ledger.lease.timing.claim_wait)
                continue
            how = "deferred" if self.deferrable else "in the worker"
            self.log.info(
                "%s is held by %s: waiting (%s), looking again in %g s (waited %.0f s of at most %.0f s)",
                ledger.where,
                holder,
                how,
                self.ledger_wait_poll,
                waited,
                self.ledger_wait_timeout,
            )
            if self.deferrable and self.ledger_asset is not None:
                trigger = LedgerScopeTrigger(
                    asset_name=self.ledger_asset.name,
                    lease_key=ledger.lease.key,
                    owner=ledger.lease.owner.as_json(),
                    poll_interval=self.ledger_wait_poll,
                    skew=ledger.lease.timing.skew,
                    give_up_at=wait.since + self.ledger_wait_timeout,
                    try_number=ledger.lease.try_number,
                )
                self.defer(trigger=trigger, method_name="execute_after_wait", kwargs={"scope_wait": wait.as_json()})
            clock.sleep(self.ledger_wait_poll)

    def _claimed(self, context: Context, ledger: PlacementLedger, wait: ScopeWait, claim: Claim) -> None:
        waited = max(0.0, ledger.lease.clock.time() - wait.since - claim.seconds) if ledger.lease else 0.0
        report = {
            "scope": self.ledger_scope,
            "waited": round(waited, 3),
            "claim": round(claim.seconds, 3),
            "polls": wait.polls,
            "holders": wait.holders,
        }
        self.log.info(
            "Claimed %s in %.1f s%s",
            ledger.where,
            claim.seconds,
            f" after waiting {waited:.1f} s for {listing(wait.holders)}" if wait.polls else "",
        )
        ti = context.get("ti")
        if ti is not None and hasattr(ti, "xcom_push"):
            ti.xcom_push(key=LEDGER_CLAIM_XCOM_KEY, value=report)

    def run_scoped(self, context: Context, wait: ScopeWait | None) -> Any:
        """Return the operator's work, given the wait so far (None on the first look)."""
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        """Claim the scope (waiting for it while another task holds it), then do the operator's work."""
        return self.run_scoped(context, None)

    def execute_after_wait(self, context: Context, event: Any = None, scope_wait: Any = None) -> Any:
        """Resume after waiting for a held scope: look again."""
        return self.run_scoped(context, ScopeWait.from_json(scope_wait))
