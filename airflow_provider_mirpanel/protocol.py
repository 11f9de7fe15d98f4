"""The Perfect Panel API v2 protocol: the one place that owns its rules.

What each action sends, which order types take which parameters, how every reply shape becomes
flat records, which panel texts mean which error, and which calls are safe to retry. The sync hook,
the async triggers and the sandbox panel all call this module; none of them re-implements it.
Nothing here does I/O.
"""

from __future__ import annotations

import ast
import json
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, TypeVar
from urllib.parse import quote_plus

from tenacity import RetryCallState, retry_if_exception, stop_after_attempt

from airflow_provider_mirpanel.exceptions import (
    MirPanelAPIError,
    MirPanelAuthError,
    MirPanelError,
    MirPanelInputError,
    MirPanelInsufficientFundsError,
    MirPanelResponseError,
    MirPanelTransientError,
)

_Text = TypeVar("_Text", str, bytes)

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

# ---------------------------------------------------------------------------------------------
# Statuses
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Order types and their parameters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderType:
    """A service type and the ``add`` parameters it takes."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def params(self) -> frozenset[str]:
        return frozenset(self.required + self.optional)


ORDER_TYPES: dict[str, OrderType] = {
    t.name.lower(): t
    for t in (
        OrderType("Default", ("link", "quantity"), ("runs", "interval")),
        OrderType("Package", ("link",)),
        OrderType("Custom Comments", ("link", "comments")),
        OrderType("Custom Comments Package", ("link", "comments")),
        OrderType("Mentions", ("link", "quantity", "usernames")),
        OrderType("Mentions with Hashtags", ("link", "quantity", "usernames", "hashtags")),
        OrderType("Mentions Custom List", ("link", "usernames")),
        OrderType("Mentions Hashtag", ("link", "quantity", "hashtag")),
        OrderType("Mentions User Followers", ("link", "quantity", "username")),
        OrderType("Mentions Media Likers", ("link", "quantity", "media")),
        OrderType("Comment Likes", ("link", "quantity", "username")),
        OrderType("Comment Replies", ("link", "username", "comments")),
        OrderType("Poll", ("link", "quantity", "answer_number")),
        OrderType("Invites from Groups", ("link", "quantity", "groups")),
        OrderType(
            "Subscriptions", ("username", "min", "max", "delay"), ("posts", "old_posts", "expiry")
        ),
        OrderType(
            "Web Traffic",
            ("link", "quantity", "country", "device", "type_of_traffic"),
            ("runs", "interval", "google_keyword", "referring_url"),
        ),
        OrderType("SEO", ("link", "quantity", "keywords")),
    )
}

ORDER_PARAMS = frozenset().union(*(t.params for t in ORDER_TYPES.values()))
# Fields whose value is a list of lines; a Python list is joined with "\n".
MULTILINE_PARAMS = frozenset({"comments", "usernames", "hashtags", "groups", "keywords"})
INT_PARAMS = frozenset(
    {"quantity", "runs", "interval", "answer_number", "min", "max", "posts", "old_posts", "delay",
     "device", "type_of_traffic"}
)
SUBSCRIPTION_DELAYS = frozenset(
    {0, 5, 10, 15, 20, 30, 40, 50, 60, 90, 120, 150, 180, 210, 240, 270, 300, 360, 420, 480, 540, 600}
)
# C0/C1 controls and the Unicode line/paragraph separators: any of them can split a form value.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# ASCII digits only: "²".isdigit() is True, yet int("²") raises ValueError.
_DIGITS = re.compile(r"[0-9]{1,19}")
MAX_WHOLE = 2**63 - 1  # the largest ID or count a panel's database column holds
_EXPIRY = re.compile(r"^\d{2}/\d{2}/\d{4}$")


def order_type(type_name: Any) -> OrderType | None:
    """The order type for a catalogue ``type`` value (case-insensitive), or None when unknown."""
    return ORDER_TYPES.get((to_text(type_name) or "Default").strip().lower())


def _param_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise MirPanelInputError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise MirPanelInputError(f"{name} must be a whole number, got {value!r}")
    if number < 0:
        raise MirPanelInputError(f"{name} must not be negative, got {number}")
    if number > MAX_WHOLE:
        raise MirPanelInputError(f"{name} is too large: {number}")
    return number


def _param_text(name: str, value: Any) -> str:
    if name in MULTILINE_PARAMS and isinstance(value, (list, tuple)):
        lines = [_param_text(name, line) for line in value]
        if not lines:
            raise MirPanelInputError(f"{name} must not be an empty list")
        return "\n".join(lines)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise MirPanelInputError(f"{name} must be text, got {type(value).__name__} {value!r}")
    text = str(value)
    if not text.strip():
        raise MirPanelInputError(f"{name} must not be empty")
    allowed = "\n" if name in MULTILINE_PARAMS else ""
    if any(ch not in allowed for ch in _CONTROL_CHARS.findall(text)):
        raise MirPanelInputError(f"{name} contains a line break or control character: {text!r}")
    return text


def build_add_form(service: Any, params: Mapping[str, Any]) -> dict[str, str]:
    """The form fields of an ``add`` (without key and action), checked before anything is sent.

    Unknown parameter names, wrong types, control characters in single-line fields and empty values
    raise :class:`MirPanelInputError`. ``None`` values are dropped. Lists in multi-line fields
    (comments, usernames, hashtags, groups, keywords) are joined with ``\\n``.
    """
    form = {"service": str(normalize_id(service, "service"))}
    unknown = sorted(set(params) - ORDER_PARAMS, key=repr)  # names from a parsed table may not all be text
    if unknown:
        raise MirPanelInputError(
            f"unknown order parameter(s) {unknown}; known: {', '.join(sorted(ORDER_PARAMS))}"
        )
    for name, value in params.items():
        if value is None:
            continue
        form[name] = str(_param_int(name, value)) if name in INT_PARAMS else _param_text(name, value)
    return form


def order_problems(service: Mapping[str, Any], form: Mapping[str, str]) -> list[str]:
    """What is wrong with an order (as built by :func:`build_add_form`) for a catalogue service.

    Checks the type's required parameters, parameters the type does not take, ``quantity``
    within ``min``..``max`` and the type-specific rules. Empty when the order is valid.
    """
    kind = order_type(service.get("type"))
    if kind is None:
        return []  # a type we do not know: let the panel judge
    given = set(form) - {"service"}
    problems = [f"missing {name!r} for a {kind.name} service" for name in kind.required if name not in given]
    extra = sorted(given - kind.params)
    if extra:
        problems.append(f"{kind.name} services do not take {extra}")
    if "quantity" in form and "quantity" in kind.required:
        quantity = int(form["quantity"])
        low, high = to_int(service.get("min")), to_int(service.get("max"))
        if low is not None and quantity < low:
            problems.append(f"quantity {quantity} is below the service minimum {low}")
        if high is not None and quantity > high:
            problems.append(f"quantity {quantity} is above the service maximum {high}")
    if ("runs" in form) != ("interval" in form):
        problems.append("drip-feed needs both 'runs' and 'interval'")
    if kind.name == "Subscriptions":
        if "delay" in form and int(form["delay"]) not in SUBSCRIPTION_DELAYS:
            problems.append(f"delay must be one of {sorted(SUBSCRIPTION_DELAYS)} minutes")
        if "posts" in form and "old_posts" in form:
            problems.append("give 'posts' or 'old_posts', not both")
        if "min" in form and "max" in form and int(form["min"]) > int(form["max"]):
            problems.append("min must not exceed max")
        if "expiry" in form and not _EXPIRY.match(form["expiry"]):
            problems.append("expiry must be a date as d/m/Y, e.g. 31/12/2026")
    if kind.name == "Web Traffic":
        if "device" in form and not 1 <= int(form["device"]) <= 5:
            problems.append("device must be 1..5")
        traffic = int(form.get("type_of_traffic", "0") or 0)
        if "type_of_traffic" in form and not 1 <= traffic <= 3:
            problems.append("type_of_traffic must be 1..3")
        if traffic == 1 and "google_keyword" not in form:
            problems.append("type_of_traffic 1 needs 'google_keyword'")
        if traffic == 2 and "referring_url" not in form:
            problems.append("type_of_traffic 2 needs 'referring_url'")
    return problems


def order_cost(rate: float | None, quantity: int | None) -> float:
    """What an order costs: the rate is the price per 1000 units; a package is charged its rate."""
    if rate is None:
        return 0.0
    return rate * quantity / 1000 if quantity is not None else rate


# ---------------------------------------------------------------------------------------------
# IDs and request forms
# ---------------------------------------------------------------------------------------------


def normalize_id(value: Any, what: str = "order") -> int:
    """A positive integer ID from an int or a numeric string; anything else is refused."""
    if isinstance(value, bool):
        raise MirPanelInputError(f"invalid {what} ID {value!r}: not a number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip())
    elif isinstance(value, (list, tuple, set, frozenset)) or (isinstance(value, str) and "," in value):
        raise MirPanelInputError(f"one {what} ID expected, got {value!r}: use the method that takes many IDs")
    else:
        raise MirPanelInputError(f"invalid {what} ID {value!r}: expected a positive whole number")
    if number <= 0:
        raise MirPanelInputError(f"invalid {what} ID {value!r}: must be positive")
    if number > MAX_WHOLE:
        raise MirPanelInputError(f"invalid {what} ID {value!r}: too large")
    return number


def normalize_ids(ids: Any, what: str = "order") -> list[int]:
    """Distinct IDs in input order from any iterable of ints or numeric strings.

    A string is read as a comma- or space-separated list, or as the list literal a Jinja template
    renders a list to, so ``"[1, 2, 3]"``, ``"1,2,3"`` and ``[1, "2", 3]`` are the same three IDs
    (and ``"[[1, 2]]"`` is refused like ``[[1, 2]]``).
    """
    if ids is None:
        raise MirPanelInputError(f"no {what} IDs given (got None)")
    if isinstance(ids, str):
        ids = _rendered_list(ids, what) if ids.strip()[:1] in ("[", "(") else [
            part for part in re.split(r"[\s,]+", ids) if part]
    if isinstance(ids, (int, float, bytes, bytearray)) or not isinstance(ids, Iterable) or isinstance(ids, Mapping):
        raise MirPanelInputError(f"{what} IDs must be a list of IDs, got {type(ids).__name__} {_snippet(repr(ids))}")
    seen: dict[int, None] = {}
    for value in ids:
        if type(value) is int and 0 < value <= MAX_WHOLE:  # the usual ID: what normalize_id would return
            seen[value] = None
            continue
        if isinstance(value, (list, tuple, set, frozenset, Mapping)):
            raise MirPanelInputError(f"{what} IDs must be a flat list of IDs, found {_snippet(repr(value))} in it")
        seen[normalize_id(value, what)] = None
    return list(seen)


def _rendered_list(text: str, what: str) -> Any:
    """The value of a rendered list literal (``"[1, 2]"``, ``"('1', '2')"``); refused when it is none."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise MirPanelInputError(f"{what} IDs {_snippet(text, 60)!r} are not a list of IDs") from None


