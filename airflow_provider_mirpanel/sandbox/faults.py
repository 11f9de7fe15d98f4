"""Fault injection: make the sandbox panel fail the way real panels and the proxies before them do.

Add a rule with :meth:`Faults.add`; the first rule that matches a request is applied to it::

    panel.faults.add("status", "http_status", status=503, times=2)
    panel.faults.add("status", "rate_limit", retry_after=1)
    panel.faults.add("add", "drop_after_processing", when=lambda form: form["link"].endswith("/7"))
    panel.faults.add(None, "latency", seconds=0.5, times=None)   # every action, every time

A rule matches an action (None: any), optionally only when ``when(form)`` is true (the form
without the key; a predicate that raises counts as no match), lets the first ``skip`` matches
through and then applies ``times`` times (None: forever). Kinds and their options:

=========================  =================================================  =====================================
kind                       what the client sees                               options
=========================  =================================================  =====================================
latency                    the normal reply, ``seconds`` later                seconds
delay_after_processing     request processed, reply sent ``seconds`` later    seconds
                           (makes client read timeouts after the fact)
drop                       connection closed, request NOT processed           —
drop_after_processing      request processed (an ``add`` creates the order),  —
                           then connection closed without a reply
http_status                ``status`` (default 503) with ``{"error": ...}``   status, error, body, content_type,
                           or the raw ``body``                                process, headers
rate_limit                 429 ``{"error": "Too many requests"}``, with       retry_after, error, headers
                           ``Retry-After`` when given; NOT processed
html                       an HTML page (Cloudflare-like by default) with     status, body, process
                           ``status`` (default 503; 200 works too)
body                       the raw ``body`` (default empty) with ``status``   body, status, content_type, process
                           (default 200): whitespace, truncated JSON, bytes
error                      the panel error ``{"error": error}`` with          error (required), status
                           ``status`` (default 200); NOT processed
=========================  =================================================  =====================================

``process=True`` makes http_status, html and body process the request before replacing its reply
(an order placed behind a failing gateway).
"""

from __future__ import annotations

import html
import http
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from airflow_provider_mirpanel.sandbox.actions import Reply

FormPredicate = Callable[[Mapping[str, str]], bool]


class FaultKind(str, Enum):
    """What a fault does to a request (see the module docs)."""

    LATENCY = "latency"
    DELAY_AFTER_PROCESSING = "delay_after_processing"
    DROP = "drop"
    DROP_AFTER_PROCESSING = "drop_after_processing"
    HTTP_STATUS = "http_status"
    RATE_LIMIT = "rate_limit"
    HTML = "html"
    BODY = "body"
    ERROR = "error"


_OPTIONS: dict[FaultKind, frozenset[str]] = {
    FaultKind.LATENCY: frozenset({"seconds"}),
    FaultKind.DELAY_AFTER_PROCESSING: frozenset({"seconds"}),
    FaultKind.DROP: frozenset(),
    FaultKind.DROP_AFTER_PROCESSING: frozenset(),
    FaultKind.HTTP_STATUS: frozenset({"status", "error", "body", "content_type", "process", "headers"}),
    FaultKind.RATE_LIMIT: frozenset({"retry_after", "error", "headers"}),
    FaultKind.HTML: frozenset({"status", "body", "process"}),
    FaultKind.BODY: frozenset({"status", "body", "content_type", "process"}),
    FaultKind.ERROR: frozenset({"error", "status"}),
}
_REQUIRED: dict[FaultKind, frozenset[str]] = {
    FaultKind.LATENCY: frozenset({"seconds"}),
    FaultKind.DELAY_AFTER_PROCESSING: frozenset({"seconds"}),
    FaultKind.ERROR: frozenset({"error"}),
}
_DEFAULT_STATUS = {FaultKind.HTTP_STATUS: 503, FaultKind.HTML: 503, FaultKind.RATE_LIMIT: 429}
_ALWAYS_PROCESSED = frozenset({FaultKind.LATENCY, FaultKind.DELAY_AFTER_PROCESSING, FaultKind.DROP_AFTER_PROCESSING})
_DROPS = frozenset({FaultKind.DROP, FaultKind.DROP_AFTER_PROCESSING})
_CLOUDFLARE_REASONS = {
    520: "Web server is returning an unknown error",
    521: "Web server is down",
    522: "Connection timed out",
    523: "Origin is unreachable",
    524: "A timeout occurred",
    525: "SSL handshake failed",
    526: "Invalid SSL certificate",
}
HTML_CONTENT_TYPE = "text/html; charset=UTF-8"


