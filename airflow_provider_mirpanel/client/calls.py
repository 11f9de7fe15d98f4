"""The sans-IO core of both hooks: everything between a connection and the bytes on the wire.

:class:`PanelConnection` reads a ``mirpanel`` connection into settings and the key, and turns a
form into a request body and a reply into a payload; :class:`MultiCall` plans a multi-ID call
(distinct IDs → chunks of at most 100 → forms) and merges the chunks' replies into records, with
one rule for failed chunks (:func:`most_serious`). The sync hook (``requests``) and the async hook
(``aiohttp``) call these and only move bytes, so for the same replies they give the same records
and raise the same exception. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_provider_mirpanel import __version__
from airflow_provider_mirpanel.client.ratelimit import Headers
from airflow_provider_mirpanel.client.settings import ClientSettings
from airflow_provider_mirpanel.exceptions import (
    MirPanelAPIError,
    MirPanelAuthError,
    MirPanelError,
    MirPanelInputError,
    MirPanelTransientError,
)
from airflow_provider_mirpanel.protocol import (
    MULTI_PARSERS,
    READ_ONLY_ACTIONS,
    Action,
    batches,
    decode_reply,
    multi_form,
    normalize_ids,
)

USER_AGENT = f"airflow-provider-mirpanel/{__version__}"
#: Headers of every request; the key travels in the POST body, never in a header or the URL.
HEADERS = {"User-Agent": USER_AGENT, "Accept": "application/json"}
REDACTED = "***"


class ConnectionFields(Protocol):
    """The fields of an Airflow connection this provider reads (``airflow.sdk.Connection`` has them)."""

    host: str | None
    schema: str | None
    port: int | None
    password: str | None


@dataclass(frozen=True, repr=False)
class PanelConnection:
    """A ``mirpanel`` connection, read: where and how to talk to the panel, and the key to send."""

    conn_id: str
    settings: ClientSettings
    key: str

    def __repr__(self) -> str:
        return f"PanelConnection({self.conn_id!r}, url={self.settings.url!r})"  # never the key

    @classmethod
    def read(cls, conn_id: str, conn: ConnectionFields, extra: Mapping[str, Any]) -> PanelConnection:
        """Return settings from the connection's fields and extra (already parsed); a missing key is refused.

        :raises MirPanelInputError: no API key, bad extras, or insecure transport not allowed.
        """
        if not conn.password:
            raise MirPanelInputError(f"connection {conn_id!r} has no API key: put it in the password field")
        settings = ClientSettings.from_connection(conn.host, conn.schema, conn.port, extra)
        return cls(conn_id, settings, conn.password)

    def body(self, form: Mapping[str, str]) -> dict[str, str]:
        """Return the POST body of a request: the key and the form."""
        return {"key": self.key, **form}

    def decode(self, action: Action, status: int, headers: Headers, body: bytes) -> Any:
        """Return the payload of a reply, or the exception it stands for (see :func:`~.protocol.decode_reply`)."""
        return decode_reply(
            body,
            status,
            action,
            content_type=headers.get("Content-Type"),
            retry_after=headers.get("Retry-After"),
            location=headers.get("Location"),
            secret=self.key,
        )

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced, for messages that leave the hook (events, logs)."""
        return text.replace(self.key, REDACTED)


def most_serious(errors: list[BaseException]) -> BaseException:
    """Return the error to raise for a multi call whose batches failed.

    A bug, then a bad key, then any other refusal or malformed reply, and a transient failure only
    when nothing worse happened. Among equals, the first batch's.
    """

    def rank(error: BaseException) -> int:
        if not isinstance(error, MirPanelError):
            return 0
        if isinstance(error, MirPanelAuthError):
            return 1
        return 3 if isinstance(error, MirPanelTransientError) else 2

    return min(errors, key=rank)


@dataclass(frozen=True)
class MultiCall:
    """A multi-ID call planned: its chunks of at most 100 distinct IDs and their forms.

    Refill and cancel change the panel, so a chunk that failed becomes per-ID error records (the
    other chunks' results survive); a refused key still fails the call. Read chunks that failed
    fail the call with the :func:`most_serious` error.
    """

    action: Action
    chunks: list[list[int]]

    @classmethod
    def plan(cls, action: Action, ids: Iterable[Any], what: str) -> MultiCall:
        """Return the chunks of a call for ``ids`` (any iterable of IDs; duplicates dropped, order kept).

        :raises MirPanelInputError: an ID is invalid.
        """
        return cls(action, batches(normalize_ids(ids, what)))

    @property
    def requests(self) -> list[tuple[list[int], dict[str, str]]]:
        """Each chunk with the form that asks about it (without the key)."""
        return [(chunk, multi_form(self.action, chunk)) for chunk in self.chunks]

    def records(self, chunk: list[int], reply: Any) -> list[Any]:
        """Return the records of one chunk from its decoded payload, or from the exception its request raised.

        :raises BaseException: the chunk's failure, when it is not turned into per-ID errors.
        """
        if isinstance(reply, BaseException):
            return self._failed(chunk, reply)
        try:
            return MULTI_PARSERS[self.action](reply, chunk)
        except MirPanelError as error:
            return self._failed(chunk, error)

    def _failed(self, chunk: list[int], error: BaseException) -> list[Any]:
        if (
            self.action in READ_ONLY_ACTIONS
            or not isinstance(error, MirPanelError)
            or isinstance(error, MirPanelAuthError)
        ):
            raise error
        if isinstance(error, MirPanelAPIError):
            reason = error.panel_message
        else:
            known = isinstance(error, MirPanelTransientError) and not error.request_sent
            reason = f"{'not sent' if known else 'outcome unknown'}: {error}"
        return MULTI_PARSERS[self.action]({str(item): {"error": reason} for item in chunk}, chunk)

    def merge(self, results: list[list[Any] | BaseException]) -> list[Any]:
        """All records in input order from each chunk's records (or the exception it raised).

        :raises BaseException: the :func:`most_serious` of the chunks' exceptions.
        """
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            raise most_serious(errors)
        return [record for chunk in results if isinstance(chunk, list) for record in chunk]
