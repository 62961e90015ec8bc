"""Parked upstream keys as this process sees them: (provider, key) → (until, why)."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Parking"]


class Parking:
    """Keys that failed auth or were rate limited, until a monotonic time; read on every pick."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.parked: dict[tuple[str, str], tuple[float, str]] = {}

    def until(self, provider: str, key: str) -> float:
        return self.parked.get((provider, key), (0.0, ""))[0]

    def put(self, provider: str, key: str, seconds: float, why: str) -> None:
        """Park for ``seconds`` from now (the latest parking wins, as in Redis)."""
        self.parked[(provider, key)] = (self.clock() + seconds, why)

    def status(self) -> dict[str, dict[str, str]]:
        """Parked keys per provider, with the reason (for /healthz)."""
        now = self.clock()
        out: dict[str, dict[str, str]] = {}
        for (provider, key), (until, why) in list(self.parked.items()):
            if until > now:
                out.setdefault(provider, {})[key] = f"{why}; {until - now:.0f} s left"
            else:
                del self.parked[(provider, key)]  # bounded by the configured keys anyway
        return out
