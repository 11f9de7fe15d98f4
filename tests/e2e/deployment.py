"""A real Airflow deployment on 127.0.0.1, started and stopped by ``make e2e``.

What :class:`Deployment` starts, each as its own process (group), all under the build folder ``.e2e/``:

* **PostgreSQL** (Debian's ``postgresql`` package, installed with apt-get when no server is found):
  its own cluster in ``.e2e/postgres``, run as the ``postgres`` user when we are root (initdb refuses
  root), listening on 127.0.0.1 only on a free port, with the ``airflow`` metadata DB and the
  ``warehouse`` DB of the example DAGs;
* Airflow's ``api-server``, ``scheduler`` (LocalExecutor), ``dag-processor`` and ``triggerer``, with an
  isolated ``AIRFLOW_HOME`` (``.e2e/airflow``), ``dags_examples/`` as the DAGs folder (and
  ``tests/e2e/dags/``, the scenarios' own DAGs, as a second DAG bundle), short heartbeats
  and timeouts set through configuration, and no log server (``--skip-serve-logs``): nothing listens
  beyond 127.0.0.1.

It is driven the way a user drives Airflow: the ``airflow`` CLI, the REST API with a JWT from
``/auth/token``, and ``kill -9``. Every process it starts carries the environment variable
``MIRPANEL_E2E_HOME`` (the build folder), so :meth:`Deployment.stop` — and the next run, after a hard
kill — finds and ends every one of them, also those that left their process group (task processes).

``python tests/e2e/deployment.py`` starts it with a sandbox panel and waits for Ctrl-C (to look around).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import requests
from debian import install_postgres, install_redis, postgres_bindir

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags_examples"
#: The scenarios' own DAGs (issue 20's concurrent writers), a second DAG bundle beside the examples.
E2E_DAGS = ROOT / "tests" / "e2e" / "dags"
#: On the Celery workers' PYTHONPATH: the hostname callable that tells the two workers of one machine apart.
WORKER_PATH = ROOT / "tests" / "e2e" / "worker"
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
MARKER = "MIRPANEL_E2E_HOME"
T = TypeVar("T")

#: Airflow configuration of the deployment, beyond paths, ports and secrets: short heartbeats and
#: timeouts so failures are detected in seconds, not minutes (what each does: README, "Production
#: deployment").
AIRFLOW_SETTINGS = {
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__PARALLELISM": "8",
    "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
    "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_SEC": "2",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
    "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "6",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "2",
    "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
    "AIRFLOW__CONNECTION_TEST__TIMEOUT": "30",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
    # The example DAGs' sensors poll every 2 s instead of every minute.
    "MIRPANEL_EXAMPLES_POKE_INTERVAL": "2",
    # The watcher of mirpanel_balance_watch (read by the dag-processor when it parses the file): its
    # BalanceTrigger asks for the balance every 2 s instead of every 5 minutes, and alerts below 100
    # (the sandbox starts with 1,000) or when the balance runs out within 24 h at the spend rate.
    "MIRPANEL_BALANCE_MIN": "100",
    "MIRPANEL_BALANCE_HOURS": "24",
    "MIRPANEL_BALANCE_POLL": "2",
}

#: The example DAGs the scenarios run (the deployment waits until the dag-processor has parsed them).
EXAMPLE_DAGS = ("mirpanel_campaign", "mirpanel_campaign_report", "mirpanel_balance_alert", "mirpanel_balance_watch")

TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class DeploymentError(Exception):
    """The deployment could not be set up, or a process of it died."""


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 0.5,
    check: Callable[[], None] | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy, at most ``timeout`` seconds; return that.

    ``check`` runs before every probe (e.g. "are the deployment's processes still alive?") and may
    raise to end the wait early. On time-out the error names ``what`` and the probe's last value.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        if check is not None:
            check()
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last: {str(last)[:500]})")
        time.sleep(interval)


def settled(count: Any) -> Any:
    """A probe that is true once ``count()`` returned the same value twice in a row (one poll apart)."""
    last: list[Any] = []

    def probe() -> bool:
        last.append(count())
        return len(last) >= 2 and last[-1] == last[-2]

    return probe


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def marked_processes(home: Path) -> list[psutil.Process]:
    """Every live process started by the deployment living in ``home`` (their environment says so)."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if process.environ().get(MARKER) == str(home) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def alive(process: psutil.Process) -> bool:
    """Whether the process runs (a zombie does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:100]}"
    except psutil.Error:
        return str(process.pid)


def kill_processes(processes: Iterable[psutil.Process], grace: float) -> None:
    """SIGTERM, then SIGKILL what is left after ``grace`` seconds."""
    processes = list(processes)
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


def listening(pids: Iterable[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket listening in these processes."""
    wanted = set(pids)
    sockets = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in wanted and conn.laddr:
            sockets.append((conn.pid, conn.laddr.ip, conn.laddr.port))
    return sockets


