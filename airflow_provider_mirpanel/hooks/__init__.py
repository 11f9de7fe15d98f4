"""Hooks: the sync ``MirPanelHook`` (``requests``) and the async ``MirPanelAsyncHook`` (``aiohttp``)."""
