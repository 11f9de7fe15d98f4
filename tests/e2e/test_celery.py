"""Issue 23's scenarios of the CeleryExecutor line (``make e2e-celery``): two Celery workers, one campaign.

* **13** — a mapped placement of one campaign spread over both workers: every chunk waits at a start
  gate until as many chunks run at once as the workers have slots (2 each), so both workers certainly
  run chunks; the line says which worker ran which map index (the task instance's ``hostname`` in the
  REST API; each worker reports its Celery hostname, ``deployment.py``).
* **14** — a Celery worker killed with ``kill -9`` (the worker and its task process) while its task has
  adds in flight: the scheduler notices the lost task (``[scheduler] task_instance_heartbeat_timeout``),
  the retry runs on the other worker and fails on the in-flight rows (unknown, by key), they are resolved
  with ``mirpanel_resolve_orders``, and the campaign again completes — 0 bought twice.

Both use issue 20's DAGs and accounts (``test_concurrency.py``: the ledger read through the REST API, the
panel's own order list). Deselected on the LocalExecutor line (``conftest.py``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from campaigns import panel_orders, write_campaign
from deployment import CELERY_CONCURRENCY, CELERY_WORKERS, Scenario, settled, wait_for
from test_concurrency import (
    PLACE,
    RESOLVE,
    TASK,
    UNRESOLVED,
    Setting,
    accounts,
    check,
    held_by,
    new_gate,
    read_ledger,
    setting,  # noqa: F401  (issue 20's module fixture, here too)
    task_states,
)

from airflow_provider_mirpanel.sandbox import SandboxPanel

pytestmark = [pytest.mark.e2e, pytest.mark.celery]

SPREAD = "mirpanel_e2e_place_spread"


@pytest.fixture(scope="module")
def spread(setting: Setting) -> Iterator[Setting]:  # noqa: F811  (the imported fixture)
    """Issue 20's setting (the panel at 0.25 s per reply, the e2e DAGs unpaused), and ``SPREAD`` unpaused."""
    api, deployment = setting.api, setting.deployment
    wait_for(
        f"{SPREAD} parsed by the dag-processor",
        lambda: any(dag["dag_id"] == SPREAD for dag in api.get("/dags", limit=100, dag_id_pattern=SPREAD)["dags"]),
        180,
        interval=1,
        check=deployment.check,
    )
    api.set_paused(SPREAD, False)
    try:
        yield setting
    finally:
        api.set_paused(SPREAD, True)


def worker_named(here: Setting, hostname: str | None) -> str:
    """``worker1`` for ``worker1@<host>``; fails on a hostname no worker of ours reports."""
    names = {here.deployment.hostname(worker): worker for worker in CELERY_WORKERS}
    assert hostname in names, f"hostname {hostname!r} is none of our workers' {sorted(names)}"
    return names[hostname]


