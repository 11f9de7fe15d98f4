"""``make demo``: the example DAGs end to end on a local sandbox panel, in a throwaway Airflow.

What it does, in about a minute, with no account and no money (nothing leaves 127.0.0.1):

1. starts the sandbox panel (this package's emulated SMM panel) in this process, on a free loopback
   port, with a fast clock (one sandbox minute per second), and points ``mirpanel_default`` at it
   through ``AIRFLOW_CONN_MIRPANEL_DEFAULT`` (the API key lives only in the environment);
2. sets up an isolated Airflow under ``.demo/airflow`` (a new SQLite metadata DB each run, ``dags_examples/`` as the
   DAGs folder) and migrates it; the warehouse is the SQLite file ``.demo/warehouse.db``
   (``mirpanel_warehouse``), recreated on every run;
3. runs the example DAGs with ``airflow dags test``: the campaign pipeline (waits for its orders)
   while ``scripts/watch_balance.py`` runs the balance watch's ``BalanceTrigger`` in-process as a
   triggerer would (the campaign's spending crosses its threshold: one event, none after a restart
   of the trigger), hands the event to ``Trigger.submit_event`` and the alert DAG
   ``mirpanel_balance_watch`` reports it (started by hand: ``airflow dags test`` has no scheduler),
   a long campaign that is not waited for, the hourly status ETL for two intervals (the sandbox
   clock jumps an hour between them), the auto refill, and the balance alert with a threshold
   above the balance (so the alert fires);
4. prints the highlights of each run (the full logs are in ``.demo/logs/``) and then the orders
   table, the status history, the refills, the spend and the balance before and after;
5. stops everything it started, also on failure or Ctrl-C.

Run it with ``make demo`` (which creates ``.venv`` first) or ``.venv/bin/python scripts/demo.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags_examples"
AIRFLOW = Path(sys.executable).parent / "airflow"

#: Sandbox seconds per real second: an order of 1,000 units ends in about 3 s.
SPEED = 60.0
#: The long campaign of step 3: big orders that take ~50 s (sandbox: 50 min), so the first ETL run sees
#: them in progress; the ETL's second interval comes after the clock jumped an hour, when they are done.
FOLLOWUP_CSV = """key,service,link,quantity
tiktok-views-followup,8095,https://www.tiktok.com/@mirpanel.demo/video/7301000000000000002,50000
instagram-likes-followup,6915,https://www.instagram.com/reel/MirPanelDemo3/,30000
telegram-views-followup,4663,https://t.me/mirpanel_demo/43,100000
"""
ALERT_THRESHOLD = 5000

#: A structlog line of ``airflow dags test``: ``<time> [<level>] <message> [<logger>] key=value ...``.
LOG_LINE = re.compile(r"^\S+ \[(?P<level>\w+)\s*\] (?P<message>.*?) \[(?P<logger>[\w.]+)\](?: \w+=.*)?$")
TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(?P<task>\S+)")
EXCEPTION_LINE = re.compile(r"^[\w.]+(?:Error|Exception|Exit): .+")
#: Log lines worth showing: the provider's operators and sensors, and the example DAGs' own tasks.
SHOWN_LOGGERS = re.compile(r"airflow_provider_mirpanel|_mirpanel_(?:campaign\w*|status_etl|auto_refill|balance_\w+)$")
HIDDEN_MESSAGES = re.compile(r"^Done\. Returned value|finished on earlier pokes|^Success criteria met")

BOLD, DIM, GREEN, RED, YELLOW, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[33m", "\033[0m")


class DemoFailed(Exception):
    """A step did not end as expected."""


@dataclass
class Demo:
    home: Path
    color: bool
    verbose: bool
    env: dict[str, str] = field(default_factory=dict)
    current: subprocess.Popen[str] | None = None
    step_number: int = 0
    steps: int = 10
    watch_log: list[str] = field(default_factory=list)
    timings: list[tuple[str, float]] = field(default_factory=list)

    # -- paths ------------------------------------------------------------------------------

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.db"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def rel(self, path: Path) -> str:
        with contextlib.suppress(ValueError):
            return str(path.relative_to(Path.cwd()))
        return str(path)

    def paint(self, text: str, *styles: str) -> str:
        return "".join(styles) + text + RESET if self.color else text

    # -- running Airflow ----------------------------------------------------------------------

    def airflow_env(self, panel_env: dict[str, str]) -> dict[str, str]:
        """The environment of every ``airflow`` command: this demo's home, DAGs, connections only."""
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("AIRFLOW") and name.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        }
        env.update(
            {
                "AIRFLOW_HOME": str(self.airflow_home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home / 'airflow.db'}",
                "AIRFLOW_CONN_MIRPANEL_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(self.warehouse)}),
                "MIRPANEL_EXAMPLES_POKE_INTERVAL": "1",
                "MIRPANEL_BALANCE_POLL": "1",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                "PYTHONUNBUFFERED": "1",
                **panel_env,  # AIRFLOW_CONN_MIRPANEL_DEFAULT: the sandbox's URL and key
            }
        )
        return env

    def run(self, title: str, command: Sequence[str], log_name: str, expect_failure: bool = False) -> str:
        """Run one command, echo its highlights, keep its full output in the logs folder; return the output."""
        self.step_number += 1
        print(self.paint(f"[{self.step_number}/{self.steps}] {title}", BOLD), flush=True)
        log_file = self.logs / f"{self.step_number}-{log_name}.log"
        started = time.monotonic()
        lines: list[str] = []
        task = ""
        with log_file.open("w") as log:
            log.write("$ " + " ".join(command) + "\n")
            self.current = subprocess.Popen(
                command,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,
            )
            assert self.current.stdout is not None
            for line in self.current.stdout:
                log.write(line)
                lines.append(line)
                task = self.echo(line.rstrip("\n"), task)
            code = self.current.wait()
            self.current = None
        elapsed = time.monotonic() - started
        self.timings.append((log_name, elapsed))
        output = "".join(lines)
        if expect_failure and code != 0:
            print(self.paint(f"      ✓ failed as intended ({elapsed:.1f} s)", GREEN), flush=True)
        elif code == 0 and not expect_failure:
            print(self.paint(f"      ✓ success ({elapsed:.1f} s)", GREEN), flush=True)
        else:
            tail = "".join(lines[-10:])
            raise DemoFailed(f"{title}: exit code {code} after {elapsed:.1f} s; full log: {self.rel(log_file)}\n{tail}")
        return output

    def echo(self, line: str, task: str) -> str:
        """Print a line worth showing (or every line with --verbose); return the current task ID."""
        if self.verbose:
            print("      " + self.paint(line, DIM), flush=True)
        match = LOG_LINE.match(line)
        if match is None:
            if EXCEPTION_LINE.match(line) and not self.verbose:
                print(f"      {task:<20} " + self.paint(line, RED), flush=True)
            return task
        started = TASK_START.search(match["message"])
        if started:
            return started["task"]
        if self.verbose or not SHOWN_LOGGERS.search(match["logger"]) or HIDDEN_MESSAGES.search(match["message"]):
            return task
        style = {"error": RED, "warning": YELLOW}.get(match["level"], "")
        message = match["message"].rstrip()
        print(f"      {task:<20} " + (self.paint(message, style) if style else message), flush=True)
        return task

    def dags_test(
        self,
        title: str,
        dag_id: str,
        logical_date: datetime | None = None,
        conf: dict[str, Any] | None = None,
        expect_failure: bool = False,
    ) -> str:
        command = [str(AIRFLOW), "dags", "test", dag_id]
        if logical_date is not None:
            command.append(logical_date.isoformat())
        if conf:
            command += ["--conf", json.dumps(conf)]
        return self.run(title, command, dag_id, expect_failure)

    def stop_current(self) -> None:
        """Stop the running ``airflow`` command and everything it started (its own process group)."""
        process, self.current = self.current, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(wait)
                return


