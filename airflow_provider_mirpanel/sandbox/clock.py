"""The sandbox clock: real time sped up (or frozen), and moved forward on demand."""

from __future__ import annotations

import threading
import time


class SandboxClock:
    """Sandbox seconds since the panel was created.

    ``speed`` is sandbox seconds per real second (0 freezes the clock, so only :meth:`advance`
    moves it). Changing ``speed`` never makes the clock jump.
    """

    def __init__(self, speed: float = 1.0):
        if speed < 0:
            raise ValueError(f"speed must not be negative, got {speed}")
        self._lock = threading.Lock()
        self._speed = float(speed)
        self._base = 0.0  # sandbox time at the real instant _since
        self._since = time.monotonic()

    def now(self) -> float:
        """Return the current sandbox time in seconds."""
        with self._lock:
            return self._base + (time.monotonic() - self._since) * self._speed

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` sandbox seconds."""
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        with self._lock:
            self._base += seconds

    @property
    def speed(self) -> float:
        """Sandbox seconds per real second."""
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"speed must not be negative, got {value}")
        with self._lock:
            real = time.monotonic()
            self._base += (real - self._since) * self._speed
            self._since = real
            self._speed = float(value)
