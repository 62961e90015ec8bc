"""Usage → USD: the config's ``pricing:`` overrides first, else genai-prices' bundled data.

The usage is the canonical OpenAI shape every adapter produces: ``prompt_tokens``
counts every input token (cache reads and writes included),
``prompt_tokens_details.cached_tokens`` the cache reads,
``prompt_tokens_details.cache_creation_tokens`` the cache writes (with the
``ephemeral_1h_input_tokens`` share when Anthropic reports it), ``completion_tokens``
every output token (reasoning included) and
``completion_tokens_details.reasoning_tokens`` the reasoning share. That is also
genai-prices' own convention: ``input_tokens`` is the total and cache reads and
writes are partitions of it, priced at their own rates
(https://pypi.org/project/genai-prices/ , "Cached input tokens").

Providers that cache on their own report reads under their own names, read here as
well: DeepSeek ``prompt_cache_hit_tokens``, Moonshot top-level ``cached_tokens``,
OpenRouter ``prompt_tokens_details.cache_write_tokens``, Anthropic-style
``cache_read_input_tokens`` / ``cache_creation_input_tokens`` (OpenAI, Groq, xAI,
Fireworks and Gemini's OpenAI endpoint use ``prompt_tokens_details.cached_tokens``).

``cost_without_cache`` prices the same tokens as if nothing were cached (every cache
read and write at the fresh input rate): the difference is what caching saved.

genai-prices is used offline: ``calc_price`` reads the snapshot bundled with the
package, and its updater (``UpdatePrices``) is never started, so pricing never
touches the network. A model that neither source prices costs 0 and is flagged
``unpriced``, so a report can tell "free" from "unknown".
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from finopsd.usage import token_count

if TYPE_CHECKING:
    from genai_prices import Usage

    from finopsd.config import Price, ProviderConfig

__all__ = ["Pricer", "UNPRICED", "cache_reads", "cache_writes", "genai_provider_id"]

log = logging.getLogger(__name__)

UNPRICED: Final = "unpriced"
PER_MTOK: Final = 1_000_000

# our provider name (or protocol) → genai-prices provider id, where they differ or match
GENAI_PROVIDERS: Final = {
    "openai": "openai", "azure": "azure", "anthropic": "anthropic", "gemini": "google",
    "vertex": "google", "bedrock": "aws", "cohere": "cohere", "mistral": "mistral", "groq": "groq",
    "cerebras": "cerebras", "perplexity": "perplexity", "xai": "x-ai", "openrouter": "openrouter",
    "deepseek": "deepseek", "together": "together", "fireworks": "fireworks",
}  # fmt: skip
# self-hosted servers: a cloud price for the same model name would be wrong, so only an
# override prices them
SELF_HOSTED: Final = frozenset({"ollama", "vllm", "sgl"})
# protocols whose models live at one known vendor, for custom provider names
PROTOCOL_VENDORS: Final = frozenset({"anthropic", "gemini", "vertex", "bedrock", "cohere"})
_ANY_PROVIDER: Final = ""  # look the model up by name across every provider genai-prices knows


def genai_provider_id(name: str, protocol: str | None) -> str | None:
    """The genai-prices provider to price ``name``'s models at; "" for any; None for none (self-hosted)."""
    if name in GENAI_PROVIDERS:
        return GENAI_PROVIDERS[name]
    if name in SELF_HOSTED:
        return None
    if protocol in PROTOCOL_VENDORS:
        return GENAI_PROVIDERS[protocol]
    return _ANY_PROVIDER  # a custom OpenAI-compatible proxy: its model names say what they are


def _detail(usage: Mapping[str, Any], group: str, name: str) -> int:
    details = usage.get(group)
    return token_count(details.get(name)) if isinstance(details, dict) else 0


def cache_reads(usage: Mapping[str, Any]) -> int:
    """Prompt tokens read from a cache, under whichever name the provider reports them."""
    return (_detail(usage, "prompt_tokens_details", "cached_tokens") or token_count(usage.get("prompt_cache_hit_tokens"))
            or token_count(usage.get("cached_tokens")) or token_count(usage.get("cache_read_input_tokens")))


def cache_writes(usage: Mapping[str, Any]) -> int:
    """Prompt tokens written to a cache (Anthropic, Bedrock, OpenRouter's Claude)."""
    return (_detail(usage, "prompt_tokens_details", "cache_creation_tokens")
            or _detail(usage, "prompt_tokens_details", "cache_write_tokens")
            or token_count(usage.get("cache_creation_input_tokens")))


