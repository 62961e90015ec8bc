"""What a running app holds beyond its config; swapped as a whole config on SIGHUP."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from finopsd.router import KeyPool
from finopsd.scrub import Scrubber, config_secrets

if TYPE_CHECKING:
    from finopsd.config import Config
    from finopsd.keystore import KeyStore
    from finopsd.relay import Hook


@dataclass
class Runtime:
    config: Config
    hooks: tuple[Hook, ...] = ()
    keys: KeyPool = field(default_factory=KeyPool)  # parked upstream keys survive a reload
    # set by the upstream-session cleanup context
    session: aiohttp.ClientSession = field(init=False)
    # provider → models found at its upstream /models, for providers whose config lists none
    discovered: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dashboard: KeyStore | None = None  # keys and teams made through the admin API
    _effective: tuple[Config, int, Config] | None = field(default=None, init=False, repr=False)
    _scrubber: Scrubber = field(default_factory=Scrubber, init=False, repr=False)
    _scrubbed: Config | None = field(default=None, init=False, repr=False)

    @property
    def effective(self) -> Config:
        """The config with the dashboard's keys and teams merged in: what governance enforces."""
        store = self.dashboard
        if store is None:
            return self.config
        cached = self._effective
        if cached is None or cached[0] is not self.config or cached[1] != store.generation:
            cached = self._effective = (self.config, store.generation, store.merged(self.config))
        return cached[2]

    @property
    def scrubber(self) -> Scrubber:
        """Scrubs the secrets of the config in force (a SIGHUP's new keys at once)."""
        if self._scrubbed is not self.config:
            self._scrubber.use(config_secrets(self.config))
            self._scrubbed = self.config
        return self._scrubber
    # handlers under way and their connections (the in_flight middleware); SIGTERM's drain
    # sets ``stopping`` before it cuts what is still running
    inflight: set[asyncio.Task[Any]] = field(default_factory=set)
    busy: set[object] = field(default_factory=set)
    stopping: bool = False

    def models(self) -> list[tuple[str, str]]:
        """(provider, model) pairs that /models lists."""
        out = []
        for name, provider in self.config.providers.items():
            for model in provider.models if provider.models is not None else self.discovered.get(name, ()):
                out.append((name, model))
        return out
