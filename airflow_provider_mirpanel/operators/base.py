"""The base of this provider's operators: the connection, the hook, and how choices are checked."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any, ClassVar

from airflow_provider_mirpanel.assets.lineage import panel_lineage
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.version_compat import BaseOperator


def choice(name: str, value: str, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else ValueError naming the parameter (refused at DAG parse)."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def as_list(value: Any) -> list[Any]:
    """Return an operator argument that takes one item or several (``inlets``, ``outlets``) as a list; None as []."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class MirPanelBaseOperator(BaseOperator):
    """Base of this provider's operators: the connection and the hook.

    :param mirpanel_conn_id: the Airflow connection of the panel (host: API URL, password: API key).
    """

    #: The panel datasets (:mod:`~airflow_provider_mirpanel.assets.lineage`) this operator reads and writes.
    lineage_inputs: ClassVar[tuple[str, ...]] = ()
    lineage_outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, mirpanel_conn_id: str = MirPanelHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mirpanel_conn_id = mirpanel_conn_id

    @cached_property
    def hook(self) -> MirPanelHook:
        """The hook of ``mirpanel_conn_id`` (one per operator instance, its HTTP session reused)."""
        return MirPanelHook(mirpanel_conn_id=self.mirpanel_conn_id)

    def lineage_datasets(self) -> tuple[Sequence[str], Sequence[str]]:
        """Return the panel datasets this task read and wrote (``lineage_inputs``, ``lineage_outputs``)."""
        return self.lineage_inputs, self.lineage_outputs

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the panel (``mirpanel://<host>``) datasets read and written; None without OpenLineage."""
        inputs, outputs = self.lineage_datasets()
        return panel_lineage(self.hook.settings.url, inputs, outputs)
