"""Client settings read from a ``mirpanel`` Airflow connection, and the transport security rules.

The connection's host is the API URL (empty means MirPanel's), its password the API key, and its
extra the client settings declared as ``conn-fields`` in the provider metadata.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_mirpanel.client import defaults
from airflow_provider_mirpanel.client.ratelimit import DEFAULT_BUDGETS, MAX_LIMIT, Budget
from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.protocol import Action, RetryPolicy, to_bool, to_float

log = logging.getLogger(__name__)

#: Connection-extra keys this provider reads; none of them is ever sent to the panel.
EXTRA_KEYS = frozenset(
    {
        "timeout",
        "connect_timeout",
        "retries",
        "backoff",
        "concurrency",
        "rate_limit",
        "rate_limits",
        "allow_insecure",
        "verify_ssl",
        "verify",
        "order_url",
        "budget_redis",
    }
)


def is_loopback(hostname: str | None) -> bool:
    """Whether a host name is this machine (``localhost`` or a loopback address)."""
    if not hostname:
        return False
    if hostname.lower() in ("localhost", "localhost.localdomain") or hostname.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_api_url(host: str | None, schema: str | None = None, port: int | None = None) -> str:
    """Return the API URL of a connection: empty host means MirPanel's; a bare host gets ``https://``."""
    host = (host or "").strip()
    if not host:
        return defaults.DEFAULT_API_URL
    url = host if "://" in host else f"{schema or 'https'}://{host}"
    if port:
        parts = urlsplit(url)
        if parts.port is None:
            url = parts._replace(netloc=f"{parts.netloc}:{port}").geturl()
    return url


def _extra(extra: Mapping[str, Any], name: str) -> Any:
    value = extra.get(name)
    if value is None or value == "":
        value = extra.get(f"extra__mirpanel__{name}")
    return None if value == "" else value


def _number_extra(extra: Mapping[str, Any], name: str, default: float, minimum: float) -> float:
    """Return the connection extra ``name`` as a number of at least ``minimum``; ``default`` when unset."""
    raw = _extra(extra, name)
    if raw is None:
        return default
    number = to_float(raw)
    if number is None or number < minimum:
        raise MirPanelInputError(f"connection extra {name!r} must be a number >= {minimum}, got {raw!r}")
    return number


def _is_off(value: Any) -> bool:
    """Tell whether ``value`` is ``false``, or the text ``"false"`` (as the connection form stores it) or ``"off"``."""
    return value is False or (isinstance(value, str) and value.strip().lower() in ("false", "off"))


def _budget(action: str, value: Any) -> Budget | None:
    """Read one action's budget from ``rate_limits``.

    Requests a minute, ``{"limit": n, "per": seconds}``, or 0 / ``false`` for none.
    """
    if _is_off(value):
        return None
    if isinstance(value, Mapping):
        limit, per = to_float(value.get("limit")), to_float(value.get("per"))
        if (
            set(value) == {"limit", "per"}
            and limit is not None
            and limit == int(limit)
            and per is not None
            and 1 <= limit <= MAX_LIMIT
            and per > 0
        ):
            return Budget(int(limit), per)
    elif not isinstance(value, bool) and (per_minute := to_float(value)) is not None and 0 <= per_minute <= MAX_LIMIT:
        return Budget.per_minute(per_minute) if per_minute else None
    raise MirPanelInputError(
        f"connection extra 'rate_limits', action {action!r}: give requests per minute (a number from 0 "
        f'to {MAX_LIMIT:,}), {{"limit": <whole number >= 1>, "per": <seconds>}}, or false; got {value!r}'
    )


def _budget_redis(value: Any) -> str | None:
    """Read the ``budget_redis`` extra: a ``redis://`` / ``rediss://`` URL or a connection ID (None: absent)."""
    if value is None or _is_off(value):
        return None
    text = value.strip() if isinstance(value, str) else ""
    if (
        not text
        or ("://" in text and urlsplit(text).scheme not in ("redis", "rediss", "unix"))
        or any(character.isspace() for character in text)
    ):
        raise MirPanelInputError(
            "connection extra 'budget_redis' must be a Redis URL (redis://host:6379/0) or "
            "the ID of an Airflow connection of type redis"
        )
    return text


