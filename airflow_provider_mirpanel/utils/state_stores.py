"""What this provider keeps in Airflow's state stores (Airflow 3.3).

``context["task_state_store"]`` is a small key/value store per task instance that survives task
retries and, for sensors in ``reschedule`` mode, the re-creation of the operator at every poke.
Values are JSON; Airflow warns above 64 KB per value, so everything here is written in small
pieces. Nothing here talks to the panel.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from airflow_provider_mirpanel.utils.fallback_stores import InProcessStateStore

#: The former name of :class:`~airflow_provider_mirpanel.utils.fallback_stores.InProcessStateStore`.
MemoryStateStore = InProcessStateStore


class StateStore(Protocol):
    """What this provider needs of ``context["task_state_store"]``."""

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default``."""

    def set(self, key: str, value: Any) -> None:
        """Write ``value`` under ``key``."""


def store_of(context: Mapping[str, Any]) -> StateStore | None:
    """Return the task's state store, or None (a bare ``op.execute(context)``, Airflow before 3.3)."""
    store = context.get("task_state_store")
    return store if store is not None else None


def digest(value: Any) -> str:
    """Return a short fingerprint of a JSON-able value, to notice that what a stored value describes changed."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RecordPages:
    """A growing list of flat records kept in a state store as pages of compact rows.

    Each page holds at most ``page_size`` records as lists of values in ``fields`` order (about
    100 bytes a record), so no stored value comes near the 64 KB warning. A ``meta`` value says
    how many pages there are and what the records belong to (``owner``): pages written for
    another owner (other IDs) are ignored.

    :param store: the state store.
    :param prefix: prefix of the keys (``<prefix>meta``, ``<prefix>page.<n>``).
    :param fields: the record fields kept.
    :param owner: a fingerprint of what the records belong to.
    """

    def __init__(self, store: StateStore, prefix: str, fields: Iterable[str], owner: str, page_size: int = 400):
        self.store = store
        self.prefix = prefix
        self.fields = tuple(fields)
        self.owner = owner
        self.page_size = page_size
        self.saved = 0

    def load(self) -> list[dict[str, Any]]:
        """Return the records saved so far (none when the pages belong to another owner)."""
        meta = self.store.get(self.prefix + "meta")
        if not isinstance(meta, Mapping) or meta.get("owner") != self.owner or meta.get("fields") != list(self.fields):
            return []
        records: list[dict[str, Any]] = []
        for page in range(int(meta.get("pages", 0))):
            rows = self.store.get(f"{self.prefix}page.{page}") or []
            records.extend(dict(zip(self.fields, row, strict=False)) for row in rows)
        self.saved = len(records)
        return records

    def save(self, records: list[Mapping[str, Any]]) -> None:
        """Save ``records``, of which the first ``self.saved`` are saved already (append-only)."""
        if len(records) <= self.saved:
            return
        first_page = self.saved // self.page_size
        pages = (len(records) + self.page_size - 1) // self.page_size
        for page in range(first_page, pages):
            chunk = records[page * self.page_size : (page + 1) * self.page_size]
            self.store.set(
                f"{self.prefix}page.{page}", [[record.get(name) for name in self.fields] for record in chunk]
            )
        self.store.set(self.prefix + "meta", {"owner": self.owner, "fields": list(self.fields), "pages": pages})
        self.saved = len(records)
