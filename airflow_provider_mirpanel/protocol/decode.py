"""Replies to payloads or exceptions: reading a body whatever its HTTP status, and classifying errors.

:func:`decode_reply` is the one place that decides what a reply means — JSON payload, the panel's
refusal (typed by :func:`classify_error`, read by keywords), a transient failure (429, 5xx, HTML
pages, bodies cut off) or a malformed reply. Nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar
from urllib.parse import quote_plus

from airflow_provider_mirpanel.exceptions import (
    MirPanelAPIError,
    MirPanelAuthError,
    MirPanelError,
    MirPanelInsufficientFundsError,
    MirPanelResponseError,
    MirPanelTransientError,
)
from airflow_provider_mirpanel.protocol.actions import Action
from airflow_provider_mirpanel.protocol.values import snippet, to_text

_Text = TypeVar("_Text", str, bytes)

# Localized key words too: anahtar (tr), ключ (ru), clé (fr), clave (es), chave (pt).
_AUTH_WORDS = re.compile(
    r"api[\s_.-]*key|apikey|\bkey\b|token|unauthori[sz]ed|authenticat|not authori|"
    r"api[\s_.-]*anahtar|ключ|cl[ée][\s_.-]*(d'\s*)?api|(clave|chave)[\s_.-]*(de[\s_.-]*)?api",
    re.I,
)
_BAD_WORDS = re.compile(
    r"invalid|inv[áa]lid|incorrect|wrong|bad|expired|unknown|missing|blocked|revoked|"
    r"not found|not valid|hatal|geçersiz|неверн|недейств|неправильн",
    re.I,
)
_FUNDS = re.compile(r"fund|balance|bakiye|баланс|средств|saldo|solde|fonds|fondos", re.I)
_FUNDS_LOW = re.compile(
    r"not[\s_.-]*enough|insufficient|insuficient|insuffisant|low|yetersiz|недостаточно|exceed", re.I
)
_RATE_LIMIT = re.compile(r"too[\s_.-]*many[\s_.-]*requests|rate[\s_.-]*limit", re.I)


MAX_PANEL_TEXT = 1000  # characters of a panel's error text an exception keeps


def classify_error(message: Any, http_status: int | None = None, action: str | None = None) -> MirPanelError:
    """Return the exception for a panel's ``{"error": ...}`` text, read by keywords, never exact strings."""
    text = to_text(message) or "(empty error message)"
    if len(text) > MAX_PANEL_TEXT:  # a panel's text is kept, but not a 10 MB one in every log line
        text = text[:MAX_PANEL_TEXT] + "…"
    if http_status == 429 or _RATE_LIMIT.search(text):
        return MirPanelTransientError(
            f"rate limited: {text}", http_status=http_status, request_sent=False, action=action
        )
    if http_status in (401, 403) or (_AUTH_WORDS.search(text) and _BAD_WORDS.search(text)):
        return MirPanelAuthError(text, http_status, action)
    if http_status == 402 or "not_enough_funds" in text or (_FUNDS.search(text) and _FUNDS_LOW.search(text)):
        return MirPanelInsufficientFundsError(text, http_status, action)
    return MirPanelAPIError(text, http_status, action)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds form); None when absent or a date."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


# What servers and gateways (not the panel's API code) put in a 5xx error: HTTP reason phrases,
# Cloudflare's 52x reasons, maintenance pages' wording.
_SERVER_TROUBLE = re.compile(
    r"server error|internal error|unavailable|gateway|time-?out|timed out|maintenance|overload|try again later|"
    r"temporar|web server|origin is unreachable|ssl handshake|ssl certificate|upstream|^error$",
    re.I,
)


def _without_secret(text: _Text, secret: str) -> _Text:
    """``text`` (bytes or str) with ``secret`` and its form-encoded spelling replaced by ``***``."""
    for spelling in {secret, quote_plus(secret)}:
        text = text.replace(spelling.encode(), b"***") if isinstance(text, bytes) else text.replace(spelling, "***")
    return text


def _cut_off(error: Exception, text: str) -> bool:
    """Whether a JSON text that failed to parse is the beginning of one: a reply cut off on the way."""
    if not isinstance(error, json.JSONDecodeError) or text[0] not in "{[":
        return False
    return error.pos >= len(text) or error.msg.startswith("Unterminated string")


#: Deepest nesting a reply may have; real replies have 3 levels. Python 3.11's json raises RecursionError
#: near 1000 levels, 3.12+ parses far deeper: this limit makes every Python read a reply alike.
MAX_DEPTH = 100


