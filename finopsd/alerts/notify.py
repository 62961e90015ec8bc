"""An alert as each target wants it, and its delivery: POSTed, retried with backoff.

``json`` is the alert itself; ``slack`` and ``teams`` are ``{"text": …}``, which both
Slack incoming webhooks and Teams (incoming webhooks and Workflows) take as a message.
A failure is recorded by its HTTP status or exception class only: an error text could
hold the target's URL, and the URL may be a secret.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import aiohttp

from finopsd.alerts.config import AlertsConfig, AlertTarget

__all__ = ["deliver", "payload"]

log = logging.getLogger(__name__)
TIMEOUT: Final = aiohttp.ClientTimeout(total=10)


def payload(target: AlertTarget, alert: dict[str, Any]) -> dict[str, Any]:
    if target.format == "json":
        return {"source": "finopsd", **{k: alert[k] for k in ("id", "kind", "subject", "window", "threshold",
                                                               "message")}}  # fmt: skip
    return {"text": f"finopsd: {alert['message']}"}


async def _send(session: aiohttp.ClientSession, target: AlertTarget, body: dict[str, Any]) -> str | None:
    """None when the target took it (2xx), else why not."""
    try:
        async with session.post(target.url, json=body, timeout=TIMEOUT, allow_redirects=False) as resp:
            await resp.read()
            return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        return type(e).__name__


async def deliver(session: aiohttp.ClientSession, config: AlertsConfig, alert: dict[str, Any]) -> tuple[str, int, str | None]:
    """POST ``alert`` to every target, each retried until it takes it or the retries run out;
    (status: sent | failed, attempts made, the last failure)."""
    attempts, failure = 0, None
    for target in config.targets:
        body = payload(target, alert)
        for attempt in range(config.retries + 1):
            if attempt:
                await asyncio.sleep(config.retry_base_s * 2 ** (attempt - 1))
            attempts += 1
            why = await _send(session, target, body)
            if why is None:
                break
            log.warning("alert %s to target %s: attempt %d failed (%s)", alert["id"], target.name, attempt + 1, why)
        else:
            failure = f"{target.name}: {why}"
    return ("failed" if failure else "sent"), attempts, failure