def batches(ids: list[int], size: int = MAX_IDS_PER_REQUEST) -> list[list[int]]:
    """Split IDs into request-sized chunks."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def single_form(action: Action, item_id: int) -> dict[str, str]:
    """The form of a single-ID action (without the key)."""
    return {"action": action.value, SINGLE_ID_FIELD[action]: str(item_id)}


def multi_form(action: Action, ids: list[int]) -> dict[str, str]:
    """The form of a multi-ID action for at most 100 IDs (without the key)."""
    if len(ids) > MAX_IDS_PER_REQUEST:
        raise MirPanelInputError(f"at most {MAX_IDS_PER_REQUEST} IDs per request, got {len(ids)}")
    return {"action": action.value, MULTI_ID_FIELD[action]: ",".join(map(str, ids))}


# ---------------------------------------------------------------------------------------------
# Value normalization
# ---------------------------------------------------------------------------------------------


def to_int(value: Any) -> int | None:
    """An int from an int, a float or a numeric string; None for anything else (``"Unknown"``)."""
    kind = type(value)
    if kind is int:
        return value
    if kind is str:
        try:
            return int(value)
        except ValueError:
            number = to_float(value)
            return int(number) if number is not None else None
    if kind is float:
        return int(value) if math.isfinite(value) else None
    return None


# "1,234.5" groups thousands; "0,27819" (one comma, no thousands grouping) is a decimal comma.
_THOUSANDS = re.compile(r"\s*[-+]?[1-9][0-9]{0,2}(,[0-9]{3})+(\.[0-9]*)?\s*")
_DECIMAL_COMMA = re.compile(r"\s*[-+]?[0-9]+,[0-9]+\s*")
_isfinite = math.isfinite


def to_float(value: Any) -> float | None:
    """A float from a number or a numeric string; None for anything else.

    Commas are read as thousands separators (``"1,234.5"``) or, alone and not grouping thousands,
    as a decimal comma (``"0,27819"``); a string read neither way is None, never a wrong number.
    """
    kind = type(value)
    if kind is str:  # first: panels send most numbers as text
        if "," in value:
            if _THOUSANDS.fullmatch(value):
                value = value.replace(",", "")
            elif _DECIMAL_COMMA.fullmatch(value):
                value = value.replace(",", ".")
            else:
                return None
        try:
            number = float(value)
        except ValueError:
            return None
        return number if _isfinite(number) else None
    if kind is float:
        return value if _isfinite(value) else None
    if kind is int:
        try:
            return float(value)
        except OverflowError:  # an int beyond 1.8e308
            return None
    return None


_TRUE = frozenset({"1", "true", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "no", "n", "off", ""})


def to_bool(value: Any) -> bool | None:
    """A bool from a JSON bool, 0/1 or the usual words; None when absent or unreadable."""
    if value is True or value is False:
        return value
    if type(value) is int:
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


def to_text(value: Any) -> str | None:
    """A string, or None for null/absent; other scalars are stringified."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# ---------------------------------------------------------------------------------------------
