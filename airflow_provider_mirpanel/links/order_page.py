"""The extra link of order-producing tasks: the panel's page of the order a task placed.

Panels differ (and many have no page per order), so the URL comes from the connection's extra
``order_url``, a pattern with ``{order}`` for the order ID, e.g.
``https://mirpanel.com/orders?search={order}``. Unset, not http(s), or no placed order: no link.
The pattern is the connection's; the API key is never part of it.

In Airflow 3 the task process computes the link when the task ends (and stores it in XCom for the
UI): :class:`PanelOrderLink` reads the URL that ``PlaceOrderOperator`` pushed with
:data:`ORDER_URL_XCOM_KEY`. Nothing here talks to the panel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: The connection extra holding the order page's URL pattern.
ORDER_URL_EXTRA = "order_url"
#: The XCom key under which ``PlaceOrderOperator`` leaves the order page's URL.
ORDER_URL_XCOM_KEY = "mirpanel_order_url"


def order_page_url(pattern: Any, records: Sequence[Mapping[str, Any]]) -> str | None:
    """Return the order page of the first placed order in ``records``, or None (no pattern, no placed order).

    ``{order}`` in ``pattern`` becomes the order ID (no other placeholder is read). A pattern that is
    not an http(s) URL gives no link.
    """
    if not isinstance(pattern, str) or urlsplit(pattern.strip()).scheme not in ("http", "https"):
        return None
    orders = [record.get("order") for record in records if record.get("state") == "placed" and record.get("order")]
    if not orders:
        return None
    return pattern.strip().replace("{order}", quote(str(orders[0]), safe=""))


class PanelOrderLink(BaseOperatorLink):
    """Link to the panel's page of the (first) order the task placed: the "Panel order" extra link.

    .. seealso::
        ``docs/reference.md``, "PanelOrderLink": what it does, returns and raises.
    """

    name = "Panel order"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """Return the URL ``PlaceOrderOperator`` pushed for this task instance, or ``""``."""
        pull = getattr(ti_key, "xcom_pull", None)  # Airflow 3 calls this in the task process with its ti
        if pull is not None:
            value = pull(task_ids=ti_key.task_id, key=ORDER_URL_XCOM_KEY, map_indexes=ti_key.map_index)
        else:
            from airflow.sdk.execution_time.xcom import XCom

            value = XCom.get_value(ti_key=ti_key, key=ORDER_URL_XCOM_KEY)
        return value if isinstance(value, str) else ""