def prepare(home: Path, fresh: bool) -> None:
    """The demo's home: a kept Airflow metadata DB (unless ``fresh``), a new warehouse and new logs."""
    if fresh:
        shutil.rmtree(home / "airflow", ignore_errors=True)
    (home / "warehouse.db").unlink(missing_ok=True)
    shutil.rmtree(home / "logs", ignore_errors=True)
    (home / "logs").mkdir(parents=True)
    (home / "airflow").mkdir(parents=True, exist_ok=True)
    (home / "followup_campaign.csv").write_text(FOLLOWUP_CSV)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (and SIGHUP) like Ctrl-C, so ``finally`` blocks clean up."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--home", type=Path, default=ROOT / ".demo", help="demo home (default .demo/)")
    parser.add_argument("--fresh", action="store_true", help="(the default now) recreate the Airflow metadata DB")
    parser.add_argument(
        "--keep-db",
        action="store_true",
        help="keep the Airflow metadata DB of the last run (its ledger scopes name that run's "
        "sandbox orders, which a new sandbox does not know)",
    )
    parser.add_argument("--verbose", action="store_true", help="show every log line of every run")
    args = parser.parse_args(argv)

    from airflow_provider_mirpanel.sandbox import Lifecycle, SandboxPanel

    home = args.home.resolve()
    prepare(home, not args.keep_db)
    demo = Demo(home=home, color=sys.stdout.isatty() and "NO_COLOR" not in os.environ, verbose=args.verbose)
    # Orders end within 50 sandbox minutes (the default caps them at 5): the long campaign stays open
    # for the first ETL run and is finished for the next hourly one.
    lifecycle = Lifecycle(max_run_seconds=3000)
    started = time.monotonic()
    with sigterm_as_interrupt(), SandboxPanel(speed=SPEED, lifecycle=lifecycle) as panel:
        demo.env = demo.airflow_env(panel.env())
        balance_before = panel.balance
        # The balance watch fires once the campaign has spent a cent: the threshold sits just below the balance.
        demo.env["MIRPANEL_BALANCE_MIN"] = f"{balance_before - 0.01:.2f}"
        print(demo.paint("MirPanel provider demo: the example DAGs end to end on a local sandbox panel", BOLD))
        print(
            f"  sandbox panel  {panel.url}  (clock x{SPEED:g}; balance {balance_before:,.2f} "
            f"{panel.state.currency}; nothing leaves 127.0.0.1)"
        )
        print(f"  AIRFLOW_HOME   {demo.rel(demo.airflow_home)}  (SQLite; DAGs from {demo.rel(DAGS)}/)")
        print(f"  warehouse      {demo.rel(demo.warehouse)}  (connection mirpanel_warehouse)")
        print(f"  full logs      {demo.rel(demo.logs)}/\n", flush=True)
        try:
            run_steps(demo, panel)
            report(demo, panel, balance_before, time.monotonic() - started)
        except KeyboardInterrupt:
            print(demo.paint("\nInterrupted: stopping Airflow and the sandbox panel.", YELLOW), file=sys.stderr)
            return 130
        except DemoFailed as failure:
            print(demo.paint(f"\nDemo failed: {failure}", RED), file=sys.stderr)
            return 1
        finally:
            demo.stop_current()
    return 0


