"""Client settings read from a ``mirpanel`` Airflow connection, and the transport security rules.

The connection's host is the API URL (empty means MirPanel's), its password the API key, and its
extra the client settings declared as ``conn-fields`` in the provider metadata.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_mirpanel import defaults
from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.protocol import RetryPolicy, to_bool, to_float

log = logging.getLogger(__name__)

#: Connection-extra keys this provider reads; none of them is ever sent to the panel.
EXTRA_KEYS = frozenset(
    {"timeout", "connect_timeout", "retries", "backoff", "concurrency", "rate_limit", "allow_insecure",
     "verify_ssl", "verify", "order_url"}
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
    """The API URL of a connection: empty host means MirPanel's; a bare host gets ``https://``."""
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


def _number(extra: Mapping[str, Any], name: str, default: float, minimum: float) -> float:
    raw = _extra(extra, name)
    if raw is None:
        return default
    number = to_float(raw)
    if number is None or number < minimum:
        raise MirPanelInputError(f"connection extra {name!r} must be a number >= {minimum}, got {raw!r}")
    return number


@dataclass(frozen=True)
class ClientSettings:
    """How the hook talks to a panel: where, how long to wait, how often to retry, how many at once."""

    url: str = defaults.DEFAULT_API_URL
    timeout: float = defaults.DEFAULT_TIMEOUT
    connect_timeout: float = defaults.DEFAULT_CONNECT_TIMEOUT
    retries: int = defaults.DEFAULT_RETRIES
    backoff: float = defaults.DEFAULT_BACKOFF
    concurrency: int = defaults.DEFAULT_CONCURRENCY
    rate_limit: float = defaults.DEFAULT_RATE_LIMIT
    verify: bool = True

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(retries=self.retries, backoff=self.backoff)

    @classmethod
    def from_connection(
        cls, host: str | None, schema: str | None, port: int | None, extra: Mapping[str, Any]
    ) -> ClientSettings:
        """Settings from a connection's fields; refuses insecure transport unless the extra opts in."""
        url = resolve_api_url(host, schema, port)
        verify = to_bool(_extra(extra, "verify_ssl") if _extra(extra, "verify") is None else _extra(extra, "verify"))
        settings = cls(
            url=url,
            timeout=_number(extra, "timeout", cls.timeout, 0.001),
            connect_timeout=_number(extra, "connect_timeout", cls.connect_timeout, 0.001),
            retries=int(_number(extra, "retries", cls.retries, 0)),
            backoff=_number(extra, "backoff", cls.backoff, 0),
            concurrency=int(_number(extra, "concurrency", cls.concurrency, 1)),
            rate_limit=_number(extra, "rate_limit", cls.rate_limit, 0),
            verify=verify is not False,
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
