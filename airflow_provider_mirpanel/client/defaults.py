"""Defaults of a ``mirpanel`` connection.

Free of Airflow imports: Airflow reads the provider metadata (which shows these defaults in the
connection form) while it is still importing itself.
"""

from collections.abc import Mapping
from types import MappingProxyType

DEFAULT_API_URL = "https://mirpanel.com/api/v2"  # the endpoint of a connection with an empty host
DEFAULT_TIMEOUT = 30.0  # seconds to wait for a reply
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds to wait for the TCP/TLS connection
DEFAULT_RETRIES = 5  # further attempts of a read that failed transiently
DEFAULT_BACKOFF = 0.5  # seconds before the first retry; doubles each time, with jitter
DEFAULT_CONCURRENCY = 8  # requests in flight for multi-ID calls
DEFAULT_RATE_LIMIT = 0.0  # requests per minute for all actions together; 0 = no overall cap

#: The request budgets per API key and action: action → (requests, per seconds). The first four are
#: the limits MirPanel publishes; the others are not published: ``refill_status`` is a multi-ID read
#: like ``status``; ``refill`` and ``cancel`` change orders, so they get ``add``'s pace (60 requests
#: of 100 IDs still cover 6,000 orders a minute). The ``rate_limits`` connection extra overrides
#: them, or turns them off with ``false``.
DEFAULT_RATE_LIMITS: Mapping[str, tuple[int, float]] = MappingProxyType(
    {
        "add": (60, 60.0),
        "status": (120, 60.0),
        "balance": (30, 60.0),
        "services": (10, 3600.0),
        "refill_status": (120, 60.0),
        "refill": (60, 60.0),
        "cancel": (60, 60.0),
    }
)
#: The ``rate_limits`` value that turns the per-action budgets off (the texts ``"false"`` and ``"off"``
#: do too). Not ``"off"`` itself: Airflow's task SDK warns once per process about a connection extra
#: whose text is shorter than 5 characters (its secrets masker skips it).
RATE_LIMITS_OFF = False


def budget_text(limit: int, per: float) -> str:
    """Return a budget as messages and the connection form say it: ``60/min``, ``10/hour``, ``5 per 90 s``."""
    unit = {60.0: "min", 3600.0: "hour"}.get(per)
    return f"{limit}/{unit}" if unit else f"{limit} per {per:g} s"
