"""Hooks: the sync ``MirPanelHook`` (``requests``) and the async ``MirPanelAsyncHook`` (``aiohttp``).

Both stand on ``MirPanelBaseHook`` (:mod:`.base`): the connection they read and its request budgets.
"""
