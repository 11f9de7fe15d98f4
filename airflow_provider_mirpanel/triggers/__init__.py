"""Triggers run by Airflow's triggerer.

The triggerer imports a trigger's module on the event loop that runs every trigger, so trigger
modules do not import the async hook (aiohttp and its dependencies, ~0.1 s): a trigger gets its
class from :func:`async_hook_class` in a thread when it first runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_mirpanel.hooks.mirpanel_async import MirPanelAsyncHook

#: ``MirPanelAsyncHook.default_conn_name``, without importing the hook (and aiohttp).
DEFAULT_CONN_ID = "mirpanel_default"


def classpath_of(trigger: object) -> str:
    """Return the class path ``serialize()`` stores: where the triggerer imports the trigger's class from.

    It is written into the metadata DB with every deferral and ``AssetWatcher``; a class that moves
    keeps a re-export at its old path so that stored triggers resume.
    """
    return f"{type(trigger).__module__}.{type(trigger).__qualname__}"


def async_hook_class() -> type[MirPanelAsyncHook]:
    """Return the async hook's class; its module (aiohttp and friends) is imported on first use.

    Call it off the event loop: ``await asyncio.to_thread(async_hook_class)``.
    """
    from airflow_provider_mirpanel.hooks.mirpanel_async import MirPanelAsyncHook

    return MirPanelAsyncHook
