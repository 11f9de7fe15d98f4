"""The key-budget case: four placements of one API key, in four processes, against a panel that
enforces its limit per key — each hook's own budget vs the budget shared through Redis.

Four placements of ``n`` orders each (four ledger scopes), each in its own OS process standing in
for a worker's task, start at once; the connection's ``add`` budget is 600 a minute and the sandbox
(its own process) allows 600 ``add`` a minute per key. Three ways of keeping the budget run one after
another, on the same panel and settings:

- ``0.2``: each hook keeps its own budget and a 429 goes to the retry policy (what 0.2 did);
- ``own budgets``: each hook keeps its own budget and follows the panel's ``Retry-After`` and
  ``X-RateLimit-*`` headers (the default without ``budget_redis``);
- ``shared in Redis``: ``budget_redis`` names a Redis (Debian's ``redis-server``, started here on
  127.0.0.1 and stopped after): one budget for the key across the four processes.

Each row reports the time from the start to the last placement's end against the limit-bound ideal
(all orders / the limit: 1,000 / 600 a minute = 100 s), the share of ``add`` requests answered 429,
orders not placed, and orders placed twice (the panel's order list: links seen more than once).
About 1 to 2 minutes per way; not part of the quick run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR
from airflow_provider_mirpanel.sandbox.redis_server import LocalRedis
from benchmarks.deployed import e2e_module
from benchmarks.panel_process import ROOT, PanelProcess
from benchmarks.placement_worker import MARK
from benchmarks.table import Row

WORKERS = 4
ORDERS = 250
ADD_LIMIT = 600  # per minute: the connection's budget and the panel's limit per key
TARGET_RATIO = 1.25
TARGET_THROTTLED = 0.05
READY_SECONDS = 120.0  # a worker may take this long to import Airflow on a busy machine
PLACE_SECONDS = 900.0


def ensure_redis_server() -> str | None:
    """Why Redis cannot run here (None: it can); installs Debian's redis-server when missing and root."""
    if shutil.which("redis-server"):
        return None
    debian = e2e_module("debian")
    try:
        debian.install_redis(ROOT / ".venv" / "apt-get.log")
    except (debian.DebianPackageError, OSError) as error:
        return str(error)
    return None


@contextmanager
def _workers(
    count: int, arguments: Callable[[int], list[str]], env: dict[str, str]
) -> Iterator[list[subprocess.Popen[str]]]:
    logs = tempfile.TemporaryDirectory(prefix="mirpanel-bench-workers-")
    processes: list[subprocess.Popen[str]] = []
    try:
        for index in range(count):
            with open(Path(logs.name) / f"{index}.log", "w") as stderr:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "benchmarks.placement_worker", *arguments(index)],
                        cwd=ROOT,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=stderr,
                        text=True,
                        env=env,
                    )
                )
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        logs.cleanup()


def _line(process: subprocess.Popen[str]) -> dict[str, Any]:
    """The worker's next own line (others are Airflow's log lines)."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(MARK):
            answer: dict[str, Any] = json.loads(line[len(MARK) :])
            return answer
    raise RuntimeError(f"a placement worker ended (exit code {process.wait()})")


def _variant(panel: PanelProcess, name: str, extra: dict[str, Any], follow: bool, n: int) -> Row:
    service, quantity = panel.service()
    prefix = f"https://example.com/keybudget/{time.time_ns()}/"
    env = {
        **os.environ,
        CONN_ENV_VAR: json.dumps(panel.connection(rate_limits={"add": ADD_LIMIT}, **extra)),
        "PYTHONUNBUFFERED": "1",
    }

    def arguments(index: int) -> list[str]:
        return [
            "--scope",
            f"k{index + 1}",
            "--n",
            str(n),
            "--service",
            str(service),
            "--quantity",
            str(quantity),
            "--prefix",
            prefix,
            *([] if follow else ["--no-follow"]),
        ]

    with _workers(WORKERS, arguments, env) as workers:
        for worker in workers:
            if not _line(worker).get("ready"):
                raise RuntimeError("a placement worker did not get ready")
        panel.reset()  # the key's window starts empty for every way
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = [_line(worker) for worker in workers]
    stats = panel.stats()
    links = panel.links(prefix)
    total = WORKERS * n
    wall = max(result["end"] for result in results) - min(result["start"] for result in results)
    ideal = total / ADD_LIMIT * 60.0
    states: Counter[str] = Counter()
    for result in results:
        states.update(result["states"])
    refused, allowed = stats["refused"].get("add", 0), stats["allowed"].get("add", 0)
    sent = refused + allowed
    share = refused / sent if sent else 0.0
    duplicates = sum(count - 1 for count in Counter(links).values() if count > 1)
    failures = total - states.get("placed", 0)
    row = Row(
        f"key budget: {WORKERS}×{n} adds in {WORKERS} processes, one key, panel add {ADD_LIMIT}/min: {name}",
        total,
        requests=sent,
        wall=wall,
        ideal=ideal,
        ratio=wall / ideal,
        target=f"≤ {TARGET_RATIO}× ideal, ≤ {TARGET_THROTTLED:.0%} 429, 0 failures, 0 duplicates",
        note=f"429: {refused} of {sent} add requests ({share:.1%}); failures {failures}; duplicates "
        f"{duplicates}; placed {states.get('placed', 0)}, orders on the panel {len(links)}"
        + (f"; states {dict(states)}" if failures else ""),
    )
    row.met = wall / ideal <= TARGET_RATIO and share <= TARGET_THROTTLED and failures == 0
    row.check(duplicates == 0, f"{duplicates} orders placed twice")
    row.check(
        len(links) == states.get("placed", 0),
        f"{len(links)} orders on the panel, {states.get('placed', 0)} reported placed",
    )
    return row


def key_budget(latency: float, n: int = ORDERS) -> list[Row]:
    """The three ways side by side (see the module docs)."""
    problem = ensure_redis_server()
    with ExitStack() as stack:
        panel = stack.enter_context(PanelProcess(latency=latency, rate_limits={"add": (ADD_LIMIT, 60.0)}))
        rows = [
            _variant(panel, "own budgets, 429 to the retry policy (0.2)", {}, False, n),
            _variant(panel, "own budgets, following the panel", {}, True, n),
        ]
        if problem is not None:
            row = Row(f"key budget: {WORKERS}×{n} adds: shared in Redis", WORKERS * n)
            row.check(False, problem)
            return [*rows, row]
        redis = stack.enter_context(LocalRedis())
        rows.append(_variant(panel, "shared in Redis (budget_redis)", {"budget_redis": redis.url}, True, n))
    return rows