def mapped(here: Setting, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    reply = here.api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{TASK}/listMapped", limit=100)
    return sorted(reply["task_instances"], key=lambda ti: ti["map_index"])


@pytest.mark.scenario(13, "mapped placement of one campaign spread over both Celery workers")
@pytest.mark.timeout(600)
def test_mapped_placement_over_both_workers(spread: Setting, sandbox: SandboxPanel, scenario: Scenario) -> None:
    here = spread
    deployment, api = here.deployment, here.api
    scope, run_id = "e2e-spread", "e2e_spread"
    chunks = CELERY_CONCURRENCY * len(CELERY_WORKERS)  # every slot of both workers
    path, rows = write_campaign(deployment.home, scope, 48)
    gate = new_gate(deployment, scope)
    scenario.started = time.monotonic()
    api.trigger(SPREAD, run_id, {"scope": scope, "campaign_csv": str(path), "chunks": chunks, "gate": str(gate)})

    # Each worker runs at most CELERY_CONCURRENCY tasks at once: all chunks running means both run some.
    def all_at_the_gate() -> list[dict[str, Any]] | None:
        tis = mapped(here, SPREAD, run_id)
        reached = list(gate.parent.glob(f"{gate.name}.{run_id}.*.reached"))
        running = [ti for ti in tis if ti["state"] == "running" and ti["hostname"]]
        return tis if len(tis) == chunks and len(running) == chunks and len(reached) == chunks else None

    started = wait_for(f"{chunks} chunks running at the start gate", all_at_the_gate, 300, check=deployment.check)
    at_gate = {ti["map_index"]: worker_named(here, ti["hostname"]) for ti in started}
    gate.write_text("open")
    scenario.note(
        "at the start gate: " + ", ".join(f"map index {index} on {worker}" for index, worker in sorted(at_gate.items()))
    )
    run = deployment.wait_run(SPREAD, run_id, timeout=480)
    tis = mapped(here, SPREAD, run_id)
    states = Counter(ti["state"] for ti in tis)
    ended = {ti["map_index"]: worker_named(here, ti["hostname"]) for ti in tis}
    scenario.note(
        f"run {run['state']}: {dict(states)}; placed (after waiting for the scope) by "
        + ", ".join(f"{index} {worker}" for index, worker in sorted(ended.items()))
    )
    result = accounts(api, here.asset_id, sandbox, scope, rows)
    check(result, scenario)
    assert Counter(at_gate.values()) == {worker: CELERY_CONCURRENCY for worker in CELERY_WORKERS}, at_gate
    assert run["state"] == "success" and states == {"success": chunks}, states
    assert result.orders == len(rows), result.text()


@pytest.mark.scenario(14, "Celery worker killed (kill -9) mid-placement → retry on the other worker → resolve")
@pytest.mark.timeout(900)
def test_worker_killed_mid_placement(spread: Setting, sandbox: SandboxPanel, scenario: Scenario) -> None:
    here = spread
    deployment, api = here.deployment, here.api
    scope, run_id, again = "e2e-worker-kill", "e2e_worker_kill", "e2e_worker_kill_again"
    path, rows = write_campaign(deployment.home, scope, 24)
    conf = {"scope": scope, "campaign_csv": str(path)}
    steps: list[str] = []
    # Every add of this campaign is processed at once and its reply held back: the worker dies with
    # orders paid for and not recorded (as many as the task has in flight).
    slow = sandbox.faults.add(
        "add", "delay_after_processing", seconds=600, times=None, when=lambda form: scope in form.get("link", "")
    )
    killed_worker = None
    scenario.started = time.monotonic()
    try:
        try:
            api.trigger(PLACE, run_id, conf)
            wait_for("adds in flight at the panel", lambda: slow.applied, 300, interval=0.2, check=deployment.check)
            wait_for("the task to send all it sends at once", settled(lambda: slow.applied), 60, interval=0.5)
            ti = api.task_instance(PLACE, run_id, TASK)
            assert ti["state"] == "running" and ti["pid"] and ti["try_number"] == 1, ti
            killed_worker = worker_named(here, ti["hostname"])
            assert deployment.worker_of(ti["pid"]) == killed_worker, (ti["pid"], killed_worker)
            killed = deployment.kill9(killed_worker)
            killed_at = time.monotonic()
        finally:
            sandbox.faults.remove(slow)
        in_flight = slow.applied
        assert ti["pid"] in killed and 0 < in_flight < len(rows), (ti["pid"], killed, in_flight)
        steps.append(
            f"killed {killed_worker} ({len(killed)} processes, task process {ti['pid']} among them) "
            f"{killed_at - scenario.started:.1f} s after the trigger, {in_flight} adds in flight"
        )
        other = next(worker for worker in CELERY_WORKERS if worker != killed_worker)

        def since() -> str:
            return f"{time.monotonic() - killed_at:.1f} s"

        deployment.wait_task(
            PLACE,
            run_id,
            TASK,
            lambda ti: ti["try_number"] >= 2 or ti["state"] != "running",
            "no longer running try 1",
            timeout=300,
        )
        steps.append(f"lost task noticed (try 1 failed, retry scheduled) after {since()}")
        retry = deployment.wait_task(
            PLACE,
            run_id,
            TASK,
            lambda ti: ti["try_number"] == 2 and ti["state"] in ("running", "success", "failed"),
            "started its retry",
            timeout=300,
        )
        steps.append(f"try 2 started on {worker_named(here, retry['hostname'])} after {since()}")
        run = deployment.wait_run(PLACE, run_id, timeout=300)
        final = api.task_instance(PLACE, run_id, TASK)
        steps.append(
            f"run {run['state']} after try {final['try_number']} on "
            f"{worker_named(here, final['hostname'])} after {since()}"
        )
        assert final["try_number"] == 2 and worker_named(here, final["hostname"]) == other, final
        assert run["state"] == "failed", task_states(api, PLACE, run_id)

        # The retry placed the rest and failed on the rows whose adds were in flight: unknown, by key.
        ledger = read_ledger(api, here.asset_id, scope)
        unknown = sorted(key for key, row in ledger.entries.items() if row[1] in UNRESOLVED)
        log = api.task_log(PLACE, run_id, TASK, 2)
        unnamed = [key for key in unknown if key not in log]
        assert len(unknown) == in_flight and not unnamed, (unknown, in_flight, unnamed)
        assert held_by(api, here.asset_id, scope, run_id) is None  # the retry released the scope
        steps.append(f"the retry reported the {len(unknown)} in-flight rows unknown by key")

        # Resolved as a user would: each row's order looked up on the panel by its link.
        by_link = {row["key"]: row["link"] for row in rows}
        orders = {order.link: order.id for order in list(sandbox.state.orders.values())}
        resolutions: dict[str, int | str] = {key: orders.get(by_link[key], "not_placed") for key in unknown}
        found = sum(1 for value in resolutions.values() if value != "not_placed")
        api.set_paused(RESOLVE, False)
        try:
            api.trigger(RESOLVE, "e2e_worker_kill_resolve", {"campaign": scope, "resolutions": resolutions})
            resolved = deployment.wait_run(RESOLVE, "e2e_worker_kill_resolve", timeout=300)
        finally:
            api.set_paused(RESOLVE, True)
        assert resolved["state"] == "success", task_states(api, RESOLVE, "e2e_worker_kill_resolve")
        assert found == in_flight, (resolutions, in_flight)
        steps.append(f"resolved with {RESOLVE} ({found} by their order on the panel) after {since()}")

        api.trigger(PLACE, again, conf)
        third = deployment.wait_run(PLACE, again, timeout=300)
        steps.append(f"the campaign again: {third['state']} after {since()}")
        scenario.note("; ".join(steps))
        steps.clear()
        check(accounts(api, here.asset_id, sandbox, scope, rows), scenario)
        assert third["state"] == "success", task_states(api, PLACE, again)
        assert all(len(ids) == 1 for ids in panel_orders(sandbox, rows).values())
    finally:
        if steps:
            scenario.note("; ".join(steps))
        if killed_worker is not None:
            deployment.restart(killed_worker)
            deployment.wait_worker(killed_worker)