@dataclass(eq=False)
class Fault:
    """One fault rule; ``matched`` counts the requests it matched, ``applied`` those it hit."""

    kind: FaultKind
    action: str | None = None
    when: FormPredicate | None = None
    skip: int = 0
    times: int | None = 1
    status: int = 200
    seconds: float = 0.0
    retry_after: float | str | None = None
    error: str | None = None
    body: bytes | None = None
    content_type: str | None = None
    process: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    matched: int = 0
    applied: int = 0

    @property
    def exhausted(self) -> bool:
        """Whether the rule has been applied as often as it may be."""
        return self.times is not None and self.applied >= self.times

    @property
    def processes(self) -> bool:
        """Whether a request hit by this fault is processed by the panel."""
        return self.kind in _ALWAYS_PROCESSED or self.process

    @property
    def drops(self) -> bool:
        """Whether the connection is closed instead of replying."""
        return self.kind in _DROPS

    def matches(self, action: str, form: Mapping[str, str]) -> bool:
        """Whether the rule is for this request (ignoring ``skip`` and ``times``)."""
        if self.action is not None and self.action != action:
            return False
        if self.when is None:
            return True
        try:
            return bool(self.when(form))
        except Exception:
            return False

    def reply(self, processed: Reply | None) -> Reply | None:
        """Return what to send instead of ``processed`` (the panel's own reply, None when not processed)."""
        kind = self.kind
        if kind in (FaultKind.LATENCY, FaultKind.DELAY_AFTER_PROCESSING):
            return processed
        if kind in _DROPS:
            return None
        if kind is FaultKind.ERROR:
            return Reply.of({"error": self.error}, self.status)
        if kind is FaultKind.RATE_LIMIT:
            return self._rate_limited()
        if kind is FaultKind.HTML:
            page = self.body if self.body is not None else cloudflare_page(self.status)
            return Reply(page, self.status, HTML_CONTENT_TYPE)
        if kind is FaultKind.BODY:
            return Reply(self.body or b"", self.status, self.content_type or "application/json")
        if self.body is not None:  # http_status with a raw body
            return Reply(self.body, self.status, self.content_type or "text/plain", dict(self.headers))
        reply = Reply.of({"error": self.error or _reason(self.status)}, self.status)
        reply.headers.update(self.headers)
        return reply

    def _rate_limited(self) -> Reply:
        reply = Reply.of({"error": self.error or "Too many requests"}, 429)
        reply.headers["X-RateLimit-Remaining"] = "0"
        if self.retry_after is not None:
            value = self.retry_after
            reply.headers["Retry-After"] = (
                str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
            )
        reply.headers.update(self.headers)
        return reply


def _reason(status: int) -> str:
    if status in _CLOUDFLARE_REASONS:
        return _CLOUDFLARE_REASONS[status]
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def cloudflare_page(status: int, host: str = "panel.example") -> bytes:
    """Return a Cloudflare-like HTML page: an error page for 5xx, a "Just a moment..." challenge otherwise."""
    if status < 500:
        return (
            '<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>'
            '<meta http-equiv="refresh" content="390"></head><body><div class="main-wrapper">'
            f"<h1>{host}</h1><h2>Checking if the site connection is secure</h2>"
            "<noscript>Enable JavaScript and cookies to continue</noscript></div>"
            '<div class="footer">Performance &amp; security by Cloudflare</div></body></html>'
        ).encode()
    reason = html.escape(_reason(status))
    return (
        f'<!DOCTYPE html><html lang="en-US"><head><title>{host} | {status}: {reason}</title></head>'
        f'<body><div id="cf-wrapper"><h1><span class="cf-error-type">Error</span> '
        f'<span class="cf-error-code">{status}</span></h1><h2 class="cf-subheadline">{reason}</h2>'
        "<p>Cloudflare Ray ID: <strong>8c1f2e3d4b5a6978</strong> &bull; "
        "Performance &amp; security by Cloudflare</p></div></body></html>"
    ).encode()


class Faults:
    """The fault rules of a panel, tried in the order they were added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []

    def add(
        self,
        action: str | None,
        kind: FaultKind | str,
        *,
        when: FormPredicate | None = None,
        skip: int = 0,
        times: int | None = 1,
        **options: Any,
    ) -> Fault:
        """Add a rule for ``action`` (None: any action); see the module docs for kinds and options.

        Returns the rule, whose ``matched``/``applied`` counters tests can check.
        """
        fault_kind = FaultKind(kind)
        unknown = set(options) - _OPTIONS[fault_kind]
        if unknown:
            allowed = ", ".join(sorted(_OPTIONS[fault_kind])) or "none"
            raise TypeError(f"fault {fault_kind.value!r} takes no option(s) {sorted(unknown)}; it takes: {allowed}")
        missing = _REQUIRED.get(fault_kind, frozenset()) - set(options)
        if missing:
            raise TypeError(f"fault {fault_kind.value!r} needs option(s) {sorted(missing)}")
        if skip < 0 or (times is not None and times < 1):
            raise ValueError("skip must be >= 0 and times >= 1 (or None for always)")
        body = options.pop("body", None)
        fault = Fault(
            fault_kind,
            action,
            when,
            skip,
            times,
            status=options.pop("status", _DEFAULT_STATUS.get(fault_kind, 200)),
            body=body.encode() if isinstance(body, str) else body,
            **options,
        )
        with self._lock:
            self._rules.append(fault)
        return fault

    def match(self, action: str, form: Mapping[str, str]) -> Fault | None:
        """Return the rule to apply to a request, counting the match; None for no fault."""
        with self._lock:
            for fault in self._rules:
                if not fault.matches(action, form):
                    continue
                fault.matched += 1
                if fault.exhausted or fault.matched <= fault.skip:
                    continue
                fault.applied += 1
                return fault
        return None

    def remove(self, fault: Fault) -> None:
        """Remove one rule."""
        with self._lock:
            self._rules.remove(fault)

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    def __iter__(self) -> Iterator[Fault]:
        with self._lock:
            return iter(list(self._rules))

    def __len__(self) -> int:
        return len(self._rules)
