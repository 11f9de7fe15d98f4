"""Request budgets shared by every hook of one API key, in Redis: across tasks, processes and workers.

A panel counts requests per API key; a hook's own budget counts only its own. With the connection
extra ``budget_redis`` (a Redis URL, or the ID of an Airflow connection of type ``redis`` — e.g.
the Celery broker's Redis) every hook using the same panel URL and key — sync hooks on any worker,
async hooks in the triggerer — draws each request start from one sliding-window log per action in
Redis, so the connection's ``rate_limits`` hold for the key as a whole.

- **Keyed by the panel and the key, never by the connection**: the Redis key is
  ``mirpanel:budget:<panel host>:<digest>:<action>``, the digest a SHA-256 of the panel URL and the
  API key; two connections with the same key share a budget, and the key itself is in no Redis
  key, value, log line or message.
- **Atomic, on one clock**: a Lua script reads Redis' own ``TIME``, drops starts older than the
  window, and records the start only when the window has room (else it says how long until it
  has), so hosts' clocks never matter and two workers never both take the last slot.
- **Fails safe**: when Redis cannot be reached the hook says so (a warning, once per outage),
  keeps its own budget — never sending faster than it would without Redis — and tries Redis again
  after :data:`RETRY_AFTER` seconds.

Every hook of a key must use the same budgets (the same ``rate_limits``): each checks its own limit
against the shared log.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow_provider_mirpanel.client.ratelimit import Budget

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

#: Seconds a hook keeps to its own budget after Redis failed before it asks Redis again.
RETRY_AFTER = 30.0
#: Seconds to wait for Redis to connect and to answer (it answers in well under a millisecond).
REDIS_TIMEOUT = 1.0
KEY_PREFIX = "mirpanel:budget"

# KEYS[1]: the action's log (a sorted set of start times in microseconds of Redis' clock)
# ARGV: limit, window in microseconds, a unique member. Returns 0 (counted) or the microseconds to wait.
_ACQUIRE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) * 1000000 + tonumber(now[2])
local limit, per = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t - per)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], t, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(per / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + per - t)
"""

_clients: dict[str, Redis] = {}
_clients_lock = threading.Lock()


def budget_id(panel_url: str, api_key: str) -> str:
    """Name a key's budgets: the panel's host and a digest of its URL and the key (never the key)."""
    digest = hashlib.sha256(f"mirpanel budget\n{panel_url}\n{api_key}".encode()).hexdigest()[:32]
    return f"{urlsplit(panel_url).netloc.rpartition('@')[2] or 'panel'}:{digest}"


def redis_url(
    host: str | None, port: int | None, login: str | None, password: str | None, extra: dict[str, Any]
) -> str:
    """Return the URL of an Airflow ``redis`` connection (host, port, login, password; ``db``, ``ssl`` extras)."""
    if not host:
        raise ValueError("the Redis connection of 'budget_redis' has no host")
    scheme = "rediss" if str(extra.get("ssl", "")).lower() in ("true", "1") else "redis"
    auth = f"{quote(login or '', safe='')}:{quote(password, safe='')}@" if password else ""
    return f"{scheme}://{auth}{host}:{port or 6379}/{int(extra.get('db') or 0)}"


def url_of(location: str, connection: Any | None = None, extra: dict[str, Any] | None = None) -> str:
    """Return the Redis URL of a ``budget_redis`` value.

    The value itself when it is a URL, else the URL of ``connection`` (the Airflow connection it
    names, already fetched, and its parsed ``extra``).
    """
    if "://" in location:
        return location
    if connection is None:
        raise ValueError("a connection ID needs its connection")
    return redis_url(connection.host, connection.port, connection.login, connection.password, extra or {})


def password_of(url: str) -> str | None:
    """Return the password in a Redis URL, to mask in logs."""
    return urlsplit(url).password


def where(url: str) -> str:
    """Say a Redis URL as messages do: host, port and database, never the password."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


def _client(url: str) -> Redis:
    """One Redis client (connection pool) per URL and process, shared by its hooks."""
    with _clients_lock:
        if url not in _clients:
            try:
                from redis import Redis
            except ImportError as error:
                raise ImportError(
                    "the connection extra 'budget_redis' needs the redis package: "
                    "pip install 'airflow-provider-mirpanel[redis]'"
                ) from error
            _clients[url] = Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT)
        return _clients[url]


class RedisBudget:
    """The budgets of one API key on one panel, shared through Redis (a :class:`~.ratelimit.SharedBudget`).

    :param url: the Redis URL (``redis://[:password@]host:port/db``; ``rediss://`` for TLS).
    :param panel_url: the panel's API URL.
    :param api_key: the key (only its digest, with the URL, names the budgets).
    """

    def __init__(self, url: str, panel_url: str, api_key: str) -> None:
        from redis.exceptions import RedisError

        self._errors = (RedisError, OSError)
        self._redis = _client(url)
        self._script = self._redis.register_script(_ACQUIRE)
        self._where = where(url)
        self.prefix = f"{KEY_PREFIX}:{budget_id(panel_url, api_key)}"
        self._down_until: float | None = None  # on the limiter's clock; None: Redis answered last time

    def __repr__(self) -> str:
        return f"RedisBudget({self._where}, {self.prefix!r})"

    @property
    def available(self) -> bool:
        """Whether the last request to Redis was answered (False: the hook keeps to its own budget)."""
        return self._down_until is None

    def acquire(self, action: str, budget: Budget, now: float) -> float:
        """Count a start of ``action`` in the key's log and return 0, or return the seconds until one fits.

        While Redis is unreachable: 0 (the hook's own budget, checked before, still holds).
        """
        if self._down_until is not None and now < self._down_until:
            return 0.0
        try:
            wait = self._script(
                keys=[f"{self.prefix}:{action}"],
                args=[budget.limit, round(budget.per * 1_000_000), secrets.token_hex(8)],
            )
        except self._errors as error:
            if self._down_until is None:
                log.warning(
                    "The shared request budget in Redis (%s) is unreachable (%s: %s): this hook keeps "
                    "to its own budget, so hooks of the same API key together may exceed the panel's "
                    "limit; Redis is tried again every %g s",
                    self._where,
                    type(error).__name__,
                    error,
                    RETRY_AFTER,
                )
            self._down_until = now + RETRY_AFTER
            return 0.0
        if self._down_until is not None:
            log.warning("The shared request budget in Redis (%s) is reachable again", self._where)
            self._down_until = None
        return float(wait) / 1_000_000
