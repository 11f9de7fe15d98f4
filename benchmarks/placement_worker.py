"""One placement of the key-budget case, in a process of its own (a stand-in for a worker's task).

``python -m benchmarks.placement_worker --scope k1 --n 250 --service 1 --quantity 10 --prefix URL``
places ``n`` orders with ``PlaceOrderOperator`` on ``mirpanel_default`` (its connection comes from
``AIRFLOW_CONN_MIRPANEL_DEFAULT``), in its own ledger scope. It imports and reads the connection
first, prints ``{"ready": true}`` (its lines start with :data:`MARK`), waits for a line on stdin so
that every worker starts at once, places, and prints one JSON line: when it started and ended
(``time.monotonic``, the same clock in every process of the machine) and how many orders ended in
each state.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

#: What starts the worker's own lines on stdout (Airflow's loggers may print there too).
MARK = "@placement@ "


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scope", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--service", type=int, required=True)
    parser.add_argument("--quantity", type=int, required=True)
    parser.add_argument("--prefix", required=True, help="the orders' links start with this")
    parser.add_argument(
        "--no-follow",
        action="store_true",
        help="ignore the panel's rate-limit headers (429s go to the retry policy, as in 0.2)",
    )
    args = parser.parse_args(argv)

    from benchmarks.__main__ import _quiet

    _quiet()
    from airflow_provider_mirpanel.operators.mirpanel import PlaceOrderOperator
    from airflow_provider_mirpanel.placement.run import OrdersNotPlacedError
    from airflow_provider_mirpanel.utils.state_stores import MemoryStateStore

    rows = [
        {"service": args.service, "link": f"{args.prefix}{args.scope}/{i}", "quantity": args.quantity}
        for i in range(args.n)
    ]
    operator = PlaceOrderOperator(task_id=f"place_{args.scope}", orders=rows)
    operator.hook.panel  # noqa: B018 -- reads the connection (and makes the budgets) before the start
    operator.hook._limiter.follow_panel = not args.no_follow
    print(MARK + json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    start = time.monotonic()
    context: Any = {"task_state_store": MemoryStateStore()}  # the part of a task's context placement reads
    try:
        records = operator.execute(context)
    except OrdersNotPlacedError as error:
        records = error.records
    end = time.monotonic()
    print(
        MARK + json.dumps({"start": start, "end": end, "states": dict(Counter(str(r["state"]) for r in records))}),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
