"""Fixtures of ``make e2e``: one sandbox panel and one real Airflow deployment for the whole session.

Two lines, one per session: ``--executor LocalExecutor`` (the default; build folder ``.e2e/``) and
``--executor CeleryExecutor`` (``make e2e-celery``; Redis and two Celery workers too, in
``.e2e-celery/``). Tests marked ``celery`` run on the Celery line only.

The deployment (``deployment.py``) is stopped by a finalizer that runs on success, on failure, on
Ctrl-C and on SIGTERM/SIGHUP (turned into KeyboardInterrupt here), and then checks that no process
and no port is left and that the panel's API key is in no log file. Each scenario leaves one line
with its numbers in :data:`LINES`, printed at the end of the run.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from deployment import (
    CELERY_CONCURRENCY,
    CELERY_WORKERS,
    ROOT,
    Deployment,
    Scenario,
    describe,
    marked_processes,
    port_in_use,
)

if TYPE_CHECKING:
    from airflow_provider_mirpanel.sandbox import SandboxPanel

#: The build folder of each line: PostgreSQL's cluster, AIRFLOW_HOME, every process's log, the scenarios' files.
BUILDS = {"LocalExecutor": ROOT / ".e2e", "CeleryExecutor": ROOT / ".e2e-celery"}
#: One line per scenario (and the deployment), printed by pytest_terminal_summary.
LINES: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--executor",
        choices=sorted(BUILDS),
        default="LocalExecutor",
        help="the executor of the e2e deployment (CeleryExecutor: Redis and two Celery workers too)",
    )


def executor_of(config: pytest.Config) -> str:
    return str(config.getoption("--executor"))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxPanel]:
    """The sandbox panel, in this process (its fault rules, clock and order list are ours to steer and read).

    The clock starts frozen: each scenario sets the speed it needs.
    """
    from airflow_provider_mirpanel.sandbox import SandboxPanel

    panel = SandboxPanel(speed=0, balance=1000)
    panel.start()
    port = panel.port
    try:
        yield panel
    finally:
        panel.stop()
        assert not port_in_use(port), f"the sandbox's port {port} is still open"


@pytest.fixture(scope="session")
def deployment(sandbox: SandboxPanel, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """PostgreSQL + api-server, scheduler, dag-processor, triggerer; ``mirpanel_default`` → the sandbox."""
    # Ctrl-C, SIGTERM and SIGHUP all end the run through the finalizer below (SIGINT even where the
    # shell started us with it ignored, as non-interactive shells do for background jobs).
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    executor = executor_of(request.config)
    deployment = Deployment(BUILDS[executor], executor=executor)
    try:
        deployment.start()
        api = deployment.api
        assert api is not None
        # As a user would: the connection through the REST API (stored encrypted in the metadata DB),
        # with the sandbox's extra (no request budgets: scenario 3 places 300 orders at once).
        api.add_panel_connection(sandbox, description="the sandbox panel of make e2e")
        api.set_paused("mirpanel_campaign", False)
        # Data-aware: every campaign run whose orders all finish starts a report run (scenario 6).
        api.set_paused("mirpanel_campaign_report", False)
        sockets = deployment.listening()
        assert sockets and all(address == "127.0.0.1" for _, address, _ in sockets), sockets
        postgres = deployment.postgres
        assert postgres is not None
        timings = deployment.timings
        celery = ""
        if deployment.redis is not None:
            workers = ", ".join(deployment.hostname(name) for name in CELERY_WORKERS)
            celery = (
                f" + Redis {deployment.redis.version.split()[2].removeprefix('v=')} (broker) and Celery workers "
                f"{workers} ({CELERY_CONCURRENCY} slots each; results in PostgreSQL)"
            )
        LINES.append(
            f"deployment: PostgreSQL {postgres.version.split()[2]} + Airflow {deployment.airflow_version} "
            f"api-server, scheduler ({executor}), dag-processor, triggerer{celery} up in {timings['total']:.1f} s "
            f"(PostgreSQL {timings['postgres']:.1f} s, "
            f"db migrate {timings['migrate']:.1f} s, services healthy {timings['services']:.1f} s); listening: "
            + ", ".join(sorted(f"{address}:{port} ({name})" for name, address, port in sockets))
        )
        yield deployment
    finally:
        started = time.monotonic()
        try:
            killed = deployment.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        problems = _leftovers(deployment, sandbox.api_key)
        LINES.append(
            f"cleanup: every process stopped in {time.monotonic() - started:.1f} s"
            + (f" ({len(killed)} needed SIGKILL: {killed})" if killed else "")
            + (f"; PROBLEMS: {problems}" if problems else "; no process, no port, no API key in the logs")
        )
        assert not problems, problems


def _leftovers(deployment: Deployment, api_key: str) -> list[str]:
    """Processes or ports the deployment left, and log files holding the panel's API key."""
    problems = [f"process left: {describe(process)}" for process in marked_processes(deployment.home)]
    ports = [deployment.api_port] + [store.port for store in (deployment.postgres, deployment.redis) if store]
    problems += [f"port {port} still listening" for port in ports if port and port_in_use(port)]
    key = api_key.encode()
    for folder in (deployment.logs, deployment.airflow_home / "logs"):
        for path in sorted(folder.rglob("*")) if folder.exists() else []:
            if path.is_file() and key in path.read_bytes():
                problems.append(f"the API key is in {path.relative_to(deployment.home)}")
    return problems


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Scenario]:
    """The scenario's measurements; its line goes to the summary whatever the outcome."""
    marker = request.node.get_closest_marker("scenario")
    assert marker is not None, "mark e2e tests with @pytest.mark.scenario(number, title)"
    record = Scenario(*marker.args)
    yield record
    report = getattr(request.node, "rep_call", None)
    outcome = "PASSED" if report is not None and report.passed else "FAILED"
    if outcome == "FAILED" and report is not None and report.longrepr is not None:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = crash.message if crash is not None else str(report.longrepr)
        record.note("why: " + " ".join(message.split())[:400])
    LINES.append(record.line(outcome))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(number, title): a numbered scenario of issues 11, 15, 20 and 23")
    config.addinivalue_line("markers", "celery: a scenario of the CeleryExecutor line only (make e2e-celery)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Scenarios run in their numbers' order, whatever file holds them (1–7 first, as before issue 20);
    the Celery line's own scenarios are deselected on the LocalExecutor line."""
    if executor_of(config) != "CeleryExecutor":
        celery = [item for item in items if item.get_closest_marker("celery") is not None]
        if celery:
            config.hook.pytest_deselected(items=celery)
            items[:] = [item for item in items if item.get_closest_marker("celery") is None]

    def number(item: pytest.Item) -> int:
        marker = item.get_closest_marker("scenario")
        return int(marker.args[0]) if marker is not None else 0

    items.sort(key=number)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if LINES:
        executor = executor_of(config)
        terminalreporter.section(f"make e2e: a real Airflow deployment ({executor})")
        for line in LINES:
            terminalreporter.write_line(line)
        BUILDS[executor].mkdir(exist_ok=True)
        (BUILDS[executor] / "summary.txt").write_text("\n".join(LINES) + "\n")
