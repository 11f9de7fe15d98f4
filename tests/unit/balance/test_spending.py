"""Balance alerts that see it coming: the spend rate, and BalanceCheckOperator's projection against the sandbox.

BalanceTrigger's side (firing once per crossing, also across restarts) is in ``unit/triggers/test_balance.py``."""

from __future__ import annotations

import json
import time

import pytest
from support.balance import HOUR, spending_history
from support.stores import MemoryAssetStores
from support.task_context import task_context

from airflow_provider_mirpanel.assets.events import balance_asset
from airflow_provider_mirpanel.balance.spending import BalanceHistory, spend_rate
from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.operators.mirpanel import HISTORY_KEY, BalanceCheckOperator
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel
from airflow_provider_mirpanel.triggers.balance import BalanceTrigger
from airflow_provider_mirpanel.version_compat import AirflowFailException


@pytest.fixture(autouse=True)
def fast_retries(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hook retries in milliseconds, so that fault tests stay fast."""
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(backoff=0.01, retries=1)))


def test_spend_rate_counts_drops_per_hour_and_leaves_top_ups_out() -> None:
    readings = [(0.0, 100.0), (HOUR, 90.0), (2 * HOUR, 190.0), (3 * HOUR, 170.0)]  # a top-up of 100 in between
    assert spend_rate(readings) == pytest.approx(10.0)  # 10 + 20 spent over 3 h
    assert spend_rate(readings[:1]) is None


def test_the_history_stays_small_and_recent() -> None:
    history = BalanceHistory()
    for minute in range(0, 48 * 60, 5):  # two days of readings every 5 minutes
        history = history.with_reading(minute * 60.0, 1000.0 - minute)
    assert len(history.samples) <= 48
    assert history.samples[0][0] >= history.samples[-1][0] - 24 * HOUR
    assert len(json.dumps(history.to_json())) < 1500


def test_the_operator_projects_the_run_out_from_the_history_in_the_asset_state_store(panel: SandboxPanel) -> None:
    stores = MemoryAssetStores()
    store = stores[balance_asset("mirpanel_default")]
    store.set(HISTORY_KEY, spending_history(time.time(), start=1100.0, per_hour=10.0, hours=10))
    operator = BalanceCheckOperator(task_id="balance", min_balance=100, runs_out_within_hours=120)

    with pytest.raises(AirflowFailException) as low:
        operator.execute(task_context(asset_state_store=stores))

    # 1,100 -> 1,010 over 9 h, then 1,000 an hour later: 10 USD per hour, 100 hours left.
    message = str(low.value)
    assert message.startswith(
        "balance 1,000.00 USD runs out within 120 h (threshold minimum 100.00 USD or "
        "runs out within 120 h); spend rate 10.00 USD/h: it runs out in about 100.0 h (at 20"
    )
    assert panel.count("balance") == 1
    assert len(store.get(HISTORY_KEY)) == 11  # this reading joined the history


def test_a_slow_spend_passes_and_says_when_it_would_run_out(
    panel: SandboxPanel, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = MemoryAssetStores()
    stores[balance_asset("mirpanel_default")].set(HISTORY_KEY, [[time.time() - 10 * HOUR, 1001.0]])
    record = BalanceCheckOperator(task_id="balance", min_balance=100, runs_out_within_hours=24).execute(
        task_context(asset_state_store=stores)
    )
    assert record["balance"] == 1000.0
    out = capsys.readouterr().out
    assert "balance 1,000.00 USD is fine" in out and "it runs out in about 10,000.0 h" in out


def test_bad_thresholds_are_refused_before_any_request(panel: SandboxPanel) -> None:
    with pytest.raises(MirPanelInputError, match="runs_out_within_hours must be a non-negative number"):
        BalanceCheckOperator(task_id="balance", runs_out_within_hours="soon").execute({})
    with pytest.raises(MirPanelInputError, match="min_balance"):
        BalanceTrigger(min_balance=-1)
    with pytest.raises(MirPanelInputError, match="needs min_balance, runs_out_within_hours or both"):
        BalanceTrigger()
    assert panel.count() == 0
