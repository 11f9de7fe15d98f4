"""Steer the sandbox panel from a test when the code under test reaches a given point.

Tests never bet on how long something takes: the sandbox clock stands still (or a fault holds) until
the panel's request log shows that the DAG, sensor or trigger got where the test wants it, and only
then does the test move the clock, end orders or take the panel down.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator


def wait_for(condition: Callable[[], bool], limit: float = 60.0) -> None:
    """Block until ``condition()`` is true; fail after ``limit`` seconds (a safety net, not a timing)."""
    give_up = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < give_up, "the condition never came true"
        time.sleep(0.005)


@contextlib.contextmanager
def once(condition: Callable[[], bool], action: Callable[[], object], limit: float = 300.0) -> Iterator[None]:
    """Inside the block, run ``action`` in a background thread as soon as ``condition()`` is true."""
    stop = threading.Event()

    def watch() -> None:
        give_up = time.monotonic() + limit
        while not stop.is_set() and time.monotonic() < give_up:
            if condition():
                action()
                return
            stop.wait(0.005)

    watcher = threading.Thread(target=watch, name="steering", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
