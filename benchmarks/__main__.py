"""Run the benchmark: ``python -m benchmarks`` (full, ``make bench``) or ``python -m benchmarks --quick``.

Starts the sandbox panel in a child process on 127.0.0.1, runs every case against it, prints one
table and writes it to ``benchmarks/results/<run>.csv`` and ``.md``. Exits non-zero when a case
returned wrong records or request counts (both runs), or, with ``--strict``, when a timing target
was missed. The quick run (small N, 2 ms latency, a few seconds) judges no timing at all.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.config import FULL, QUICK, Config
from benchmarks.table import Row, console, write

RESULTS = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N, tiny latency: checks counts, not speed")
    parser.add_argument("--strict", action="store_true", help="also exit non-zero when a timing target is missed")
    parser.add_argument(
        "--deployment",
        action="store_true",
        help="placement with and without the ledger, run by a real scheduler (minutes)",
    )
    parser.add_argument(
        "--page",
        action="store_true",
        help="with --deployment: only the MirPanel page's rows (100 campaigns of 1,000 orders)",
    )
    parser.add_argument("--n", type=int, default=3_000, help="orders per placement of --deployment (default 3,000)")
    parser.add_argument(
        "--latency",
        type=float,
        action="append",
        metavar="MS",
        help="with --deployment: only the placement rows at this panel latency, in ms (repeatable; no page rows)",
    )
    parser.add_argument(
        "--key-budget",
        action="store_true",
        help="only the key-budget case: 4 placements of one key in 4 processes, own vs shared budgets (a few minutes)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where to write the table (default {RESULTS})")
    return parser


def _quiet() -> None:
    """Airflow's home out of ``~/airflow``, and only warnings from the hook, sensor and trigger."""
    os.environ.setdefault("AIRFLOW_HOME", str(Path(tempfile.gettempdir()) / "airflow-provider-mirpanel-bench"))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from airflow.sdk.log import configure_logging

    configure_logging(log_level="WARNING")  # operators, sensors and triggers log through structlog


def run(config: Config, progress: Callable[[Row], None]) -> list[Row]:
    """Every case of ``config``, in table order."""
    from benchmarks import cases
    from benchmarks.panel_process import PanelProcess

    rows: list[Row] = []

    def add(new: Row | list[Row]) -> None:
        for row in new if isinstance(new, list) else [new]:
            rows.append(row)
            progress(row)

    with PanelProcess(latency=config.latency) as panel:
        add(cases.request_counts(panel, config))
        add(cases.sensor_pokes(panel, config))
        add(cases.trigger_polls(panel, config))
        add(cases.overlap(panel, config))
        add(cases.alternatives(panel, config))
        add(cases.placement(panel, config))
        add(cases.memory(panel, config))
        add(cases.ledger_cost(panel, config))
        add(cases.deferral_sizes(panel, config))
        add(cases.mapped_catalogue(panel, config))
        add(cases.default_budgets(panel, config))
    add(cases.parse_cost(config))
    if config.timed:  # minutes, and its own panel (limits per key): not in the quick run
        from benchmarks.key_budget import key_budget

        add(key_budget(config.latency))
    return rows


def summary(rows: Sequence[Row], config: Config) -> str:
    """Which targets were met, missed, or returned wrong results."""
    wrong = [row for row in rows if not row.correct]
    missed = [row for row in rows if row.correct and row.met is False]
    judged = [row for row in rows if row.met is not None]
    lines = [
        f"{len(rows)} rows: {len(wrong)} wrong, {len(missed)} timing/memory targets missed "
        f"of {len(judged)} judged" + ("" if config.timed else " (quick run: counts and results only)")
    ]
    lines += [f"WRONG  {row.case} (N={row.n:,}): {'; '.join(row.problems)}" for row in wrong]
    lines += [
        f"MISSED {row.case} (N={row.n:,}): {row.target}, got {row.ratio:.2f}" for row in missed if row.ratio is not None
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print, write; the exit code says whether the results were right."""
    args = _parser().parse_args(argv)
    config = QUICK if args.quick else FULL
    _quiet()
    if args.deployment:
        return deployment(args)
    if args.key_budget:
        return key_budget_only(args, config)
    header = (
        f"MirPanel benchmark ({config.name}): sandbox latency {config.latency * 1000:g} ms, default "
        f"concurrency {config.default_concurrency}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at the start"
    )
    print(header, flush=True)
    start = time.perf_counter()
    rows = run(config, lambda row: print(f"  {row.verdict:6} {row.case} (N={row.n:,})", flush=True))
    print()
    print(console(rows))
    paths = write(rows, args.out, config.name, preface=f"{header}, {time.strftime('%Y-%m-%d %H:%M')}.")
    print()
    print(summary(rows, config))
    print(f"{time.perf_counter() - start:.0f} s; written to {', '.join(str(path) for path in paths)}")
    failed = any(not row.correct for row in rows) or (args.strict and any(row.met is False for row in rows))
    return 1 if failed else 0


def key_budget_only(args: argparse.Namespace, config: Config) -> int:
    """``--key-budget``: only the key-budget case (written to ``key-budget.csv`` / ``.md``)."""
    from benchmarks.key_budget import key_budget

    header = (
        f"MirPanel benchmark (key budget): sandbox latency {config.latency * 1000:g} ms, {os.cpu_count()} "
        f"CPUs, Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the start"
    )
    print(header, flush=True)
    start = time.perf_counter()
    rows = key_budget(config.latency)
    print()
    print(console(rows))
    paths = write(rows, args.out, "key-budget", preface=f"{header}, {time.strftime('%Y-%m-%d %H:%M')}.")
    print()
    print(summary(rows, config))
    print(f"{time.perf_counter() - start:.0f} s; written to {', '.join(str(path) for path in paths)}")
    failed = any(not row.correct for row in rows) or (args.strict and any(row.met is False for row in rows))
    return 1 if failed else 0


def deployment(args: argparse.Namespace) -> int:
    """``--deployment``: placement of ``--n`` orders in a real Airflow deployment, at 0 and 50 ms latency."""
    from benchmarks import deployed

    what = (
        "the MirPanel page on PostgreSQL"
        if args.page
        else f"PlaceOrderOperator run by a real scheduler, N = {args.n:,}, and the MirPanel page"
    )
    header = (
        f"MirPanel benchmark (deployment): {what}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at the start"
    )
    print(header, flush=True)
    start = time.perf_counter()
    rows = deployed.run(
        args.n,
        tuple(ms / 1000 for ms in args.latency) if args.latency else (0.0, 0.05),
        lambda row: print(f"  {row.verdict:6} {row.case}: {row.note}", flush=True),
        placement=not args.page,
        page_rows=not args.latency,
    )
    print()
    print(console(rows))
    paths = write(rows, args.out, "deployment", preface=f"{header}, {time.strftime('%Y-%m-%d %H:%M')}.")
    print()
    print(summary(rows, FULL))
    print(f"{time.perf_counter() - start:.0f} s; written to {', '.join(str(path) for path in paths)}")
    failed = any(not row.correct for row in rows) or (args.strict and any(row.met is False for row in rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