# Decoding replies and classifying errors
# ---------------------------------------------------------------------------------------------

# Localized key words too: anahtar (tr), ключ (ru), clé (fr), clave (es), chave (pt).
_AUTH_WORDS = re.compile(r"api[\s_.-]*key|apikey|\bkey\b|token|unauthori[sz]ed|authenticat|not authori|"
                         r"api[\s_.-]*anahtar|ключ|cl[ée][\s_.-]*(d'\s*)?api|(clave|chave)[\s_.-]*(de[\s_.-]*)?api",
                         re.I)
_BAD_WORDS = re.compile(r"invalid|inv[áa]lid|incorrect|wrong|bad|expired|unknown|missing|blocked|revoked|"
                        r"not found|not valid|hatal|geçersiz|неверн|недейств|неправильн", re.I)
_FUNDS = re.compile(r"fund|balance|bakiye|баланс|средств|saldo|solde|fonds|fondos", re.I)
_FUNDS_LOW = re.compile(r"not[\s_.-]*enough|insufficient|insuficient|insuffisant|low|yetersiz|недостаточно|exceed",
                        re.I)
_RATE_LIMIT = re.compile(r"too[\s_.-]*many[\s_.-]*requests|rate[\s_.-]*limit", re.I)


MAX_PANEL_TEXT = 1000  # characters of a panel's error text an exception keeps


