"""Values as panels spell them, made into Python values: numbers, flags, texts and IDs.

Panels send the same field as a string, an int or a float (``"0.27819"``, ``0.27819``,
``"0,27819"``), ``"Unknown"`` for a missing count, and users give IDs as ints, numeric strings or
the text Jinja renders a list to. Every reading of such a value is here. Nothing here does I/O.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_mirpanel.exceptions import MirPanelInputError

# ASCII digits only: "²".isdigit() is True, yet int("²") raises ValueError.
DIGITS = re.compile(r"[0-9]{1,19}")
MAX_WHOLE = 2**63 - 1  # the largest ID or count a panel's database column holds


def to_int(value: Any) -> int | None:
    """Return an int from an int, a float or a numeric string; None for anything else (``"Unknown"``)."""
    kind = type(value)
    if kind is int:
        return int(value)
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


def to_float(value: Any) -> float | None:
    """Return a float from a number or a numeric string; None for anything else.

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
        return number if math.isfinite(number) else None
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        try:
            return float(value)
        except OverflowError:  # an int beyond 1.8e308
            return None
    return None


_TRUE = frozenset({"1", "true", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "no", "n", "off", ""})


def to_bool(value: Any) -> bool | None:
    """Return a bool from a JSON bool, 0/1 or the usual words; None when absent or unreadable."""
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
    """Return a string, or None for null/absent; other scalars are stringified."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def snippet(text: str, limit: int = 120) -> str:
    """``text`` on one line, cut to ``limit`` characters: how a value is quoted in a message."""
    text = " ".join(text[: limit * 4].split())  # never split a 10 MB body to show 120 characters
    return text if len(text) <= limit else text[:limit] + "…"


def reply_id(value: Any) -> int | None:
    """Return an ID as a reply spells it (``5``, ``"5"``, ``5.0``); None for anything else (``"5.5"``, ``true``)."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if isinstance(value, str) and DIGITS.fullmatch(value.strip()):
        return int(value)
    return None


def normalize_id(value: Any, what: str = "order") -> int:
    """Return a positive integer ID from an int or a numeric string; anything else is refused."""
    if isinstance(value, bool):
        raise MirPanelInputError(f"invalid {what} ID {value!r}: not a number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and DIGITS.fullmatch(value.strip()):
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
        ids = (
            _rendered_list(ids, what)
            if ids.strip()[:1] in ("[", "(")
            else [part for part in re.split(r"[\s,]+", ids) if part]
        )
    if isinstance(ids, (int, float, bytes, bytearray)) or not isinstance(ids, Iterable) or isinstance(ids, Mapping):
        raise MirPanelInputError(f"{what} IDs must be a list of IDs, got {type(ids).__name__} {snippet(repr(ids))}")
    seen: dict[int, None] = {}
    for value in ids:
        if type(value) is int and 0 < value <= MAX_WHOLE:  # the usual ID: what normalize_id would return
            seen[value] = None
            continue
        if isinstance(value, (list, tuple, set, frozenset, Mapping)):
            raise MirPanelInputError(f"{what} IDs must be a flat list of IDs, found {snippet(repr(value))} in it")
        seen[normalize_id(value, what)] = None
    return list(seen)


def _rendered_list(text: str, what: str) -> Any:
    """Return the value of a rendered list literal (``"[1, 2]"``, ``"('1', '2')"``); refused when it is none."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise MirPanelInputError(f"{what} IDs {snippet(text, 60)!r} are not a list of IDs") from None