def port_in_use(port: int) -> bool:
    return any(
        conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        for conn in psutil.net_connections(kind="tcp")
    )


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


@dataclass
class Service:
    """One long-running process of the deployment, in its own session and process group."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    user: str | None = None
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    def start(self) -> None:
        self.starts += 1
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n=== start #{self.starts}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.cwd,
                user=self.user,
                group=self._group(),
                extra_groups=[] if self.user else None,
            )

    def _group(self) -> int | None:
        return pwd.getpwnam(self.user).pw_gid if self.user else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tree(self) -> list[psutil.Process]:
        """The process and all its descendants (task processes leave the group; they are found here)."""
        if not self.alive():
            return []
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def kill9(self) -> list[int]:
        """``kill -9`` of the whole process tree, as a crash would; returns the PIDs killed."""
        tree = self.tree()
        for process in tree:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(tree, timeout=10)
        if self.process is not None:
            self.process.wait(10)
        return [process.pid for process in tree]

    def send(self, sig: int = signal.SIGTERM) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def stop(self, sig: int | None = signal.SIGTERM, grace: float = 15.0) -> None:
        """Send ``sig`` (None: already sent), wait ``grace`` seconds, then SIGKILL the whole tree and group."""
        if self.process is None:
            return
        tree = self.tree()
        if sig is not None:
            self.send(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for process in tree:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(tree, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------


def _traversable_by_others(path: Path) -> bool:
    """Whether every folder above ``path`` lets another user through (o+x)."""
    return all(os.stat(parent).st_mode & stat.S_IXOTH for parent in [path, *path.parents] if parent.exists())


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1, its data under ``base``."""

    base: Path
    logs: Path
    marker_env: dict[str, str]
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    bindir: Path | None = None
    version: str = ""
    user: str | None = None
    service: Service | None = None
    scratch: Path | None = None  # a folder under /tmp when the build folder is closed to other users

    def start(self, timeout: float = 90) -> None:
        self.bindir = postgres_bindir() or install_postgres(self.logs / "apt-get.log")
        self.version = subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                raise DeploymentError(
                    "we are root and there is no `postgres` user to run the server as "
                    "(initdb refuses root): install Debian's postgresql package"
                ) from None
        base = self.base
        if self.user is not None and not _traversable_by_others(base.parent):
            self.scratch = base = Path(tempfile.mkdtemp(prefix="mirpanel-e2e-postgres-"))
            os.chmod(base, 0o755)
        shutil.rmtree(base, ignore_errors=True)
        data, run = base / "data", base / "run"
        for folder in (base, run):
            folder.mkdir(parents=True, exist_ok=True)
        pwfile = base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (base, run, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(pwfile, 0o600)
        initdb = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ],
            cwd=base,
            user=self.user,
            group=pwd.getpwnam(self.user).pw_gid if self.user else None,
            extra_groups=[] if self.user else None,
            capture_output=True,
            text=True,
            env=self._env(),
        )
        pwfile.unlink()
        (self.logs / "initdb.log").write_text(initdb.stdout + initdb.stderr)
        if initdb.returncode != 0:
            raise DeploymentError(f"initdb failed: {initdb.stderr.strip()[-2000:]}")
        for attempt in range(3):
            self.port = free_port()
            self.service = Service(
                "postgres",
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={run}",
                    # A test cluster: durability traded for speed.
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "shared_buffers=64MB",
                ],
                self._env(),
                self.logs / "postgres.log",
                user=self.user,
                cwd=base,
            )
            self.service.start()
            try:
                wait_for(f"PostgreSQL on 127.0.0.1:{self.port}", self._ready, timeout, check=self._check)
                break
            except DeploymentError:
                if attempt == 2 or not re.search(
                    r"could not bind|Address already in use", tail(self.logs / "postgres.log")
                ):
                    raise
        self.create_databases()

    def _env(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if not name.startswith(("PG", "AIRFLOW"))}
        return {**env, **self.marker_env, "LC_ALL": "C"}

    def _check(self) -> None:
        if self.service is not None and not self.service.alive():
            raise DeploymentError(f"PostgreSQL exited:\n{tail(self.service.log)}")

    def _ready(self) -> bool:
        try:
            self.connect("postgres", "postgres", self.password).close()
            return True
        except Exception:
            return False

    def connect(self, database: str, user: str, password: str) -> Any:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, dbname=database, user=user, password=password, connect_timeout=3
        )
        conn.autocommit = True
        return conn

    def create_databases(self) -> None:
        conn = self.connect("postgres", "postgres", self.password)
        try:
            with conn.cursor() as cur:
                for name in ("airflow", "warehouse"):
                    cur.execute(f'CREATE ROLE "{name}" LOGIN PASSWORD %s', (self.password,))
                    cur.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
        finally:
            conn.close()

    def url(self, database: str, driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://{database}:{self.password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(signal.SIGINT, grace=20)  # SIGINT: PostgreSQL's "fast" shutdown
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Redis (the Celery broker of the CeleryExecutor line)
# ---------------------------------------------------------------------------------------------


@dataclass
class Redis:
    """A throwaway Redis server on 127.0.0.1 (no persistence), its folder ``base``: the Celery broker."""

    base: Path
    logs: Path
    marker_env: dict[str, str]
    port: int = 0
    version: str = ""
    service: Service | None = None

    def start(self, timeout: float = 60) -> None:
        found = shutil.which("redis-server")
        binary = Path(found) if found else install_redis(self.logs / "apt-get.log")
        self.version = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        shutil.rmtree(self.base, ignore_errors=True)
        self.base.mkdir(parents=True)
        for attempt in range(3):
            self.port = free_port()
            self.service = Service(
                "redis",
                [
                    str(binary),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--dir",
                    str(self.base),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--logfile",
                    "",
                ],
                {**{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}, **self.marker_env},
                self.logs / "redis.log",
                cwd=self.base,
            )
            self.service.start()
            try:
                wait_for(f"Redis on 127.0.0.1:{self.port}", self._ready, timeout, interval=0.2, check=self._check)
                return
            except DeploymentError:
                if attempt == 2 or "Address already in use" not in tail(self.logs / "redis.log"):
                    raise

    def url(self, database: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def _check(self) -> None:
        if self.service is not None and not self.service.alive():
            raise DeploymentError(f"Redis exited:\n{tail(self.service.log)}")

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(signal.SIGTERM, grace=10)


# ---------------------------------------------------------------------------------------------
# Airflow's REST API
# ---------------------------------------------------------------------------------------------


class Api:
    """Airflow's public REST API (``/api/v2``) with a JWT from ``/auth/token``, as a script would use it."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.session = requests.Session()
        self.session.trust_env = False  # never through a proxy: everything is on 127.0.0.1
        self.requests = 0

    def login(self, username: str, password: str) -> None:
        reply = self.session.post(
            f"{self.base_url}/auth/token", json={"username": username, "password": password}, timeout=30
        )
        reply.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    def call(self, method: str, path: str, expect: Sequence[int] = (200,), **kwargs: Any) -> Any:
        self.requests += 1
        reply = self.session.request(method, f"{self.base_url}/api/v2{path}", timeout=60, **kwargs)
        if reply.status_code not in expect:
            raise DeploymentError(f"{method} {path}: HTTP {reply.status_code}: {reply.text[:2000]}")
        if reply.status_code == 204 or not reply.content:
            return None
        return reply.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params or None)

    # -- the calls the scenarios use ----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        reply = self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=10)
        reply.raise_for_status()
        return dict(reply.json())

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return dict(self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        reply = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)
        return {ti["task_id"]: ti for ti in reply["task_instances"]}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """A task try's log as text, one line per event (as the UI shows it)."""
        reply = self.call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
            headers={"Accept": "application/json"},
        )
        content = reply.get("content") if isinstance(reply, dict) else reply
        if isinstance(content, str):
            return content
        lines = []
        for event in content or []:
            if not isinstance(event, dict):
                lines.append(str(event))
                continue
            line = f"[{event.get('level', '')}] {event.get('event', '')}"
            for detail in event.get("error_detail") or []:
                if isinstance(detail, dict):
                    line += f" | {detail.get('exc_type')}: {detail.get('exc_value')}"
            lines.append(line)
        return "\n".join(lines)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        reply = self.get(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            deserialize="true",
            stringify="false",
        )
        return reply["value"]

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of a DAG, oldest first."""
        return list(self.get(f"/dags/{dag_id}/dagRuns", limit=100, order_by="id")["dag_runs"])

    def asset_id(self, name: str) -> int:
        """The ID of the asset named ``name`` (exactly)."""
        assets = [
            asset for asset in self.get("/assets", name_pattern=name, limit=100)["assets"] if asset["name"] == name
        ]
        if len(assets) != 1:
            raise DeploymentError(f"expected one asset named {name!r}, found {assets}")
        return int(assets[0]["id"])

    def asset_events(self, **filters: Any) -> list[dict[str, Any]]:
        """Asset events (oldest first) matching ``filters`` (``asset_id``, ``source_dag_id``, ``source_run_id``, …)."""
        return self._events("/assets/events", limit=100, **filters)

    def upstream_asset_events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The asset events a run consumed (those that made the scheduler start it)."""
        return self._events(f"/dags/{dag_id}/dagRuns/{run_id}/upstreamAssetEvents")

    def _events(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """``asset_events`` of an endpoint that lists them, asked again while Airflow answers 500.

        Airflow 3.3.2 answers 500 while a run an event created is still queued: the reply lists the
        run with no ``start_date``, which its own response model refuses (apache/airflow#71360, fixed
        by #71379 after 3.3.2). The scheduler starts the run within seconds, and the endpoint answers
        again.
        """
        deadline = time.monotonic() + 60
        while True:
            reply = self.session.get(f"{self.base_url}/api/v2{path}", params=params or None, timeout=60)
            self.requests += 1
            if reply.status_code != 500 or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if reply.status_code != 200:
            raise DeploymentError(f"GET {path}: HTTP {reply.status_code}: {reply.text[:2000]}")
        return list(reply.json()["asset_events"])

    def reparse(self, dag_id: str) -> None:
        """Ask the dag-processor to parse the DAG's file now (the UI's "Reparse Dag" button)."""
        token = self.get(f"/dags/{dag_id}/details")["file_token"]
        self.call("PUT", f"/parseDagFile/{token}", expect=(201,))

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": paused}, params={"update_mask": "is_paused"})

    def add_panel_connection(self, panel: Any, description: str | None = None) -> None:
        """Store ``mirpanel_default`` for a sandbox panel as a user would: through the REST API (encrypted in the DB).

        ``panel`` is a ``SandboxPanel`` or a ``PanelProcess``: its URL, key and the sandbox's extra (no budgets).
        """
        connection = {
            "connection_id": "mirpanel_default",
            "conn_type": "mirpanel",
            "host": panel.url,
            "password": panel.api_key,
            "extra": json.dumps(panel.connection()["extra"]),
        }
        self.call(
            "POST",
            "/connections",
            expect=(201,),
            json={**connection, **({"description": description} if description else {})},
        )

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any]) -> dict[str, Any]:
        """A manual run, as the UI makes it: no logical date."""
        return dict(
            self.call(
                "POST",
                f"/dags/{dag_id}/dagRuns",
                expect=(200,),
                json={"dag_run_id": run_id, "logical_date": None, "conf": dict(conf)},
            )
        )


