"""Debian's server packages the tests run: installed with apt-get when missing (as root).

``make e2e`` installs PostgreSQL and Redis through :func:`install_postgres` and :func:`install_redis`
when a deployment starts, and ``make bench``'s key-budget case installs Redis through the latter.
``make test`` runs ``python tests/e2e/debian.py redis-server`` before the
tests, so that the shared budgets' tests (``tests/unit/client/test_shared_budget.py``) run a real
``redis-server`` on a fresh machine too; not being root, it says what to run and they are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class DebianPackageError(Exception):
    """A Debian package the tests need could not be installed."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (Debian layout, or on PATH)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    initdb = shutil.which("initdb")
    if initdb and (Path(initdb).resolve().parent / "postgres").is_file():
        return Path(initdb).resolve().parent
    return None


def apt_install(package: str, log: Path, why: str) -> None:
    """``apt-get install`` one Debian package (as root; otherwise say what to run)."""
    if os.geteuid() != 0:
        raise DebianPackageError(f"{why} and we are not root: run `sudo apt-get install {package}` once")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("ab") as out:
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", package]):
            out.write(f"$ {' '.join(command)}\n".encode())
            out.flush()
            result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600)
            if result.returncode != 0:
                raise DebianPackageError(f"`{' '.join(command)}` failed (exit {result.returncode}); see {log}")


def install_postgres(log: Path) -> Path:
    """Install Debian's ``postgresql`` package; stop the cluster its post-install script may start."""
    apt_install("postgresql", log, "no PostgreSQL server is installed (any version >= 13 will do)")
    # The package creates and may start a "main" cluster on port 5432: not ours, stop it.
    if shutil.which("pg_lsclusters"):
        listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True)
        for line in listing.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[3] == "online":
                subprocess.run(["pg_ctlcluster", fields[0], fields[1], "stop"], capture_output=True)
    bindir = postgres_bindir()
    if bindir is None:
        raise DebianPackageError(f"PostgreSQL was installed but no server binaries were found; see {log}")
    return bindir


def install_redis(log: Path) -> Path:
    """Install Debian's ``redis-server`` package; stop the server its post-install script may start."""
    apt_install("redis-server", log, "no redis-server is installed")
    # The package may start its own server on 6379 (where an init system runs): not ours, stop it.
    if shutil.which("systemctl"):
        subprocess.run(["systemctl", "stop", "redis-server"], capture_output=True)
    elif shutil.which("service"):
        subprocess.run(["service", "redis-server", "stop"], capture_output=True)
    found = shutil.which("redis-server")
    if found is None:
        raise DebianPackageError(f"redis-server was installed but is not on PATH; see {log}")
    return Path(found)


#: What ``python tests/e2e/debian.py PACKAGE`` installs, each package named for the program it provides.
INSTALLERS: dict[str, Callable[[Path], Path]] = {"redis-server": install_redis}


def main(argv: Sequence[str] | None = None) -> int:
    """Install each package named whose program is missing; where that cannot be done, say so and go on."""
    log = ROOT / ".venv" / "apt-get.log"
    log.parent.mkdir(exist_ok=True)
    for package in argv if argv is not None else sys.argv[1:]:
        if shutil.which(package):
            continue
        print(f"installing Debian's {package} (log: {log})", flush=True)
        try:
            INSTALLERS[package](log)
        except (DebianPackageError, OSError) as error:  # not root, or no apt-get: the tests skip, saying why
            print(f"{error}; the tests that need {package} are skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
