"""The API's actions: what each one sends, which are reads, and the statuses they report.

One endpoint, one ``action`` form field; multi-ID actions take at most 100 comma-separated IDs.
Nothing here does I/O.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from airflow_provider_mirpanel.exceptions import MirPanelInputError

MAX_IDS_PER_REQUEST = 100  # the API refuses more than 100 IDs in one multi request


class Action(str, Enum):
    """The API's actions."""

    SERVICES = "services"
    ADD = "add"
    STATUS = "status"
    REFILL = "refill"
    REFILL_STATUS = "refill_status"
    CANCEL = "cancel"
    BALANCE = "balance"


# Actions that change nothing on the panel, so resending one after any failure is harmless.
READ_ONLY_ACTIONS = frozenset({Action.SERVICES, Action.STATUS, Action.REFILL_STATUS, Action.BALANCE})

# The form field that carries one ID / many IDs, per action.
SINGLE_ID_FIELD = {Action.STATUS: "order", Action.REFILL: "order", Action.REFILL_STATUS: "refill"}
MULTI_ID_FIELD = {
    Action.STATUS: "orders",
    Action.REFILL: "orders",
    Action.REFILL_STATUS: "refills",
    Action.CANCEL: "orders",
}


def batches(ids: list[int], size: int = MAX_IDS_PER_REQUEST) -> list[list[int]]:
    """Split IDs into request-sized chunks."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def action_form(action: Action) -> dict[str, str]:
    """Return the form of an action without parameters (``services``, ``balance``), without the key."""
    return {"action": action.value}


def single_form(action: Action, item_id: int) -> dict[str, str]:
    """Return the form of a single-ID action (without the key)."""
    return {"action": action.value, SINGLE_ID_FIELD[action]: str(item_id)}


def multi_form(action: Action, ids: list[int]) -> dict[str, str]:
    """Return the form of a multi-ID action for at most 100 IDs (without the key)."""
    if len(ids) > MAX_IDS_PER_REQUEST:
        raise MirPanelInputError(f"at most {MAX_IDS_PER_REQUEST} IDs per request, got {len(ids)}")
    return {"action": action.value, MULTI_ID_FIELD[action]: ",".join(map(str, ids))}


# -- statuses ------------------------------------------------------------------------------------

_CANONICAL_STATUS = {
    "pending": "Pending",
    "in progress": "In progress",
    "in_progress": "In progress",
    "inprogress": "In progress",
    "processing": "Processing",
    "completed": "Completed",
    "complete": "Completed",
    "partial": "Partial",
    "canceled": "Canceled",
    "cancelled": "Canceled",
    "refunded": "Refunded",
    "rejected": "Rejected",
    "error": "Error",
}

ORDER_TERMINAL_STATUSES = frozenset({"Completed", "Partial", "Canceled", "Refunded"})
REFILL_TERMINAL_STATUSES = frozenset({"Completed", "Rejected", "Canceled", "Error"})


def canonical_status(value: Any) -> str | None:
    """Canonical spelling of a status (``cancelled`` -> ``Canceled``); unknown ones pass unchanged."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return _CANONICAL_STATUS.get(text.strip().lower(), text)