# ---------------------------------------------------------------------------------------------
# The deployment
# ---------------------------------------------------------------------------------------------


#: The Celery line: Airflow's Celery workers, each its own process (tree) with its own Celery hostname.
CELERY_WORKERS = ("worker1", "worker2")
#: Task slots of each Celery worker (``--concurrency``): 2 × 2 = 4 tasks at once on a 2-core machine.
CELERY_CONCURRENCY = 2


@dataclass
class Deployment:
    """PostgreSQL and Airflow's four services on 127.0.0.1, in ``home`` (the build folder).

    ``executor="CeleryExecutor"`` adds Redis (the broker) and two Celery workers, ``worker1`` and
    ``worker2`` (services of those names), with the result backend on the deployment's PostgreSQL.
    """

    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    executor: str = "LocalExecutor"
    postgres: Postgres | None = None
    redis: Redis | None = None
    #: Services stopped on purpose (a scenario killed a worker): :meth:`check` does not count them dead.
    down: set[str] = field(default_factory=set)
    services: dict[str, Service] = field(default_factory=dict)
    api: Api | None = None
    env: dict[str, str] = field(default_factory=dict)
    api_port: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    _user: tuple[str, str] = ("e2e", "")
    _meta: Any = None

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def openlineage_file(self) -> Path:
        """Where every process writes its OpenLineage events (the file transport, one JSON per line)."""
        return self.logs / "openlineage.jsonl"

    def openlineage_events(self, job: str, event_type: str = "COMPLETE") -> list[dict[str, Any]]:
        """The OpenLineage events of one job (``<dag id>.<task id>``) of a given type, oldest first."""
        if not self.openlineage_file.exists():
            return []
        events = [json.loads(line) for line in self.openlineage_file.read_text().splitlines() if line.strip()]
        return [
            event
            for event in events
            if event.get("job", {}).get("name") == job and event.get("eventType") == event_type
        ]

    @property
    def marker_env(self) -> dict[str, str]:
        return {MARKER: str(self.home)}

    @property
    def celery(self) -> bool:
        return self.executor == "CeleryExecutor"

    def hostname(self, worker: str) -> str:
        """The Celery hostname of a worker, as task instances report it (``worker1@<host>``)."""
        return f"{worker}@{socket.gethostname()}"

    @property
    def airflow_version(self) -> str:
        from importlib.metadata import version

        return version("apache-airflow")

    # -- starting -----------------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        self.sweep()  # processes left by an earlier run that was killed hard
        for folder in (self.airflow_home, self.logs):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        self.postgres = Postgres(self.home / "postgres", self.logs, self.marker_env)
        self.postgres.start()
        self.timings["postgres"] = time.monotonic() - started
        if self.celery:
            mark = time.monotonic()
            self.redis = Redis(self.home / "redis", self.logs, self.marker_env)
            self.redis.start()
            self.timings["redis"] = time.monotonic() - mark
        self.env = self._airflow_env()
        mark = time.monotonic()
        self.airflow("db", "migrate", timeout=600)
        self.timings["migrate"] = time.monotonic() - mark
        mark = time.monotonic()
        commands = {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"],
            "scheduler": ["scheduler", "--skip-serve-logs"],  # no log server on 0.0.0.0:8793
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer", "--skip-serve-logs"],  # no log server on 0.0.0.0:8794
        }
        for worker in CELERY_WORKERS if self.celery else ():
            commands[worker] = [
                "celery",
                "worker",
                "--celery-hostname",
                f"{worker}@%h",
                "--concurrency",
                str(CELERY_CONCURRENCY),
                "--skip-serve-logs",  # no log server on 0.0.0.0:8793
                "--pid",  # not the shared $AIRFLOW_HOME/airflow-worker.pid
                str(self.logs / f"{worker}.pid"),
                "--without-mingle",
                "--without-gossip",
            ]
        self.services = {
            name: Service(name, [AIRFLOW, *args], self._env_of(name), self.logs / f"{name}.log", cwd=self.home)
            for name, args in commands.items()
        }
        for service in self.services.values():
            service.start()
        self.api = Api(f"http://127.0.0.1:{self.api_port}")
        wait_for(
            "every Airflow component healthy (/api/v2/monitor/health)", self._healthy, 180, interval=1, check=self.check
        )
        self.api.login(*self._user)
        for worker in CELERY_WORKERS if self.celery else ():
            self.wait_worker(worker)
        self.timings["services"] = time.monotonic() - mark
        mark = time.monotonic()
        wait_for("the example DAGs parsed by the dag-processor", self._dags_parsed, 180, interval=1, check=self.check)
        self.timings["parse"] = time.monotonic() - mark
        self.timings["total"] = time.monotonic() - started

    def _airflow_env(self) -> dict[str, str]:
        assert self.postgres is not None
        self.api_port = free_port()
        password = secrets.token_hex(12)
        self._user = ("e2e", password)
        passwords = self.airflow_home / "simple_auth_manager_passwords.json"
        passwords.write_text(json.dumps({"e2e": password}))
        os.chmod(passwords, 0o600)
        from cryptography.fernet import Fernet

        warehouse = {
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": self.postgres.port,
            "login": "warehouse",
            "password": self.postgres.password,
            "schema": "warehouse",
        }
        base = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("AIRFLOW") and name.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        }
        return {
            **base,
            **self.marker_env,
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            # Two bundles: the DAGs folder (the examples, as users get them) and the scenarios' own.
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                [
                    {"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {}},
                    {"name": "e2e", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(E2E_DAGS)}},
                ]
            ),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url("airflow"),
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "e2e:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            # Not used (no log server is started), but never the well-known ports either.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW_CONN_MIRPANEL_WAREHOUSE": json.dumps(warehouse),
            # OpenLineage on, to a file: scenario 1 reads what a lineage tool would get
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "append": True, "log_file_path": str(self.openlineage_file)}
            ),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "mirpanel_e2e",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            **AIRFLOW_SETTINGS,
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            **(self._celery_env() if self.celery else {}),
            **self.extra_env,
        }

    def _celery_env(self) -> dict[str, str]:
        """The Celery line: broker on our Redis, results in the metadata DB's PostgreSQL."""
        assert self.postgres is not None and self.redis is not None
        return {
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url(),
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url("airflow"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(CELERY_CONCURRENCY),
            # One message reserved per free slot, none beyond: a worker whose slots are all busy leaves
            # queued tasks to the other worker (Celery reserves concurrency × multiplier messages).
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
            # A killed worker's unacknowledged message is not handed to another worker within the run:
            # Airflow itself notices the lost task (heartbeat timeout) and schedules its retry.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
        }

    def _env_of(self, service: str) -> dict[str, str]:
        """A service's environment: a Celery worker's names it (task instances report it as their hostname)."""
        if service not in CELERY_WORKERS:
            return self.env
        return {
            **self.env,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(WORKER_PATH), self.env.get("PYTHONPATH")])),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "mirpanel_e2e_worker.hostname",
            "MIRPANEL_E2E_WORKER_HOSTNAME": self.hostname(service),
        }

    def worker_of(self, pid: int) -> str | None:
        """The Celery worker (service name) whose process tree holds ``pid``, if any."""
        for worker in CELERY_WORKERS if self.celery else ():
            if pid in {process.pid for process in self.services[worker].tree()}:
                return worker
        return None

    def wait_worker(self, worker: str, timeout: float = 180) -> None:
        """Until the Celery worker (its latest start) logs that it is ready to take tasks."""
        service = self.services[worker]
        starts = f"=== start #{service.starts}:"

        def ready() -> bool:
            text = service.log.read_text(errors="replace")
            return " ready." in text[text.rfind(starts) :]

        wait_for(f"Celery {worker} ready", ready, timeout, interval=1, check=self.check)

    def _healthy(self) -> dict[str, Any] | None:
        assert self.api is not None
        try:
            health = self.api.health()
        except (requests.RequestException, ValueError):
            return None
        components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        if all((health.get(name) or {}).get("status") == "healthy" for name in components):
            return health
        return None

    def _dags_parsed(self) -> bool:
        assert self.api is not None
        errors = self.api.get("/importErrors")
        if errors["total_entries"]:
            raise DeploymentError(
                "the example DAGs do not import:\n"
                + "\n".join(f"{error['filename']}: {error['stack_trace'][-1500:]}" for error in errors["import_errors"])
            )
        dags = {dag["dag_id"] for dag in self.api.get("/dags", limit=100)["dags"]}
        return set(EXAMPLE_DAGS) <= dags

    # -- using it -----------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise if PostgreSQL, Redis or an Airflow service died (a scenario kills and restarts on purpose)."""
        if self.postgres is not None:
            self.postgres._check()
        if self.redis is not None:
            self.redis._check()
        for service in self.services.values():
            if service.name not in self.down and not service.alive():
                raise DeploymentError(
                    f"the {service.name} exited (code {service.process and service.process.poll()})"
                    f":\n{tail(service.log)}"
                )

    def airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the ``airflow`` CLI of this deployment; raise with its output if it fails."""
        result = subprocess.run(
            [AIRFLOW, *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        with (self.logs / "cli.log").open("a") as log:
            log.write(f"$ airflow {' '.join(args)}\n{result.stdout}{result.stderr}\n")
        if result.returncode != 0:
            raise DeploymentError(
                f"airflow {' '.join(args)}: exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any]) -> None:
        """``airflow dags trigger`` (a manual run: no logical date)."""
        self.airflow("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf))

    def wait_run(
        self, dag_id: str, run_id: str, timeout: float, states: frozenset[str] = TERMINAL_RUN_STATES
    ) -> dict[str, Any]:
        assert self.api is not None
        api = self.api

        def probe() -> dict[str, Any] | None:
            run = api.dag_run(dag_id, run_id)
            return run if run["state"] in states else None

        return wait_for(f"run {run_id} of {dag_id} to end", probe, timeout, interval=1, check=self.check)

    def wait_task(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float,
    ) -> dict[str, Any]:
        """Poll a task instance until ``predicate(ti)``; fail early when its run ended first."""
        assert self.api is not None
        api = self.api

        def probe() -> dict[str, Any] | None:
            ti = api.task_instance(dag_id, run_id, task_id)
            if predicate(ti):
                return ti
            if api.dag_run(dag_id, run_id)["state"] in TERMINAL_RUN_STATES:
                states = {key: value["state"] for key, value in api.task_instances(dag_id, run_id).items()}
                raise AssertionError(f"run {run_id} ended before {task_id} {what}: {states}")
            return None

        return wait_for(f"{task_id} of {run_id} {what}", probe, timeout, interval=0.5, check=self.check)

    def meta(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on the metadata DB."""
        assert self.postgres is not None
        if self._meta is None or self._meta.closed:
            self._meta = self.postgres.connect("airflow", "airflow", self.postgres.password)
        with self._meta.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall())

    def warehouse(self, query: str, *params: Any) -> list[dict[str, Any]]:
        """Rows (as dicts) of a query on the warehouse DB of the example DAGs."""
        assert self.postgres is not None
        conn = self.postgres.connect("warehouse", "warehouse", self.postgres.password)
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                names = [column.name for column in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            conn.close()

    def restart(self, name: str) -> Service:
        service = self.services[name]
        service.start()
        self.down.discard(name)
        return service

    def kill9(self, name: str) -> list[int]:
        """``kill -9`` of a service's whole process tree; it stays down (not an error) until restarted."""
        self.down.add(name)
        return self.services[name].kill9()

    def listening(self) -> list[tuple[str, str, int]]:
        """(process, address, port) of every listening TCP socket of the deployment and of this process."""
        owners = {os.getpid(): "sandbox"}
        stores = [self.postgres.service if self.postgres else None, self.redis.service if self.redis else None]
        for service in [*self.services.values(), *stores]:
            if service is not None:
                owners.update({process.pid: service.name for process in service.tree()})
        for process in marked_processes(self.home):
            owners.setdefault(process.pid, process.name())
        return [(owners[pid], address, port) for pid, address, port in listening(owners)]

    # -- stopping -----------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop everything; return the processes that did not end on SIGTERM and were killed."""
        if self._meta is not None:
            with contextlib.suppress(Exception):
                self._meta.close()
        running = [service for service in self.services.values() if service.alive()]
        trees = [process for service in running for process in service.tree()]
        # SIGTERM to every service at once; a second one after 5 s to those still draining
        # (the scheduler's LocalExecutor waits for its workers until "signalled again").
        for service in running:
            service.send(signal.SIGTERM)
        for second in (True, False):
            deadline = time.monotonic() + (5 if second else 10)
            for service in running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    assert service.process is not None
                    service.process.wait(max(0.0, deadline - time.monotonic()))
            if second:
                for service in running:
                    service.send(signal.SIGTERM)
        survivors = [process for process in trees if alive(process)]
        killed = [describe(process) for process in survivors]
        for service in running:
            service.stop(None, grace=0)
        kill_processes(survivors, grace=0)
        self.sweep(keep_stores=True)
        if self.postgres is not None:
            self.postgres.stop()
        if self.redis is not None:
            self.redis.stop()
        self.sweep()
        return killed

    def sweep(self, keep_stores: bool = False) -> None:
        """End every process that carries this deployment's marker (also from an earlier, killed run)."""
        processes = [
            process
            for process in marked_processes(self.home)
            if not (keep_stores and process.name() in ("postgres", "postmaster", "redis-server"))
        ]
        kill_processes(processes, grace=5)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM and SIGHUP like Ctrl-C, so cleanup code runs."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class Scenario:
    """What a scenario measured; its facts are noted as it goes, so a failure still reports numbers."""

    number: int
    title: str
    started: float = field(default_factory=time.monotonic)
    facts: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.facts.append(text)

    def line(self, outcome: str) -> str:
        elapsed = time.monotonic() - self.started
        return f"scenario {self.number} {self.title}: {outcome} in {elapsed:.1f} s — " + "; ".join(self.facts)


def polls(requests_log: Sequence[Any]) -> list[list[Any]]:
    """Split ``status`` requests into polls: one poll asks about each order once (ID sets disjoint)."""
    result: list[list[Any]] = []
    seen: set[int] = set()
    for entry in requests_log:
        if entry.action != "status":
            continue
        ids = set(entry.ids)
        if not result or ids & seen:
            result.append([])
            seen = set()
        result[-1].append(entry)
        seen |= ids
    return result


def expected_requests(ids: int, per_request: int = 100) -> int:
    return math.ceil(ids / per_request)


def main() -> int:
    """Start the deployment with a sandbox panel and wait for Ctrl-C."""
    from airflow_provider_mirpanel.sandbox import SandboxPanel

    home = ROOT / ".e2e"
    deployment = Deployment(home)
    with sigterm_as_interrupt(), SandboxPanel(speed=60) as panel:
        try:
            deployment.start()
            assert deployment.api is not None
            deployment.api.add_panel_connection(panel)
            print(
                f"Airflow: http://127.0.0.1:{deployment.api_port} (user e2e, password in "
                f"{deployment.airflow_home}/simple_auth_manager_passwords.json); timings {deployment.timings}",
                flush=True,
            )
            print(f"AIRFLOW env for the CLI: see {deployment.logs}/env.sh; Ctrl-C stops everything", flush=True)
            (deployment.logs / "env.sh").write_text(
                "".join(
                    f"export {name}={json.dumps(value)}\n"
                    for name, value in deployment.env.items()
                    if name.startswith(("AIRFLOW", MARKER))
                )
            )
            while True:
                time.sleep(1)
                deployment.check()
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
        finally:
            leftovers = deployment.stop()
            if leftovers:
                print(f"killed by the sweep: {leftovers}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
