"""The base of both hooks: the ``mirpanel`` connection they read and the request budgets they keep."""

from __future__ import annotations

from airflow_provider_mirpanel.client.calls import PanelConnection
from airflow_provider_mirpanel.client.ratelimit import SYSTEM_CLOCK, BudgetClock, Clock, RateLimiter
from airflow_provider_mirpanel.client.shared_budget import RedisBudget
from airflow_provider_mirpanel.version_compat import BaseHook


class MirPanelBaseHook(BudgetClock, BaseHook):
    """Base of this provider's hooks: the connection (read once per hook) and its request budgets.

    :param mirpanel_conn_id: the Airflow connection to use.
    """

    conn_name_attr = "mirpanel_conn_id"
    default_conn_name = "mirpanel_default"
    conn_type = "mirpanel"

    def __init__(self, mirpanel_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.mirpanel_conn_id = mirpanel_conn_id
        self._panel: PanelConnection | None = None
        self._clock: Clock = SYSTEM_CLOCK
        self._limiter = RateLimiter()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mirpanel_conn_id={self.mirpanel_conn_id!r})"

    def _rate_limiter(self, panel: PanelConnection, shared_budget: RedisBudget | None) -> RateLimiter:
        """Return the request budgets the connection's settings name, kept in this hook's clock."""
        return RateLimiter(panel.settings.rate_limits, panel.settings.rate_limit, self._clock, shared_budget)