def run_steps(demo: Demo, panel: Any) -> None:
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    demo.run("airflow db migrate (the demo's own metadata DB)", [str(AIRFLOW), "db", "migrate"], "db-migrate")

    # An AssetWatcher's trigger gets its row only for an unpaused DAG (as in production): parse, unpause, parse.
    airflow = str(AIRFLOW)
    demo.run(
        "airflow dags reserialize, unpause mirpanel_balance_watch (its watcher's trigger row is made)",
        [
            "sh",
            "-c",
            f"{airflow} dags reserialize && {airflow} dags unpause mirpanel_balance_watch "
            f"&& {airflow} dags reserialize",
        ],
        "dags-reserialize",
    )
    watcher = start_balance_watch(demo)
    try:
        demo.dags_test(
            "mirpanel_campaign: campaign 'spring_launch' from dags_examples/data/campaign.csv, "
            "waiting for every order (its spending crosses the balance watch's threshold)",
            "mirpanel_campaign",
        )
    except BaseException:
        watcher.kill()
        watcher.wait()
        raise
    finish_balance_watch(demo, watcher)
    demo.dags_test(
        "mirpanel_balance_watch: the alert run for the asset event (run by hand here: no scheduler)",
        "mirpanel_balance_watch",
    )
    demo.dags_test(
        "mirpanel_campaign_report: the report on the campaign's 'finished' asset event "
        "(run by hand here: no scheduler)",
        "mirpanel_campaign_report",
    )

    demo.dags_test(
        "mirpanel_campaign: a long campaign 'summer_followup', not waited for (the status ETL follows it)",
        "mirpanel_campaign",
        conf={
            "campaign": "summer_followup",
            "campaign_csv": str(demo.home / "followup_campaign.csv"),
            "wait_for_completion": False,
        },
    )

    demo.dags_test(
        f"mirpanel_status_etl for the interval ending {hour:%H:%M} UTC: snapshot of the open orders",
        "mirpanel_status_etl",
        logical_date=hour,
    )

    panel.advance(3600)
    print(demo.paint("      ⏩ the sandbox clock jumps one hour ahead: the next hourly run", DIM), flush=True)
    demo.dags_test(
        f"mirpanel_status_etl for the next interval ({hour + timedelta(hours=1):%H:%M} UTC)",
        "mirpanel_status_etl",
        logical_date=hour + timedelta(hours=1),
    )

    demo.dags_test(
        "mirpanel_auto_refill: refills of finished orders of refill-enabled services", "mirpanel_auto_refill"
    )

    demo.dags_test(
        f"mirpanel_balance_alert with min_balance={ALERT_THRESHOLD:,} (above the balance: the alert fires)",
        "mirpanel_balance_alert",
        conf={"min_balance": ALERT_THRESHOLD},
        expect_failure=True,
    )


