"""Exceptions raised by the MirPanel provider.

Catch them by type, never by message. Every exception carries what a caller needs as attributes
(the panel's own text, the HTTP status, whether a request may have reached the panel) and none of
them ever holds the API key.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_mirpanel.version_compat import AirflowException


class MirPanelError(AirflowException):
    """Base class of every error this provider raises."""


class MirPanelInputError(MirPanelError, ValueError):
    """Invalid parameters, refused before any request was sent."""


class MirPanelAPIError(MirPanelError):
    """The panel answered and refused the request (``{"error": "..."}``)."""

    def __init__(self, panel_message: str, http_status: int | None = None, action: str | None = None):
        self.panel_message = panel_message
        self.http_status = http_status
        self.action = action
        super().__init__(f"The panel refused the request{_request_of(action, http_status)}: {panel_message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.panel_message, self.http_status, self.action))


class MirPanelAuthError(MirPanelAPIError):
    """The API key is missing, wrong, expired or blocked."""


class MirPanelInsufficientFundsError(MirPanelAPIError):
    """The account balance does not cover the order."""


class MirPanelTransientError(MirPanelError):
    """A temporary failure: timeout, connection error, HTTP 5xx or 429, an HTML page instead of JSON.

    ``request_sent`` is False only when the panel certainly did not process the request (the
    connection was never made, or the panel turned it away unprocessed with 429).
    """

    def __init__(
        self,
        reason: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
        request_sent: bool = True,
        action: str | None = None,
    ):
        self.reason = reason
        self.http_status = http_status
        self.retry_after = retry_after
        self.request_sent = request_sent
        self.action = action
        where = f" ({action})" if action else ""
        super().__init__(f"Temporary failure talking to the panel{where}: {reason}")

    @property
    def throttled(self) -> bool:
        """Whether the panel turned the request away for its rate limit, unprocessed.

        A 429, or a "too many requests" error: the panel answered and did not process the request.
        """
        return not self.request_sent and self.http_status is not None

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                type(self),
                (self.reason,),
                {
                    "http_status": self.http_status,
                    "retry_after": self.retry_after,
                    "request_sent": self.request_sent,
                    "action": self.action,
                },
            ),
        )


class MirPanelResponseError(MirPanelError):
    """The panel's reply is not what the API promises (not JSON, wrong shape, missing fields)."""

    def __init__(self, detail: str, *, http_status: int | None = None, action: str | None = None):
        self.detail = detail
        self.http_status = http_status
        self.action = action
        super().__init__(f"Malformed reply{_request_of(action, http_status)}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (self.detail,), {"http_status": self.http_status, "action": self.action}))


class MirPanelAmbiguousOrderError(MirPanelError):
    """An ``add`` may or may not have placed an order: it is never resent automatically.

    ``params`` holds the order's parameters (never the key) so the order can be looked up on the
    panel before deciding to place it again.
    """

    def __init__(self, params: dict[str, Any], cause: str):
        self.params = dict(params)
        self.cause = cause
        super().__init__(
            f"The outcome of the order {self.params} is unknown ({cause}); it was not resent. "
            "Check the panel's order list before placing it again."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.params, self.cause))


def _request_of(action: str | None, http_status: int | None) -> str:
    """`` to 'add' (HTTP 400)``: which request a message is about, each part only when known."""
    where = f" to {action!r}" if action else ""
    return where + (f" (HTTP {http_status})" if http_status is not None else "")


def _rebuild(cls: type[Exception], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exception:
    return cls(*args, **kwargs)
