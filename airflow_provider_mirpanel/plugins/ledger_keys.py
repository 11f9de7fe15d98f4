"""The ledger's keys in a ledger asset's state store, read back: which scope, which page, the lease.

A scope ``S`` keeps its pages under ``mirpanel.ledger.<quote(S, safe='')>.<n>`` (n = 0, 1, …) and its
lease under ``mirpanel.ledger.<quote(S, safe='')>.lease`` (read with
:meth:`~airflow_provider_mirpanel.placement.lease.Lease.from_json`). Any other key — a
future format — is not a page and is left alone. Nothing here reads a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from airflow_provider_mirpanel.placement.lease import LEASE_SUFFIX as LEASE
from airflow_provider_mirpanel.placement.ledger import PAGE_PREFIX


@dataclass(frozen=True)
class LedgerKey:
    """A ledger key: its scope, and its page number or None for the lease."""

    scope: str
    page: int | None

    @property
    def is_lease(self) -> bool:
        """Return whether the key is the scope's lease (not a page)."""
        return self.page is None


def parse_key(key: str) -> LedgerKey | None:
    """Return the scope and page (or lease) of a scoped ledger key; None for any other key."""
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