def parse_rate_limits(raw: Any) -> dict[str, Budget]:
    """Return the per-action budgets from the ``rate_limits`` extra (already read; None: absent).

    Absent: the published limits (:data:`~airflow_provider_mirpanel.client.ratelimit.DEFAULT_BUDGETS`).
    ``false`` (or ``"off"``): none. An object (or its JSON text, as the connection form stores it)
    overrides the actions it names and keeps the defaults of the others; per action a number of
    requests per minute, ``{"limit": n, "per": seconds}``, or 0 / ``false`` for no budget.

    :raises MirPanelInputError: not one of these, or an unknown action.
    """
    budgets = dict(DEFAULT_BUDGETS)
    if raw is None:
        return budgets
    if _is_off(raw):
        return {}
    given = raw
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    if not isinstance(raw, Mapping):
        raise MirPanelInputError(
            "connection extra 'rate_limits' must be false, or an object of action: requests per minute "
            f'(e.g. {{"add": 30, "services": {{"limit": 10, "per": 3600}}}}); got {given!r:.120}'
        )
    known = [action.value for action in Action]
    for action, value in raw.items():
        if action not in known:
            raise MirPanelInputError(
                f"connection extra 'rate_limits' names no action {action!r}; the actions are {', '.join(known)}"
            )
        budget = _budget(action, value)
        if budget is None:
            budgets.pop(action, None)
        else:
            budgets[action] = budget
    return budgets


@dataclass(frozen=True)
class ClientSettings:
    """How the hook talks to a panel.

    Where, how long to wait, how often to retry, how many at once, and how many requests of each
    action it may start per minute (``rate_limits``, per action; ``rate_limit``, all actions together).
    """

    url: str = defaults.DEFAULT_API_URL
    timeout: float = defaults.DEFAULT_TIMEOUT
    connect_timeout: float = defaults.DEFAULT_CONNECT_TIMEOUT
    retries: int = defaults.DEFAULT_RETRIES
    backoff: float = defaults.DEFAULT_BACKOFF
    concurrency: int = defaults.DEFAULT_CONCURRENCY
    rate_limit: float = defaults.DEFAULT_RATE_LIMIT
    rate_limits: Mapping[str, Budget] = field(default_factory=lambda: dict(DEFAULT_BUDGETS))
    verify: bool = True
    budget_redis: str | None = None

    @property
    def retry_policy(self) -> RetryPolicy:
        """The backoff and number of retries of reads."""
        return RetryPolicy(retries=self.retries, backoff=self.backoff)

    @classmethod
    def from_connection(
        cls, host: str | None, schema: str | None, port: int | None, extra: Mapping[str, Any]
    ) -> ClientSettings:
        """Return settings from a connection's fields; refuses insecure transport unless the extra opts in."""
        url = resolve_api_url(host, schema, port)
        verify = to_bool(_extra(extra, "verify_ssl") if _extra(extra, "verify") is None else _extra(extra, "verify"))
        settings = cls(
            url=url,
            timeout=_number_extra(extra, "timeout", cls.timeout, 0.001),
            connect_timeout=_number_extra(extra, "connect_timeout", cls.connect_timeout, 0.001),
            retries=int(_number_extra(extra, "retries", cls.retries, 0)),
            backoff=_number_extra(extra, "backoff", cls.backoff, 0),
            concurrency=int(_number_extra(extra, "concurrency", cls.concurrency, 1)),
            rate_limit=_number_extra(extra, "rate_limit", cls.rate_limit, 0),
            rate_limits=parse_rate_limits(_extra(extra, "rate_limits")),
            verify=verify is not False,
            budget_redis=_budget_redis(_extra(extra, "budget_redis")),
        )
        settings.check_transport(allow_insecure=bool(to_bool(_extra(extra, "allow_insecure"))))
        return settings

    def check_transport(self, allow_insecure: bool) -> None:
        """Refuse plain HTTP to another machine and disabled TLS verification, unless allowed.

        The API key travels in every request body: over plain HTTP anyone on the path reads it.
        """
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MirPanelInputError(f"the API URL must be an http(s) URL with a host, got {self.url!r}")
        problems = []
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            problems.append(f"plain http:// to {parts.hostname} would send the API key unencrypted")
        if not self.verify:
            problems.append("TLS certificate verification is disabled")
        if problems and not allow_insecure:
            raise MirPanelInputError(
                "; ".join(problems) + ". Use https://, or set the connection extra "
                '"allow_insecure": true if you accept the risk.'
            )
        for problem in problems:
            log.warning("Insecure MirPanel connection allowed by allow_insecure: %s", problem)
