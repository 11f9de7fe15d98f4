"""The sizes of a benchmark run: the full one (``make bench``) and the quick smoke run (``make test``)."""

from __future__ import annotations

from dataclasses import dataclass

from airflow_provider_mirpanel.client.settings import ClientSettings

#: Seconds one call of ``context["task_state_store"]`` takes in a real deployment (a request from the
#: task process through its supervisor to the api-server): measured by ``python -m benchmarks
#: --deployment`` (the ledger run times 20 sets and 20 gets; median), see docs/performance.md.
STORE_TRIP = 0.007  # measured: set 7.6–7.7 ms, get 6.7–7.6 ms (median of 20 each)


@dataclass(frozen=True)
class Config:
    """What one run measures, and how big.

    ``timed`` is False for the quick run: it checks request counts and results, never speed, so
    timing noise on a busy machine cannot fail ``make test``.
    """

    name: str
    latency: float  # seconds the sandbox adds to every reply
    counts_n: int  # IDs for the status / refill / refill_status / cancel request counts
    wait_n: int  # IDs the sensor and the trigger wait for
    overlap_n: int  # IDs of the concurrency sweep
    concurrencies: tuple[int, ...]
    repeats: int  # runs per timed case; the median is reported
    parse_n: int  # orders whose replies are parsed
    memory_n: int  # orders of the tracemalloc'd status sync
    alternatives_n: tuple[int, ...]
    single_loop_max: int  # the one-request-per-order loop runs up to this N; above it is extrapolated
    placement_n: int
    deferral_n: int  # orders a deferrable sensor waits for (trigger arguments, events, log lines)
    store_trip: float  # seconds one state-store call takes (the ledger-cost case's model)
    budget_n: int  # adds placed under the default request budget (on budget time: no wait is slept)
    timed: bool = True

    @property
    def default_concurrency(self) -> int:
        """The hook's concurrency when the connection does not set one."""
        return ClientSettings().concurrency


FULL = Config(
    name="full",
    latency=0.05,
    counts_n=2_550,
    wait_n=1_000,
    overlap_n=10_000,
    concurrencies=(1, 2, 4, 8, 16),
    repeats=5,
    parse_n=100_000,
    memory_n=100_000,
    alternatives_n=(1_000, 10_000),
    single_loop_max=1_000,
    placement_n=1_000,
    deferral_n=100_000,
    store_trip=STORE_TRIP,
    budget_n=1_000,
)

QUICK = Config(
    name="quick",
    latency=0.002,
    counts_n=250,
    wait_n=250,
    overlap_n=1_000,
    concurrencies=(1, 8),
    repeats=1,
    parse_n=2_000,
    memory_n=2_000,
    alternatives_n=(100, 300),
    single_loop_max=100,
    placement_n=40,
    deferral_n=3_000,
    store_trip=0.001,
    budget_n=150,
    timed=False,
)
