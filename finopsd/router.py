"""``provider/model`` → provider config, adapter and upstream key."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Final

from finopsd.errors import BadRequest, GatewayError
from finopsd.providers.base import Adapter, Target
from finopsd.providers.openai_compat import AzureAdapter, OpenAIAdapter

if TYPE_CHECKING:
    from finopsd.config import Config, ProviderConfig

ADAPTERS: Final[dict[str, Adapter]] = {
    "openai": OpenAIAdapter(),
    "azure": AzureAdapter(),
}


def adapter_for(provider: ProviderConfig) -> Adapter:
    adapter = ADAPTERS.get(provider.type)
    if adapter is None:
        raise GatewayError(
            f"provider {provider.name!r} uses the {provider.type} protocol, which this gateway does not serve yet",
            status=501,
            type="not_implemented",
            code="protocol_not_implemented",
        )
    return adapter


def split_model(config: Config, model: str) -> tuple[ProviderConfig, str]:
    """Resolve a client's model name to its provider and the name the upstream expects.

    ``provider/rest`` picks the provider (``rest`` may hold more slashes); a bare name goes
    through ``aliases``, then to the only configured provider if there is exactly one.
    """
    name = config.aliases.get(model, model)
    prefix, slash, rest = name.partition("/")
    if slash and prefix in config.providers and rest:
        return config.providers[prefix], rest
    if not slash and len(config.providers) == 1:
        (provider,) = config.providers.values()
        return provider, name
    configured = ", ".join(sorted(config.providers)) or "none"
    if slash:
        raise BadRequest(
            f"unknown provider {prefix!r} in model {model!r}; configured providers: {configured}",
            param="model",
            code="unknown_provider",
        )
    raise BadRequest(
        f"model {model!r} names no provider; write it as provider/model (configured providers: {configured})",
        param="model",
        code="model_not_found",
    )


def pick_key(provider: ProviderConfig, model: str) -> Target:
    """A weighted random choice among the provider's keys (none for keyless local servers)."""
    keys = provider.keys
    if not keys:
        return Target(provider, model)
    key = keys[0] if len(keys) == 1 else random.choices(keys, weights=[k.weight for k in keys])[0]
    return Target(provider, model, key.value, key.name)
