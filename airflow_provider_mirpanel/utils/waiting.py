"""The logic of waiting for orders or refills to finish, shared by the sensors and the triggers.

A :class:`WaitProgress` is fed the status records of each poll and says whether the wait is over,
failed, or goes on, and which IDs the next poll must ask about. Poke, reschedule and deferrable
modes all run it, so they end the same way with the same records. Nothing here does I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from airflow_provider_mirpanel.protocol import (
    ORDER_TERMINAL_STATUSES,
    REFILL_TERMINAL_STATUSES,
    canonical_status,
    normalize_ids,
)
from airflow_provider_mirpanel.utils.listing import listing


class WaitKind(str, Enum):
    """What is waited for: the ID field of its records and its default terminal statuses."""

    ORDER = "order"
    REFILL = "refill"

    @property
    def default_terminal(self) -> frozenset[str]:
        """The statuses that end a wait of this kind by default."""
        return ORDER_TERMINAL_STATUSES if self is WaitKind.ORDER else REFILL_TERMINAL_STATUSES


class WaitOutcome(str, Enum):
    """Where a wait stands after a poll."""

    WAITING = "waiting"
    DONE = "success"
    FAILED = "failed"


def status_set(statuses: Iterable[str] | None, default: frozenset[str] = frozenset()) -> frozenset[str]:
    """Canonical spellings of user-given statuses (``{"cancelled"}`` -> ``{"Canceled"}``)."""
    if statuses is None:
        return default
    if isinstance(statuses, str):
        statuses = [statuses]
    return frozenset(str(canonical_status(status)) for status in statuses)


@dataclass
class WaitProgress:
    """Progress of a wait for a set of orders (or refills) to reach a terminal status.

    :param kind: orders or refills.
    :param ids: the IDs waited for (any iterable of IDs; duplicates dropped, order kept).
    :param terminal_statuses: statuses that end the wait for an ID (default: the kind's terminal set).
    :param failed_statuses: terminal statuses that fail the whole wait as soon as one ID reaches them.
    """

    kind: WaitKind
    ids: list[int]
    terminal_statuses: frozenset[str]
    failed_statuses: frozenset[str] = frozenset()
    final: dict[int, dict[str, Any]] = field(default_factory=dict)
    message: str = ""
    problem_ids: list[int] = field(default_factory=list)
    last_seen: dict[int, Mapping[str, Any]] = field(default_factory=dict)  # pending IDs' latest records

    @classmethod
    def create(
        cls,
        kind: WaitKind | str,
        ids: Any,
        terminal_statuses: Iterable[str] | None = None,
        failed_statuses: Iterable[str] | None = None,
    ) -> WaitProgress:
        """Validate the arguments (IDs, status names) and start a wait."""
        kind = WaitKind(kind)
        failed = status_set(failed_statuses)
        terminal = status_set(terminal_statuses, kind.default_terminal) | failed
        return cls(kind, normalize_ids(ids, kind.value), terminal, failed)

    @property
    def pending(self) -> list[int]:
        """IDs not yet in a terminal status: the only ones the next poll asks about."""
        return [item for item in self.ids if item not in self.final]

    def update(self, records: Iterable[Mapping[str, Any]]) -> WaitOutcome:
        """Take one poll's records; return whether the wait is done, failed or goes on."""
        id_field = self.kind.value
        latest = list(records)
        unknown = [record[id_field] for record in latest if record.get("error")]
        for record in latest:
            if record.get("error"):
                continue
            if record.get("status") in self.terminal_statuses:
                self.final[record[id_field]] = dict(record)
                self.last_seen.pop(record[id_field], None)
            else:
                self.last_seen[record[id_field]] = record
        if unknown:
            errors = sorted({str(record["error"]) for record in latest if record.get("error")})
            return self._fail(
                unknown,
                f"{len(unknown)} {id_field}(s) could not be checked ({'; '.join(errors)}): "
                f"{listing(map(str, unknown), 20)}",
            )
        failed = [item for item, record in self.final.items() if record.get("status") in self.failed_statuses]
        if failed:
            statuses = sorted({str(self.final[item]["status"]) for item in failed})
            ended = f"{len(failed)} {id_field}(s) ended {'/'.join(statuses)}"
            return self._fail(failed, f"{ended}: {listing(map(str, failed), 20)}")
        self.message = self.summary(latest)
        return WaitOutcome.DONE if not self.pending else WaitOutcome.WAITING

    def _fail(self, ids: list[int], message: str) -> WaitOutcome:
        self.problem_ids = ids
        self.message = message
        return WaitOutcome.FAILED

    def records(self) -> list[dict[str, Any]]:
        """Return the final records, in the order the IDs were given."""
        return [self.final[item] for item in self.ids if item in self.final]

    def summary(self, latest: Iterable[Mapping[str, Any]] = ()) -> str:
        """One progress line, e.g. ``37/100 done; 12,400 remaining units; statuses: Completed 37, …``.

        Each ID counts with its latest record (``latest``, else the last poll that reported it); IDs
        no poll has reported yet count as ``not seen yet``.
        """
        id_field = self.kind.value
        current = {**self.last_seen, **{record[id_field]: record for record in latest}, **self.final}
        statuses = Counter(str(current[item].get("status")) for item in self.ids if item in current)
        line = f"{len(self.final)}/{len(self.ids)} {id_field}s done"
        unseen = sum(1 for item in self.ids if item not in current)
        if self.kind is WaitKind.ORDER and (unseen < len(self.pending) or not self.pending):
            remains = sum(current[item].get("remains") or 0 for item in self.pending if item in current)
            line += f"; {'at least ' if unseen else ''}{remains:,} remaining units"
        counts = [f"{name} {count}" for name, count in statuses.most_common()]
        if unseen:
            counts.append(f"not seen yet {unseen}")
        return line + "; statuses: " + ", ".join(counts)

    def poll_failed(self, reason: str, then: str) -> str:
        """Return the log line for a poll that failed (``then`` says what happens next).

        E.g. ``poll failed (HTTP 503); 20 orders still pending, asking again in 60 s``.
        """
        pending, total = len(self.pending), len(self.ids)
        still = f"{pending} of {total}" if pending < total else f"{pending}"
        return f"poll failed ({reason}); {still} {self.kind.value}s still pending, {then}"
