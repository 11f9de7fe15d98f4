"""The ledger's keys in a ledger asset's state store, read back: which scope, which page, the lease.

A scope ``S`` keeps its pages under ``mirpanel.ledger.<quote(S, safe='')>.<n>`` (n = 0, 1, …) and, once
placements take a lease (issue 20), ``mirpanel.ledger.<quote(S, safe='')>.lease``. Any other key — a
future format — is not a page and is left alone. Nothing here reads a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import quote, unquote

from airflow_provider_mirpanel.placement.ledger import PAGE_PREFIX

#: The suffix of a scope's lease key.
LEASE = "lease"


@dataclass(frozen=True)
class LedgerKey:
    """A ledger key: its scope, and its page number or None for the lease."""

    scope: str
    page: int | None

    @property
    def is_lease(self) -> bool:
        return self.page is None


def parse_key(key: str) -> LedgerKey | None:
    """The scope and page (or lease) of a scoped ledger key; None for any other key."""
    if not key.startswith(PAGE_PREFIX):
        return None
    quoted, dot, suffix = key[len(PAGE_PREFIX) :].rpartition(".")
    if not dot or not quoted:
        return None
    scope = unquote(quoted)
    if quote(scope, safe="") != quoted:  # not written by the ledger (it quotes every scope the same way)
        return None
    if suffix == LEASE:
        return LedgerKey(scope, None)
    if suffix.isascii() and suffix.isdigit() and (suffix == "0" or not suffix.startswith("0")):
        return LedgerKey(scope, int(suffix))
    return None


@dataclass(frozen=True)
class Lease:
    """A scope's lease (issue 20): who places into the scope, since when, until when.

    ``expires`` is 0 once released. Read with :func:`parse_lease`; a value of another shape reads as None.
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    taken_at: float
    renewed_at: float
    expires: float
    released_at: float | None

    def held(self, now: float) -> bool:
        """Whether a placement holds the scope at ``now`` (epoch seconds)."""
        return self.released_at is None and self.expires > now

    @property
    def last_written(self) -> float:
        """When its owner last wrote it: released, else last renewed."""
        return self.released_at if self.released_at is not None else self.renewed_at


def parse_lease(value: Any) -> Lease | None:
    """The lease stored as ``{"owner": {dag_id, run_id, task_id, map_index}, "token", "taken_at",
    "renewed_at", "expires", "released_at"}``; None for anything else."""
    if not isinstance(value, dict) or not isinstance(value.get("owner"), dict):
        return None
    owner = value["owner"]
    if not all(isinstance(owner.get(name), str) for name in ("dag_id", "run_id", "task_id")):
        return None
    taken, renewed, expires = (value.get(name) for name in ("taken_at", "renewed_at", "expires"))
    if not (_is_number(taken) and _is_number(renewed) and _is_number(expires)):
        return None
    released = value.get("released_at")
    map_index = owner.get("map_index", -1)
    return Lease(
        owner["dag_id"],
        owner["run_id"],
        owner["task_id"],
        map_index if isinstance(map_index, int) and not isinstance(map_index, bool) else -1,
        float(taken),
        float(renewed),
        float(expires),
        float(released) if _is_number(released) else None,
    )


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
