"""What a hook makes of a decoded reply, for the protocol tests (the bad-replies corpus, the property tests)."""

from __future__ import annotations

from typing import Any

from airflow_provider_mirpanel import protocol
from airflow_provider_mirpanel.protocol import Action

#: The ``add`` form the corpus's ``add`` replies answer.
ADD_FORM = {"service": "1", "link": "https://example.com/p/1", "quantity": "100"}

SINGLE_PARSERS = {
    Action.STATUS: protocol.parse_order_status,
    Action.REFILL: protocol.parse_refill,
    Action.REFILL_STATUS: protocol.parse_refill_status,
}


def parse_reply(action: Action, payload: Any, ids: int | list[int] | None = None) -> Any:
    """What a hook makes of a decoded payload: the action's parser (single- or multi-ID form)."""
    if action is Action.SERVICES:
        return protocol.parse_services(payload)
    if action is Action.BALANCE:
        return protocol.parse_balance(payload)
    if action is Action.ADD:
        return protocol.parse_add(payload, ADD_FORM)
    if isinstance(ids, list):
        return protocol.MULTI_PARSERS[action](payload, ids)
    assert isinstance(ids, int), f"{action.value} needs an ID or a list of IDs"
    return SINGLE_PARSERS[action](payload, ids)
