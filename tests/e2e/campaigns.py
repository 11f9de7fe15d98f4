"""Campaigns of the e2e scenarios: files of generated rows, and the panel's orders for them.

Every row's link is unique and carries the campaign's tag, so the sandbox panel's own order list
tells which row each order was bought for (and how many times).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_mirpanel.sandbox import SandboxPanel

#: Services of the example campaign file, cycled through by the generated campaigns.
SERVICES = (
    (8094, "https://www.tiktok.com/@mirpanel.e2e/video/{tag}-{n}", 1000),
    (4663, "https://t.me/mirpanel_e2e/{tag}-{n}", 500),
    (7276, "https://www.tiktok.com/@mirpanel.e2e/live/{tag}-{n}", 300),
)


def write_campaign(folder: Path, tag: str, rows: int) -> tuple[Path, list[dict[str, Any]]]:
    """A campaign file of ``rows`` orders whose links are unique and carry ``tag``."""
    orders = []
    for n in range(1, rows + 1):
        service, link, quantity = SERVICES[(n - 1) % len(SERVICES)]
        orders.append(
            {"key": f"{tag}-{n:03d}", "service": service, "link": link.format(tag=tag, n=n), "quantity": quantity}
        )
    path = folder / "campaigns" / f"{tag}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["key", "service", "link", "quantity"])
        writer.writeheader()
        writer.writerows(orders)
    return path, orders


def panel_orders(panel: SandboxPanel, rows: Iterable[dict[str, Any]]) -> dict[str, list[int]]:
    """The panel's order IDs for each campaign row (matched on service, link and quantity)."""
    wanted = {(row["service"], row["link"], row["quantity"]): row["key"] for row in rows}
    found: dict[str, list[int]] = {key: [] for key in wanted.values()}
    for order in list(panel.state.orders.values()):
        key = wanted.get((order.service, order.link, order.quantity))
        if key is not None:
            found[key].append(order.id)
    return found


def bought_twice(orders: dict[str, list[int]]) -> int:
    return sum(max(0, len(ids) - 1) for ids in orders.values())
