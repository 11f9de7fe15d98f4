"""``make demo``'s balance watch: the AssetWatcher's BalanceTrigger run in this process, as a triggerer would.

``airflow dags test`` has no triggerer and no scheduler, so an event-driven DAG cannot start itself
there. This script stands in for the triggerer, with Airflow's own pieces:

1. it takes the ``BalanceTrigger`` of the ``mirpanel_balance_low`` asset's watcher from the parsed
   DAG file ``dags_examples/mirpanel_balance_watch.py`` and the trigger row the DAG processor made
   for it (``airflow dags reserialize``);
2. runs the trigger's ``run()`` against the panel until its first event, then ``--after`` more polls
   (nothing more may fire), then a *new* instance of the trigger with the same state store — a
   triggerer restart — for ``--after`` polls (nothing may fire either);
3. hands each event to ``Trigger.submit_event``, as the triggerer does: the asset gets its event.

The state store here is in memory (the triggerer's is the asset state store in the metadata DB).
Prints one line per event and the asset's event count; exits 1 if the count of events is not one.
Run with the demo's Airflow environment (``scripts/demo.py`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

DAGS = Path(__file__).resolve().parent.parent / "dags_examples"
ASSET = "mirpanel_balance_low"


def watched_trigger() -> tuple[Any, int]:
    """The watcher's trigger from the DAG file, and the ID of its row in the metadata DB."""
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    sys.path.insert(0, str(DAGS))
    import mirpanel_balance_watch as dag_file

    trigger = dag_file.BALANCE_LOW.watchers[0].trigger
    with create_session() as session:
        asset = session.scalars(select(AssetModel).where(AssetModel.name == ASSET)).one()
        rows = [row for row in asset.triggers if row.classpath.endswith(".BalanceTrigger")]
        if not rows:
            raise SystemExit(f"no trigger row for {ASSET}: run `airflow dags reserialize` first")
        return trigger, rows[-1].id


async def watch(trigger: Any, store: Any, until_event: bool, after: int, limit: float = 300.0) -> list[dict[str, Any]]:
    """Run ``trigger`` with ``store`` (until its first event, if ``until_event``), then ``after`` more polls."""
    trigger.asset_state_store = store
    events: list[dict[str, Any]] = []

    async def collect() -> None:
        async for event in trigger.run():
            events.append(event.payload)
            print(f"  trigger fired: {event.payload['message']}", flush=True)

    runner = asyncio.ensure_future(collect())
    if until_event:
        while store.writes == 0:  # the first poll, which records the starting balance
            await asyncio.sleep(0.01)
        print("  first poll done: the balance is fine", flush=True)
    waited = 0.0
    while until_event and not events and waited < limit:
        await asyncio.sleep(0.05)
        waited += 0.05
    await asyncio.sleep(after * trigger.poll_interval)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    return events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--after", type=int, default=3, help="polls to keep watching after the event")
    args = parser.parse_args(argv)

    from airflow.models.trigger import Trigger
    from airflow.triggers.base import TriggerEvent

    from airflow_provider_mirpanel.triggers.balance import BalanceTrigger
    from airflow_provider_mirpanel.utils.fallback_stores import InProcessWatchStore

    trigger, trigger_id = watched_trigger()
    print(f"  watching: {trigger!r} (trigger row {trigger_id})", flush=True)
    store = InProcessWatchStore()
    before = asset_event_count()
    events = asyncio.run(watch(trigger, store, until_event=True, after=args.after))
    print(f"  {len(events)} event(s) up to {args.after} polls after the crossing; restarting the trigger", flush=True)
    restarted = BalanceTrigger(**trigger.serialize()[1])
    events += asyncio.run(watch(restarted, store, until_event=False, after=args.after))
    print(f"  {len(events)} event(s) in all, after {args.after} polls of the restarted trigger", flush=True)
    sys.stdin.readline()  # the caller says when the metadata DB is free (the campaign run has ended)
    for payload in events:
        Trigger.submit_event(trigger_id, TriggerEvent(payload))
    added = asset_event_count() - before
    print(f"  Trigger.submit_event: asset {ASSET!r} got {added} new event(s)", flush=True)
    return 0 if len(events) == 1 and added == 1 else 1


def asset_event_count() -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        query = select(func.count()).select_from(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        return int(session.scalar(query.where(AssetModel.name == ASSET)) or 0)


if __name__ == "__main__":
    sys.exit(main())