def _nested_too_deep(payload: dict[str, Any] | list[Any]) -> bool:
    """Whether ``payload`` nests containers deeper than :data:`MAX_DEPTH` (level by level: no recursion)."""
    level: list[Any] = [payload]
    for _ in range(MAX_DEPTH):
        # exact types (json makes no subclasses): the check runs on every reply, this is its hot loop
        level = [
            item
            for value in level
            for item in (value.values() if type(value) is dict else value)
            if type(item) is dict or type(item) is list
        ]
        if not level:
            return False
    return True


def _json_problem(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at {error.pos}"
    if isinstance(error, RecursionError):
        return "nested too deeply"
    return snippet(str(error), 60)


def error_text(value: Any) -> str | None:
    """Return the text of an ``error`` field, or None when it is empty (``null``, ``""``, ``false``).

    Some panels send ``"error": null`` or ``""`` beside a successful reply; that is no error.
    """
    if value is None or value is False or value == 0 or (isinstance(value, str) and not value.strip()):
        return None
    return to_text(value)


def decode_reply(
    body: bytes,
    http_status: int,
    action: Action,
    *,
    content_type: str | None = None,
    retry_after: str | None = None,
    location: str | None = None,
    secret: str | None = None,
) -> Any:
    """Return the JSON payload of a reply, or the exception it stands for.

    The body is read whatever the HTTP status: ``{"error": ...}`` becomes a typed
    :class:`MirPanelAPIError` (or its auth/funds subclasses); 429 and 5xx without a panel error, a
    5xx whose error is a server's or gateway's own text ("Service Unavailable"), HTML pages and
    connection-level garbage become :class:`MirPanelTransientError`; a redirect (clients do not
    follow them: the key would go wherever it points) and anything else that is not JSON become
    :class:`MirPanelResponseError`.

    ``secret`` (the API key) is blanked out of the body and ``location`` before anything reads them:
    some panels repeat the request in their error text, and that text ends up in exceptions and logs.
    """
    name = action.value
    if secret:
        body, location = _without_secret(body, secret), location and _without_secret(location, secret)
    if 300 <= http_status < 400:
        raise MirPanelResponseError(
            f"redirected to {location!r}; check the connection's API URL", http_status=http_status, action=name
        )
    if http_status == 429:
        raise MirPanelTransientError(
            "HTTP 429 Too Many Requests",
            http_status=429,
            retry_after=parse_retry_after(retry_after),
            request_sent=False,
            action=name,
        )
    text = body.decode("utf-8-sig", errors="replace").strip()
    if not text:
        if not 400 <= http_status < 500:  # a crashed script's empty 200 is a lost reply, like a dropped connection
            raise MirPanelTransientError(f"HTTP {http_status} with an empty body", http_status=http_status, action=name)
        raise MirPanelResponseError("empty body", http_status=http_status, action=name)
    # Only the body decides: many PHP panels serve their JSON as text/html.
    html = text[0] == "<"
    try:
        payload = None if html else json.loads(text)
        if isinstance(payload, (dict, list)) and _nested_too_deep(payload):
            raise RecursionError("nested too deeply")  # as Python up to 3.11 raises it, on every Python
    except (ValueError, RecursionError) as exc:  # bad JSON; an int of over 4300 digits; nesting too deep
        html = (content_type or "").lower().startswith("text/html")
        if not html:
            if http_status >= 500 or (http_status < 400 and _cut_off(exc, text)):
                raise MirPanelTransientError(
                    f"HTTP {http_status}: {snippet(text, 60)}", http_status=http_status, action=name
                ) from None
            raise MirPanelResponseError(
                f"not JSON ({_json_problem(exc)}): {snippet(text)}", http_status=http_status, action=name
            ) from None
    if html:
        raise MirPanelTransientError(
            f"HTTP {http_status} HTML page instead of JSON: {snippet(text, 60)}",
            http_status=http_status,
            action=name,
        )
    error = error_text(payload["error"]) if isinstance(payload, dict) and "error" in payload else None
    if error is not None:
        if http_status >= 500 and _SERVER_TROUBLE.search(error):
            # a gateway's or a crashed app's own text, not the panel's answer: the request may have been processed
            raise MirPanelTransientError(
                f"HTTP {http_status}: {snippet(error, 60)}", http_status=http_status, action=name
            )
        raise classify_error(error, http_status, name)
    if http_status >= 500:
        raise MirPanelTransientError(f"HTTP {http_status}", http_status=http_status, action=name)
    if http_status >= 400:
        raise MirPanelAPIError(f"HTTP {http_status}: {snippet(text)}", http_status, name)
    return payload
