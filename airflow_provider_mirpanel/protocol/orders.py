"""Order types and the ``add`` form: which service type takes which parameters, and how they are checked.

:func:`build_add_form` turns user-given parameters into the form fields of an ``add`` (refusing
what the panel would misread); :func:`order_problems` checks an order against a catalogue service
before anything is spent. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.protocol.values import DIGITS, MAX_WHOLE, normalize_id, to_int, to_text


@dataclass(frozen=True)
class OrderType:
    """A service type and the ``add`` parameters it takes."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def params(self) -> frozenset[str]:
        """Every parameter the type takes."""
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
        OrderType("Subscriptions", ("username", "min", "max", "delay"), ("posts", "old_posts", "expiry")),
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
#: The value of an ``add`` parameter: a number or text, a list of lines for the multi-line ones,
#: None to leave it out (checked by :func:`build_add_form`).
OrderParameter: TypeAlias = int | float | str | Sequence[str] | None
INT_PARAMS = frozenset(
    {
        "quantity",
        "runs",
        "interval",
        "answer_number",
        "min",
        "max",
        "posts",
        "old_posts",
        "delay",
        "device",
        "type_of_traffic",
    }
)
SUBSCRIPTION_DELAYS = frozenset(
    {0, 5, 10, 15, 20, 30, 40, 50, 60, 90, 120, 150, 180, 210, 240, 270, 300, 360, 420, 480, 540, 600}
)
# C0/C1 controls and the Unicode line/paragraph separators: any of them can split a form value.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_EXPIRY = re.compile(r"^\d{2}/\d{2}/\d{4}$")


def order_type(type_name: Any) -> OrderType | None:
    """Return the order type for a catalogue ``type`` value (case-insensitive), or None when unknown."""
    return ORDER_TYPES.get((to_text(type_name) or "Default").strip().lower())


def _param_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise MirPanelInputError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and DIGITS.fullmatch(value.strip()):
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
    r"""Return the form fields of an ``add`` (without key and action), checked before anything is sent.

    Unknown parameter names, wrong types, control characters in single-line fields and empty values
    raise :class:`MirPanelInputError`. ``None`` values are dropped. Lists in multi-line fields
    (comments, usernames, hashtags, groups, keywords) are joined with ``\n``.
    """
    form = {"service": str(normalize_id(service, "service"))}
    unknown = sorted(set(params) - ORDER_PARAMS, key=repr)  # names from a parsed table may not all be text
    if unknown:
        raise MirPanelInputError(f"unknown order parameter(s) {unknown}; known: {', '.join(sorted(ORDER_PARAMS))}")
    for name, value in params.items():
        if value is None:
            continue
        form[name] = str(_param_int(name, value)) if name in INT_PARAMS else _param_text(name, value)
    return form


def order_problems(service: Mapping[str, Any], form: Mapping[str, str]) -> list[str]:
    """Return what is wrong with an order (as built by :func:`build_add_form`) for a catalogue service.

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
    """Return what an order costs: the rate is the price per 1000 units; a package is charged its rate."""
    if rate is None:
        return 0.0
    return rate * quantity / 1000 if quantity is not None else rate