def token_counts(usage: Mapping[str, Any]) -> dict[str, int]:
    """The counts pricing needs, clamped so the partitions never exceed their totals."""
    prompt = token_count(usage.get("prompt_tokens"))
    completion = token_count(usage.get("completion_tokens"))
    read = min(cache_reads(usage), prompt)
    write = min(cache_writes(usage), prompt - read)
    write_1h = min(_detail(usage, "prompt_tokens_details", "ephemeral_1h_input_tokens"), write)
    reasoning = min(_detail(usage, "completion_tokens_details", "reasoning_tokens"), completion)
    return {"prompt": prompt, "completion": completion, "cache_read": read, "cache_write": write,
            "cache_write_1h": write_1h, "reasoning": reasoning}  # fmt: skip


def genai_usage(counts: Mapping[str, int]) -> Usage:
    from genai_prices import Usage  # its price data costs ~12 MB: loaded when something is priced

    values = {
        "input_tokens": counts["prompt"],
        "output_tokens": counts["completion"],
        "cache_read_tokens": counts["cache_read"],
        "cache_write_tokens": counts["cache_write"],
        # 1h cache writes cost more than 5m ones (Anthropic); the rest of the writes are 5m
        "cache_write_1h_tokens": counts["cache_write_1h"],
        # a sub-count of output_tokens: priced as output unless the model prices it apart
        "output_reasoning_tokens": counts["reasoning"],
    }
    return Usage(**{k: v for k, v in values.items() if v})


def override_cost(price: Price, counts: Mapping[str, int]) -> float:
    read_rate = price.input if price.cache_read is None else price.cache_read
    write_rate = price.input if price.cache_write is None else price.cache_write
    fresh = counts["prompt"] - counts["cache_read"] - counts["cache_write"]
    return (
        fresh * price.input + counts["cache_read"] * read_rate + counts["cache_write"] * write_rate
        + counts["completion"] * price.output
    ) / PER_MTOK


