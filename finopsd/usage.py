"""Usage numbers as the gateway believes them: what an upstream reports, bounded before use.

An upstream's usage reaches the log, pricing, budgets and the clients' own usage
chunks. Whatever it put there (a string, ``-5``, ``1e308``, an integer of 23 digits, a
list), every token count the gateway keeps is an int from 0 to ``MAX_TOKENS``: a
count that is not a number is unknown (0), one above the bound is clamped to it.
"""

from __future__ import annotations

import math
from typing import Any, Final

__all__ = ["MAX_TOKENS", "clean_usage", "token_count", "with_cache_fields"]

# 1e9 tokens: a hundred times the largest context window, and still a price a budget can hold
MAX_TOKENS: Final = 1_000_000_000


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not (
        isinstance(value, float) and not math.isfinite(value))


def token_count(value: Any) -> int:
    """An upstream token count as an int in [0, MAX_TOKENS]; anything but a positive number is 0."""
    if not _number(value) or value <= 0:
        return 0
    return int(min(value, MAX_TOKENS))


def _scalar(name: str, value: Any) -> int | float:
    # token counts are ints; other numbers (OpenRouter's ``cost``) stay as sent, within the same bound
    return token_count(value) if name.endswith("tokens") else max(min(value, MAX_TOKENS), -MAX_TOKENS)


def clean_usage(usage: Any) -> dict[str, Any] | None:
    """Canonical (OpenAI) usage with every number bounded and everything else dropped; None if no object."""
    if not isinstance(usage, dict):
        return None
    out: dict[str, Any] = {}
    for name, value in usage.items():
        if isinstance(value, dict) and name.endswith("_details"):  # prompt_tokens_details, completion_…
            out[name] = {k: _scalar(k, v) for k, v in value.items() if _number(v)}
        elif _number(value):
            out[name] = _scalar(name, value)
    return out


def with_cache_fields(usage: dict[str, Any]) -> bool:
    """Add Roo Code's top-level ``cache_read_input_tokens`` / ``cache_creation_input_tokens``.

    Roo reads cache hits only there (CLIENTS.md); OpenAI-protocol upstreams report them in
    ``prompt_tokens_details``. Only non-zero counts are added, so the usage chunk of a
    request without cache hits keeps the upstream's own bytes. True when ``usage`` changed.
    """
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, dict):
        return False
    changed = False
    for ours, theirs in (("cached_tokens", "cache_read_input_tokens"),
                         ("cache_creation_tokens", "cache_creation_input_tokens")):
        count = token_count(details.get(ours))
        if count and theirs not in usage:
            usage[theirs] = count
            changed = True
    return changed