def start_balance_watch(demo: Demo) -> subprocess.Popen[str]:
    """Start scripts/watch_balance.py (the watcher's BalanceTrigger, run as a triggerer would) after its first poll."""
    print(
        demo.paint(
            "      ▶ balance watch: BalanceTrigger of mirpanel_balance_watch.py polling every "
            f"{demo.env['MIRPANEL_BALANCE_POLL']} s, min_balance {demo.env['MIRPANEL_BALANCE_MIN']}",
            DIM,
        )
    )
    watcher = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "watch_balance.py")],
        env=demo.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert watcher.stdout is not None
    demo.watch_log = _lines_until(watcher, "first poll done")
    return watcher


def _lines_until(process: subprocess.Popen[str], marker: str) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            break
    else:
        raise DemoFailed("the balance watch ended early:\n" + "".join(lines[-15:]))
    return lines


def finish_balance_watch(demo: Demo, watcher: subprocess.Popen[str]) -> None:
    """Let the watch hand its events to Trigger.submit_event now that the campaign run is done; show its lines."""
    output, _ = watcher.communicate("go\n", timeout=120)
    lines = demo.watch_log + output.splitlines(keepends=True)
    (demo.logs / "balance-watch.log").write_text("".join(lines))
    for line in lines:
        if line.startswith("  "):
            print("      balance watch        " + line.strip(), flush=True)
    if watcher.returncode != 0:
        log = demo.rel(demo.logs / "balance-watch.log")
        raise DemoFailed(f"the balance watch did not fire exactly once; see {log}")


def report(demo: Demo, panel: Any, balance_before: float, elapsed: float) -> None:
    """The warehouse's tables, the spend and the balance."""
    import pandas as pd
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{demo.warehouse}")
    try:
        with engine.connect() as conn:
            orders = pd.read_sql(
                'SELECT order_id AS "order", campaign, service, quantity, status, charge, remains, '
                "refill_enabled AS refill FROM orders ORDER BY order_id",
                conn,
            )
            history = pd.read_sql(
                "SELECT substr(snapshot_at, 1, 16) AS snapshot_at, status, COUNT(*) AS orders "
                "FROM order_status_history GROUP BY snapshot_at, status ORDER BY snapshot_at, status",
                conn,
            )
            refills = pd.read_sql("SELECT status, COUNT(*) AS refills FROM refills GROUP BY status", conn)
            spend = pd.read_sql(
                "SELECT campaign, COUNT(*) AS orders, SUM(estimated_cost) AS estimated, "
                "SUM(charge) AS charged FROM orders GROUP BY campaign",
                conn,
            )
    finally:
        engine.dispose()
    currency = panel.state.currency
    if orders.empty:
        raise DemoFailed("the orders table is empty")
    pending = orders[~orders["status"].isin(["Completed", "Partial", "Canceled", "Refunded"])]
    if not pending.empty:
        raise DemoFailed(f"orders not finished at the end: {pending['order'].tolist()}")

    print(demo.paint("\nThe warehouse after the runs", BOLD) + f"  ({demo.rel(demo.warehouse)})")
    orders["refill"] = orders["refill"].map({1: "yes", 0: "no"})
    print(demo.paint("orders", BOLD))
    print(orders.to_string(index=False, float_format=lambda value: f"{value:.5f}"))
    print(demo.paint("\norder_status_history", BOLD) + " (one snapshot per hourly ETL interval)")
    print(history.to_string(index=False))
    print(demo.paint("\nrefills", BOLD))
    print(refills.to_string(index=False))
    print(demo.paint("\nspend per campaign", BOLD) + f" ({currency}; charged = what the panel kept, net of refunds)")
    print(spend.to_string(index=False, float_format=lambda value: f"{value:.5f}"))
    balance_after = panel.balance
    print(
        f"\nbalance: {balance_before:,.5f} -> {balance_after:,.5f} {currency} "
        f"(spent {balance_before - balance_after:,.5f}; charged in the table: {orders['charge'].sum():,.5f})"
    )
    steps = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in demo.timings)
    print(demo.paint(f"\nDone in {elapsed:.0f} s", GREEN) + f" ({steps}).")
    print(
        f"Look around: .venv/bin/python -c \"import pandas, sqlite3; print(pandas.read_sql('select * from orders', "
        f"sqlite3.connect('{demo.rel(demo.warehouse)}')))\""
    )
    print(
        f"Airflow's view of the runs: AIRFLOW_HOME={demo.rel(demo.airflow_home)} "
        f"AIRFLOW__CORE__DAGS_FOLDER={demo.rel(DAGS)} .venv/bin/airflow dags list-runs mirpanel_campaign"
    )


if __name__ == "__main__":
    sys.exit(main())