class Pricer:
    """Prices one config's models; each (provider, model) is resolved once and remembered."""

    def __init__(self, overrides: Mapping[str, Price], providers: Mapping[str, ProviderConfig]) -> None:
        self.overrides = dict(overrides)
        self._globs = [(pattern, p) for pattern, p in overrides.items() if any(c in pattern for c in "*?[")]
        self._protocols = {name: p.type for name, p in providers.items()}
        # (provider, model) → an override Price, a genai provider id ("" = any), or None (unpriced)
        self._resolved: dict[tuple[str, str], Price | str | None] = {}
        # (genai provider id, model, UTC day) → linear per-token rates, or None: use the exact path
        self._linear: dict[tuple[str, str, int], tuple[float, ...] | None] = {}

    def _resolve(self, provider: str, model: str) -> Price | str | None:
        key = (provider, model)
        if key in self._resolved:
            return self._resolved[key]
        name = f"{provider}/{model}"
        found: Price | str | None = self.overrides.get(name)
        if found is None:
            found = next((p for pattern, p in self._globs if fnmatch.fnmatchcase(name, pattern)), None)
        if found is None:
            genai_id = genai_provider_id(provider, self._protocols.get(provider))
            if genai_id is not None and self._genai_knows(genai_id, model):
                found = genai_id
        self._resolved[key] = found
        return found

    @staticmethod
    def _genai_knows(genai_id: str, model: str) -> bool:
        from genai_prices import Usage, calc_price

        try:
            calc_price(Usage(input_tokens=1), model, provider_id=genai_id or None)
        except (LookupError, ValueError):
            return False
        return True

    def is_priced(self, provider: str, model: str) -> bool:
        return self._resolve(provider, model) is not None

    def unpriced(self, models: Iterable[tuple[str, str]]) -> list[str]:
        """The ``provider/model`` names among ``models`` that no source prices."""
        return [f"{p}/{m}" for p, m in models if not self.is_priced(p, m)]

    def price(
        self, provider: str, model: str, usage: Mapping[str, Any], at: float | None = None
    ) -> tuple[float, set[str]]:
        """USD for ``usage`` of ``provider/model``, and flags ({"unpriced"} when nothing prices it).

        ``at`` (epoch seconds) picks the price in force then, for models whose price changed.
        """
        return self._cost(provider, model, token_counts(usage), at)

    def cost_without_cache(self, provider: str, model: str, usage: Mapping[str, Any], at: float | None = None) -> float:
        """USD for ``usage`` had nothing been cached: cache reads and writes at the fresh input rate."""
        counts = {**token_counts(usage), "cache_read": 0, "cache_write": 0, "cache_write_1h": 0}
        return self._cost(provider, model, counts, at)[0]

    def _cost(self, provider: str, model: str, counts: Mapping[str, int], at: float | None) -> tuple[float, set[str]]:
        source = self._resolve(provider, model)
        if source is None:
            return 0.0, {UNPRICED}
        if not isinstance(source, str):
            return override_cost(source, counts), set()
        day = int((at if at is not None else time.time()) // 86400)
        rates = self._rates(source, model, day)
        if rates is not None:
            return linear_cost(rates, counts), set()
        try:
            return _genai_cost(source, model, counts, day), set()
        except (LookupError, ValueError) as e:  # usage shapes this model's price cannot take
            log.warning("no price for %s/%s with this usage: %s", provider, model, e)
            return 0.0, {UNPRICED}

    def _rates(self, source: str, model: str, day: int) -> tuple[float, ...] | None:
        """Per-token rates of a model whose price is linear (no context tiers), for that UTC day.

        genai-prices' exact calculation takes ~70 µs a request (Decimal arithmetic); for
        the common flat-priced model the same sum from rates measured once is ~1 µs.
        """
        key = (source, model, day)
        if key not in self._linear:
            try:
                self._linear[key] = _measure_rates(source, model, day)
            except (LookupError, ValueError):
                self._linear[key] = None
        return self._linear[key]


# one probe per count category, at two scales: a tiered price (say, 2x above 200k prompt
# tokens) gives different rates at the two scales, and such a model keeps the exact path
_PROBE_SMALL: Final = 1_000
_PROBE_LARGE: Final = 1_000_000
RATE_FIELDS: Final = ("fresh", "cache_read", "cache_write", "cache_write_1h", "completion", "reasoning")


def _probe_counts(category: str, n: int) -> dict[str, int]:
    counts = dict.fromkeys(("prompt", "completion", "cache_read", "cache_write", "cache_write_1h", "reasoning"), 0)
    if category in ("completion", "reasoning"):
        counts["completion"] = n
        if category == "reasoning":
            counts["reasoning"] = n
        return counts
    counts["prompt"] = n
    if category != "fresh":
        counts["cache_write" if category == "cache_write_1h" else category] = n
        if category == "cache_write_1h":
            counts["cache_write_1h"] = n
    return counts


def _genai_cost(source: str, model: str, counts: Mapping[str, int], day: int) -> float:
    from genai_prices import calc_price

    when = datetime.fromtimestamp(day * 86400 + 43200, UTC)  # midday: the price in force that day
    result = calc_price(genai_usage(counts), model, provider_id=source or None, genai_request_timestamp=when)
    return float(result.total_price)


def _measure_rates(source: str, model: str, day: int) -> tuple[float, ...] | None:
    rates = []
    for category in RATE_FIELDS:
        small = _genai_cost(source, model, _probe_counts(category, _PROBE_SMALL), day) / _PROBE_SMALL
        large = _genai_cost(source, model, _probe_counts(category, _PROBE_LARGE), day) / _PROBE_LARGE
        if abs(small - large) > 1e-12 * max(1.0, abs(large)) + 1e-15:
            return None  # tiered: not linear in the token count
        rates.append(large)
    fresh, read, write, write_1h, completion, reasoning = rates
    # a reasoning probe prices completion tokens too: keep only what reasoning adds
    return fresh, read, write, write_1h, completion, reasoning - completion


def linear_cost(rates: tuple[float, ...], counts: Mapping[str, int]) -> float:
    fresh, read, write, write_1h, completion, reasoning_extra = rates
    return (
        (counts["prompt"] - counts["cache_read"] - counts["cache_write"]) * fresh
        + counts["cache_read"] * read
        + (counts["cache_write"] - counts["cache_write_1h"]) * write
        + counts["cache_write_1h"] * write_1h
        + counts["completion"] * completion
        + counts["reasoning"] * reasoning_extra
    )