def classify_error(message: Any, http_status: int | None = None, action: str | None = None) -> MirPanelError:
    """The exception for a panel's ``{"error": ...}`` text, read by keywords, never exact strings."""
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


def _snippet(text: str, limit: int = 120) -> str:
    text = " ".join(text[: limit * 4].split())  # never split a 10 MB body to show 120 characters
    return text if len(text) <= limit else text[:limit] + "…"


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


def _json_problem(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at {error.pos}"
    if isinstance(error, RecursionError):
        return "nested too deeply"
    return _snippet(str(error), 60)


def _error_text(value: Any) -> str | None:
    """The text of an ``error`` field, or None when it is empty (``null``, ``""``, ``false``).

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
    """The JSON payload of a reply, or the exception it stands for.

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
            raise MirPanelTransientError(f"HTTP {http_status} with an empty body", http_status=http_status,
                                         action=name)
        raise MirPanelResponseError("empty body", http_status=http_status, action=name)
    # Only the body decides: many PHP panels serve their JSON as text/html.
    html = text[0] == "<"
    try:
        payload = None if html else json.loads(text)
    except (ValueError, RecursionError) as exc:  # bad JSON; an int of over 4300 digits; nesting too deep
        html = (content_type or "").lower().startswith("text/html")
        if not html:
            if http_status >= 500 or (http_status < 400 and _cut_off(exc, text)):
                raise MirPanelTransientError(f"HTTP {http_status}: {_snippet(text, 60)}", http_status=http_status,
                                             action=name) from None
            raise MirPanelResponseError(f"not JSON ({_json_problem(exc)}): {_snippet(text)}",
                                        http_status=http_status, action=name) from None
    if html:
        raise MirPanelTransientError(
            f"HTTP {http_status} HTML page instead of JSON: {_snippet(text, 60)}",
            http_status=http_status,
            action=name,
        )
    error = _error_text(payload["error"]) if isinstance(payload, dict) and "error" in payload else None
    if error is not None:
        if http_status >= 500 and _SERVER_TROUBLE.search(error):
            # a gateway's or a crashed app's own text, not the panel's answer: the request may have been processed
            raise MirPanelTransientError(f"HTTP {http_status}: {_snippet(error, 60)}", http_status=http_status,
                                         action=name)
        raise classify_error(error, http_status, name)
    if http_status >= 500:
        raise MirPanelTransientError(f"HTTP {http_status}", http_status=http_status, action=name)
    if http_status >= 400:
        raise MirPanelAPIError(f"HTTP {http_status}: {_snippet(text)}", http_status, name)
    return payload


# ---------------------------------------------------------------------------------------------
# Replies to records
# ---------------------------------------------------------------------------------------------

MISSING_FROM_REPLY = "ID missing from the panel's reply"

SERVICE_FIELDS = ("service", "name", "type", "category", "rate", "min", "max", "refill", "cancel", "dripfeed")
ORDER_STATUS_FIELDS = ("order", "status", "charge", "start_count", "remains", "currency", "error")
REFILL_FIELDS = ("order", "refill", "error")
REFILL_STATUS_FIELDS = ("refill", "status", "error")
CANCEL_FIELDS = ("order", "cancel", "error")
BALANCE_FIELDS = ("balance", "currency")


def _expect(payload: Any, kind: type | tuple[type, ...], action: Action, what: str) -> Any:
    if not isinstance(payload, kind):
        raise MirPanelResponseError(f"expected {what}, got {type(payload).__name__}", action=action.value)
    return payload


def _nested_error(value: Any) -> str | None:
    """The text of a ``{"error": ...}`` value (nested per-ID errors), or None."""
    if isinstance(value, dict) and "error" in value:
        return _error_text(value["error"])
    return None


def parse_services(payload: Any) -> list[dict[str, Any]]:
    """Service records from a ``services`` reply (a list, or an object keyed by service ID)."""
    if isinstance(payload, dict):
        payload = list(payload.values())
    _expect(payload, list, Action.SERVICES, "a list of services")
    records = []
    for index, raw in enumerate(payload):
        if not isinstance(raw, dict):
            raise MirPanelResponseError(f"service #{index} is {type(raw).__name__}, not an object",
                                        action="services")
        service_id = to_int(raw.get("service"))
        if service_id is None:
            raise MirPanelResponseError(f"service #{index} has no numeric 'service' ID", action="services")
        record = dict(raw)
        record.update(
            service=service_id,
            name=to_text(raw.get("name")),
            type=to_text(raw.get("type")),
            category=to_text(raw.get("category")),
            rate=to_float(raw.get("rate")),
            min=to_int(raw.get("min")),
            max=to_int(raw.get("max")),
            refill=to_bool(raw.get("refill")),
            cancel=to_bool(raw.get("cancel")),
            dripfeed=to_bool(raw.get("dripfeed")),
        )
        records.append(record)
    return records


def parse_add(payload: Any, form: Mapping[str, str]) -> dict[str, Any]:
    """The placed-order record: the order ID, the service and the parameters sent."""
    _expect(payload, dict, Action.ADD, "an object with 'order'")
    order_id = to_int(payload.get("order"))
    if order_id is None or order_id <= 0:
        raise MirPanelResponseError(f"no order ID in {_snippet(json.dumps(payload))}", action="add")
    record: dict[str, Any] = {"order": order_id, "service": int(form["service"])}
    for name, value in form.items():
        if name != "service":
            record[name] = int(value) if name in INT_PARAMS else value
    return record


def order_status_record(order_id: int, raw: Any) -> dict[str, Any]:
    """One order-status record from the panel's object for that order (or its error)."""
    if type(raw) is dict and "error" not in raw:
        # The common shape in one pass: no error, a usable status, numbers as plain number texts.
        # Anything else ("Unknown", "1,5", numbers as JSON numbers) takes the general path below,
        # which reads every shape and gives these same values for this one.
        status = raw.get("status")
        canonical = (_STATUS_MEMO.get(status) or _usable_status(status)) if type(status) is str else None
        charge, start_count, remains = raw.get("charge"), raw.get("start_count"), raw.get("remains")
        if canonical is not None and type(charge) is str and type(start_count) is str and type(remains) is str:
            try:
                number = float(charge)
                record = {"order": order_id, "status": canonical, "charge": number if _isfinite(number) else None,
                          "start_count": int(start_count), "remains": int(remains),
                          "currency": to_text(raw.get("currency")), "error": None}
            except ValueError:
                pass
            else:
                return record
    return _order_status_any(order_id, raw)


def _order_status_any(order_id: int, raw: Any) -> dict[str, Any]:
    """:func:`order_status_record` for every shape: per-ID errors, missing or unusable statuses."""
    error = _nested_error(raw) if isinstance(raw, dict) else (MISSING_FROM_REPLY if raw is None else
                                                              f"unexpected value {_snippet(repr(raw))}")
    if error is not None or not isinstance(raw, dict):
        return {"order": order_id, "status": None, "charge": None, "start_count": None, "remains": None,
                "currency": None, "error": error}
    status = raw.get("status")
    nested = _nested_error(status) or _status_problem(status)
    return {
        "order": order_id,
        "status": None if nested else canonical_status(status),
        "charge": to_float(raw.get("charge")),
        "start_count": to_int(raw.get("start_count")),
        "remains": to_int(raw.get("remains")),
        "currency": to_text(raw.get("currency")),
        "error": nested,
    }


# The canonical spelling of each status text seen so far: a panel uses a handful, so the common path
# is one dict lookup instead of strip + lower + lookup. Bounded: odd panel texts cannot grow it forever.
_STATUS_MEMO: dict[str, str] = {}
_STATUS_MEMO_SIZE = 512


def _usable_status(text: str) -> str | None:
    """The canonical spelling of a non-blank status text (remembered); None for a blank one."""
    if not text.strip():
        return None
    canonical = _CANONICAL_STATUS.get(text.strip().lower(), text)
    if len(_STATUS_MEMO) < _STATUS_MEMO_SIZE:
        _STATUS_MEMO[text] = canonical
    return canonical


def _status_problem(value: Any) -> str | None:
    """Why a status value cannot be used (absent, empty, not text), or None when it can."""
    if isinstance(value, str) and value.strip():
        return None
    if value is None or value == "":
        return "no status in the panel's reply"
    return f"unexpected status {_snippet(repr(value))}"


def _reply_id(value: Any) -> int | None:
    """An ID as a reply spells it (``5``, ``"5"``, ``5.0``); None for anything else (``"5.5"``, ``true``)."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if isinstance(value, str) and (_plain_digits(value) or _DIGITS.fullmatch(value.strip())):
        return int(value)
    return None


def _plain_digits(text: str) -> bool:
    """Whether ``text`` is 1..19 ASCII digits and nothing else: the common spelling, checked without a regex."""
    return text.isdigit() and text.isascii() and len(text) <= 19


def _by_id(payload: Any, id_key: str, action: Action) -> dict[int, Any]:
    """Index a multi reply by ID, whichever shape it comes in (object keyed by ID, or list of objects)."""
    if isinstance(payload, dict):
        indexed = {}
        for key, value in payload.items():
            number = _reply_id(key)
            if number is not None:
                indexed[number] = value
        return indexed
    if isinstance(payload, list):
        indexed = {}
        for entry in payload:
            if isinstance(entry, dict):
                number = _reply_id(entry.get(id_key))
                if number is not None:
                    indexed[number] = entry
        return indexed
    raise MirPanelResponseError(f"expected an object or a list, got {type(payload).__name__}", action=action.value)


_INTS_ONLY = {int}
_MAX_REPLY_ID = 10**19  # _reply_id reads IDs of at most 19 digits


def _entries(payload: Any, ids: list[int], id_key: str, action: Action) -> list[Any]:
    """The reply's entry for each requested ID, in request order (None for an ID the reply lacks).

    The usual reply, an object keyed by exactly the requested IDs in request order, is matched with
    one list comparison; any other shape (a list, other keys, another order) is indexed by
    :func:`_by_id`. Both give the same entries.
    """
    if type(payload) is dict and len(payload) == len(ids) and set(map(type, ids)) == _INTS_ONLY:
        keys = list(map(str, ids))
        if list(payload) == keys and min(ids) >= 0 and max(ids) < _MAX_REPLY_ID:
            return list(payload.values())
    indexed = _by_id(payload, id_key, action)
    return [indexed.get(item) for item in ids]


def parse_order_status(payload: Any, order_id: int) -> dict[str, Any]:
    """The record of a single-order ``status`` reply."""
    _expect(payload, dict, Action.STATUS, "an order status object")
    if "status" not in payload:
        raise MirPanelResponseError("no 'status' in the reply", action="status")
    return order_status_record(order_id, payload)


def parse_orders_status(payload: Any, ids: list[int]) -> list[dict[str, Any]]:
    """One status record per requested ID, in request order, per-ID errors as data."""
    if isinstance(payload, dict) and len(ids) == 1 and "status" in payload and str(ids[0]) not in payload:
        return [order_status_record(ids[0], payload)]  # a panel answering one ID in the single shape
    entries = _entries(payload, ids, "order", Action.STATUS)
    return [order_status_record(order_id, raw) for order_id, raw in zip(ids, entries, strict=True)]


def _id_result(raw: Any, value_key: str) -> tuple[Any, str | None]:
    """(value, error) of one entry of a refill/cancel reply, in any of the shapes panels use."""
    if raw is None:
        return None, MISSING_FROM_REPLY
    if isinstance(raw, dict):
        error = _nested_error(raw)
        if error is not None:
            return None, error
        value = raw.get(value_key)
        error = _nested_error(value)
        if error is not None:
            return None, error
        return value, None if value is not None else f"no {value_key!r} in the reply"
    return raw, None


def refill_record(order_id: int, raw: Any) -> dict[str, Any]:
    """One refill record; a refill ID that is not a number becomes an error."""
    value, error = _id_result(raw, "refill")
    refill_id = _reply_id(value) if error is None else None
    if refill_id is not None and refill_id <= 0:
        refill_id = None  # "refill": 0 is a refusal, not refill number 0
    if error is None and refill_id is None:
        error = f"unexpected refill ID {_snippet(repr(value))}"
    return {"order": order_id, "refill": refill_id, "error": error}


def parse_refill(payload: Any, order_id: int) -> dict[str, Any]:
    """The record of a single-order ``refill`` reply."""
    _expect(payload, dict, Action.REFILL, "an object with 'refill'")
    record = refill_record(order_id, payload)
    if record["refill"] is None and "refill" not in payload:
        raise MirPanelResponseError("no 'refill' in the reply", action="refill")
    return record


def parse_refills(payload: Any, ids: list[int]) -> list[dict[str, Any]]:
    """One refill record per requested order, in request order."""
    entries = _entries(payload, ids, "order", Action.REFILL)
    return [refill_record(order_id, raw) for order_id, raw in zip(ids, entries, strict=True)]


def refill_status_record(refill_id: int, raw: Any) -> dict[str, Any]:
    """One refill-status record."""
    value, error = _id_result(raw, "status")
    error = error or _status_problem(value)
    return {"refill": refill_id, "status": canonical_status(value) if error is None else None, "error": error}


def parse_refill_status(payload: Any, refill_id: int) -> dict[str, Any]:
    """The record of a single ``refill_status`` reply."""
    _expect(payload, dict, Action.REFILL_STATUS, "an object with 'status'")
    if "status" not in payload:
        raise MirPanelResponseError("no 'status' in the reply", action="refill_status")
    return refill_status_record(refill_id, payload)


def parse_refills_status(payload: Any, ids: list[int]) -> list[dict[str, Any]]:
    """One refill-status record per requested refill, in request order."""
    entries = _entries(payload, ids, "refill", Action.REFILL_STATUS)
    return [refill_status_record(refill_id, raw) for refill_id, raw in zip(ids, entries, strict=True)]


def cancel_record(order_id: int, raw: Any) -> dict[str, Any]:
    """One cancel record: ``cancel`` is True when the panel accepted the cancellation."""
    value, error = _id_result(raw, "cancel")
    accepted = error is None and (to_bool(value) is True or (_reply_id(value) or 0) > 0)
    if error is None and not accepted:
        # 0, "0", false: refused; a bare text is the panel's reason
        readable = isinstance(value, str) and value.strip() and to_bool(value) is None
        error = value.strip() if readable else "cancel refused"
    return {"order": order_id, "cancel": accepted, "error": error}


def parse_cancels(payload: Any, ids: list[int]) -> list[dict[str, Any]]:
    """One cancel record per requested order, in request order."""
    entries = _entries(payload, ids, "order", Action.CANCEL)
    return [cancel_record(order_id, raw) for order_id, raw in zip(ids, entries, strict=True)]


def parse_balance(payload: Any) -> dict[str, Any]:
    """The balance record."""
    _expect(payload, dict, Action.BALANCE, "an object with 'balance'")
    balance = to_float(payload.get("balance"))
    if balance is None:
        raise MirPanelResponseError(f"no numeric 'balance' in {_snippet(json.dumps(payload))}", action="balance")
    return {"balance": balance, "currency": to_text(payload.get("currency"))}


# Per-ID parser of each multi action.
MULTI_PARSERS: dict[Action, Callable[[Any, list[int]], list[dict[str, Any]]]] = {
    Action.STATUS: parse_orders_status,
    Action.REFILL: parse_refills,
    Action.REFILL_STATUS: parse_refills_status,
    Action.CANCEL: parse_cancels,
}

# ---------------------------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: ``retries`` more attempts, exponential backoff with jitter."""

    retries: int = 5
    backoff: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 300.0

    def wait(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to sleep after failed attempt number ``attempt`` (1-based).

        Exponential backoff with jitter, never shorter than the panel's ``Retry-After``.
        """
        ceiling = min(self.backoff_max, self.backoff * 2 ** (attempt - 1))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        return delay


def may_retry(action: Action, error: BaseException) -> bool:
    """Whether a failed call may be sent again.

    Only transient failures are retried. Read-only actions always may be; ``add``, ``refill`` and
    ``cancel`` only when the panel certainly did not process the request (never connected, or
    turned away with 429) — there is no idempotency key, so a resent ``add`` is a second paid order.
    """
    if not isinstance(error, MirPanelTransientError):
        return False
    return action in READ_ONLY_ACTIONS or not error.request_sent


def outcome_unknown(action: Action, error: BaseException) -> bool:
    """Whether an ``add`` that failed with ``error`` may nonetheless have placed the order.

    The order is known not to exist only when the panel refused it (a panel error) or the
    request certainly never reached it; any other failure after sending leaves it unknown.
    """
    if action is not Action.ADD or isinstance(error, (MirPanelAPIError, MirPanelInputError)):
        return False
    return not (isinstance(error, MirPanelTransientError) and not error.request_sent)


class WarningLogger(Protocol):
    """Anything with a ``warning`` method: a stdlib or an Airflow task logger."""

    def warning(self, event: Any, *args: Any, **kw: Any) -> Any: ...


def retry_arguments(action: Action, policy: RetryPolicy, logger: WarningLogger) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` / ``AsyncRetrying`` that apply the rules above.

    The sync hook and the async triggers both retry through this, so they retry the same failures
    with the same backoff.
    """

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return policy.wait(state.attempt_number, error)

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        sleep = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "MirPanel %s failed (%s); retry %d of %d in %.1f s",
            action.value, error, state.attempt_number, policy.retries, sleep,
        )

    return {
        "stop": stop_after_attempt(policy.retries + 1),
        "wait": wait,
        "retry": retry_if_exception(lambda error: may_retry(action, error)),
        "before_sleep": before_sleep,
        "reraise": True,
    }
