"""Shared test fixtures."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from airflow_provider_mirpanel.sandbox import SandboxPanel

# Airflow creates its home (config, logs) when imported: keep test runs out of the user's ~/airflow.
# Set before anything imports Airflow, hence the lazy imports below.
os.environ.setdefault("AIRFLOW_HOME", str(Path(tempfile.gettempdir()) / "airflow-provider-mirpanel-tests"))

#: The example DAGs' folder.
EXAMPLE_DAGS = Path(__file__).resolve().parent.parent / "dags_examples"

#: Clock speed of the ``panel`` fixture: an order is Pending for 0.06 s and ends within 0.3 s.
FAST_SPEED = 1000.0


@pytest.fixture(autouse=True)
def lease_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Scope leases in this process wait on a clock that skips ahead instead of sleeping (tests/support/lease_clock.py).

    A test that needs real waiting (threads racing for a lease) sets ``lease.DEFAULT_CLOCK`` back.
    """
    from support.lease_clock import SkippingClock

    from airflow_provider_mirpanel.placement import lease

    clock = SkippingClock()
    monkeypatch.setattr(lease, "DEFAULT_CLOCK", clock)
    yield clock


@pytest.fixture
def panel(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxPanel]:
    """A running sandbox panel with a fast clock; ``mirpanel_default`` points at it.

    It sells the packaged real catalogue (parsed once per process), starts with a balance of 1000
    USD and a random key, and follows the default ``Lifecycle`` (every 5th order ends Partial, every
    4th refill is Rejected). Its IDs are the same in every run: orders from 1000, refills from 1.
    ``AIRFLOW_CONN_MIRPANEL_DEFAULT`` is set for the test's duration.
    """
    from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel

    with SandboxPanel(speed=FAST_SPEED, first_order_id=1000, first_refill_id=1) as sandbox:
        monkeypatch.setenv(CONN_ENV_VAR, sandbox.connection_json())
        yield sandbox


@pytest.fixture(scope="module")
def warehouse() -> Iterator[ModuleType]:
    """dags_examples/mirpanel_examples/warehouse.py, imported as the DAGs import it (the DAGs folder on sys.path)."""
    sys.path.insert(0, str(EXAMPLE_DAGS))
    try:
        from mirpanel_examples import warehouse

        yield warehouse
    finally:
        sys.path.remove(str(EXAMPLE_DAGS))
