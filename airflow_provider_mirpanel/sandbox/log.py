"""The sandbox panel's request log: one entry per HTTP request, for tests to assert on."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestEntry:
    """One request the panel received.

    ``ids`` are the order/refill IDs it named (``order``, ``orders``, ``refill``, ``refills``);
    ``created`` the order/refill IDs it created. ``form`` is the form without the key. ``status``
    is the HTTP status sent, None when the connection was dropped without a reply. ``fault`` is the
    kind of the fault applied (None: none); ``processed`` whether the panel acted on the request.
    ``peer`` is the client's ``host:port`` (one per TCP connection).
    """

    action: str
    form: dict[str, str]
    peer: str
    ids: list[int] = field(default_factory=list)
    created: list[int] = field(default_factory=list)
    status: int | None = 200
    fault: str | None = None
    processed: bool = True
    path: str = "/api/v2"
