"""Who may see what on the MirPanel page: the auth manager's answers, asked once per DAG and asset per request.

- the page and its JSON: a user allowed the ``PLUGINS`` view (checked by the app's dependency);
- a campaign: a user who may read the DAG runs of a DAG that wrote or owns its ledger (the lease's owner,
  the writers of its pages, the sources of its events), or one of its assets (the ledger asset, the
  campaign event assets);
- a balance history: a user who may read the asset keeping it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_mirpanel.plugins.gather import Campaign


class Access:
    """The permissions of one user, asked of Airflow's auth manager and remembered for one request."""

    def __init__(self, user: Any, auth_manager: Any = None) -> None:
        if auth_manager is None:
            from airflow.api_fastapi.app import get_auth_manager

            auth_manager = get_auth_manager()
        self.user = user
        self.auth_manager = auth_manager
        self._dag_runs: dict[str, bool] = {}
        self._assets: dict[int, bool] = {}

    def may_read_dag_runs(self, dag_id: str) -> bool:
        """Return whether the user may read the runs of DAG ``dag_id``."""
        if dag_id not in self._dag_runs:
            from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

            self._dag_runs[dag_id] = bool(
                self.auth_manager.is_authorized_dag(
                    method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=self.user
                )
            )
        return self._dag_runs[dag_id]

    def may_read_asset(self, asset_id: int) -> bool:
        """Return whether the user may read the asset ``asset_id``."""
        if asset_id not in self._assets:
            from airflow.api_fastapi.auth.managers.models.resource_details import AssetDetails

            self._assets[asset_id] = bool(
                self.auth_manager.is_authorized_asset(
                    method="GET", details=AssetDetails(id=str(asset_id)), user=self.user
                )
            )
        return self._assets[asset_id]

    def may_see_campaign(self, campaign: Campaign) -> bool:
        """Return whether the user may see ``campaign``: its DAG's runs or its ledger asset."""
        return any(self.may_read_asset(asset_id) for asset_id in sorted(campaign.asset_ids)) or any(
            self.may_read_dag_runs(dag_id) for dag_id in sorted(campaign.dag_ids)
        )
