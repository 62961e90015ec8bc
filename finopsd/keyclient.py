"""What ``finopsd keys`` changes act through: a running gateway's admin API, else the database file.

With ``--url`` the gateway there must answer. Without it, the gateway the config names
(``server.host``/``port``) is tried; when nothing listens there, the change goes straight into
the database at ``storage.path`` (the audit trail names the actor ``cli``), which a gateway
started later loads. Going through a running gateway matters: it keeps the keys in memory,
so a change written behind its back would only show after a restart.

The admin token comes from ``$FINOPSD_ADMIN_TOKEN``, else the config's ``server.admin_token``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from finopsd.errors import GatewayError
from finopsd.keystore import KeyStore

if TYPE_CHECKING:
    from finopsd.config import Config

__all__ = ["KeyChange", "Refused", "gateway_url"]

TIMEOUT: Final = aiohttp.ClientTimeout(total=30, connect=3)


class Refused(Exception):
    """The gateway or the store refused the change; the message says why."""


def gateway_url(config: Config) -> str:
    host = config.server.host
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    return f"http://{host}:{config.server.port}"


class KeyChange:
    """One ``keys`` command: ``call(method, path, body)`` as the admin API takes it."""

    def __init__(self, config: Config, url: str | None) -> None:
        self.config, self.explicit, self.url = config, url is not None, (url or gateway_url(config)).rstrip("/")
        self.token = os.environ.get("FINOPSD_ADMIN_TOKEN") or config.server.admin_token
        self.via = ""  # "api" or "database", once a call went through

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"X-Finopsd-Actor": "cli", **({"Authorization": f"Bearer {self.token}"} if self.token else {})}
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.request(
                    method, self.url + path, json=body, headers=headers) as resp:
                self.via = "api"
                answer = await resp.json(content_type=None)
                if resp.status >= 400:
                    error = answer.get("error", {}) if isinstance(answer, dict) else {}
                    raise Refused(f"{resp.status}: {error.get('message', answer)}")
                return answer  # type: ignore[no-any-return]
        except aiohttp.ClientConnectorError:
            if self.explicit:
                raise Refused(f"no gateway answers at {self.url}") from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:  # not a finopsd there, or it hung
            raise Refused(f"{self.url} did not answer as a finopsd admin API: {type(e).__name__}") from None
        return await self._direct(method, path, body or {})

    async def _direct(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The same change on the database file (no gateway runs)."""
        self.via = "database"
        parts = path.strip("/").split("/")  # api, keys|teams, [name, [rotate]]
        kind = "key" if parts[1] == "keys" else "team"
        store = await KeyStore.open(self.config.storage)
        clash = store.conflict_message(self.config)
        try:
            if clash is not None:
                raise Refused(clash)
            if method == "GET":
                report = store.merged(self.config)
                return {"keys": [store.view("key", k.name, report) for k in report.virtual_keys],
                        "teams": [store.view("team", t, report) for t in report.teams]}
            args = (self.config, "cli", None)
            if method == "POST" and len(parts) == 2:
                view, secret = await store.create(kind, body, *args)
                return {"key": view, "secret": secret} if secret else view
            name = parts[2]
            if method == "POST":
                view, secret = await store.rotate(name, *args, float(body.get("grace_seconds", 0)))
                return {"key": view, "secret": secret}
            if method == "PATCH":
                action = "disable" if body == {"enabled": False} else "edit"
                return await store.update(kind, name, body, *args, action=action)
            await store.delete(kind, name, *args)
            return {"deleted": name, "kind": kind}
        except GatewayError as e:
            raise Refused(f"{e.status}: {e.message}") from None
        finally:
            await store.close()
