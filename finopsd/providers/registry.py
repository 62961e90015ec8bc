"""Provider names → protocol, default base URL and key variable; protocol → adapter.

A provider name not listed here is a custom provider; its config names the
protocol with ``type``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class ProviderSpec:
    protocol: str
    base_url: str
    key_env: str | None = None


KNOWN_PROVIDERS: Final[dict[str, ProviderSpec]] = {
    "openai": ProviderSpec("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    # Azure needs the resource URL in `base_url`; the key variable alone cannot enable it
    "azure": ProviderSpec("azure", "", None),
    "anthropic": ProviderSpec("anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
    "gemini": ProviderSpec("gemini", "https://generativelanguage.googleapis.com/v1beta", "GEMINI_API_KEY"),
    "vertex": ProviderSpec("vertex", "", None),
    "bedrock": ProviderSpec("bedrock", "", "AWS_BEARER_TOKEN_BEDROCK"),
    "mistral": ProviderSpec("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "groq": ProviderSpec("openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "cerebras": ProviderSpec("openai", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
    "cohere": ProviderSpec("cohere", "https://api.cohere.com", "COHERE_API_KEY"),
    # Perplexity's Sonar API is chat completions at the root (no /v1)
    "perplexity": ProviderSpec("openai", "https://api.perplexity.ai", "PERPLEXITY_API_KEY"),
    "xai": ProviderSpec("openai", "https://api.x.ai/v1", "XAI_API_KEY"),
    "ollama": ProviderSpec("openai", "http://127.0.0.1:11434/v1", None),
    "openrouter": ProviderSpec("openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "huggingface": ProviderSpec("openai", "https://router.huggingface.co/v1", "HF_TOKEN"),
    "nebius": ProviderSpec("openai", "https://api.studio.nebius.com/v1", "NEBIUS_API_KEY"),
    "parasail": ProviderSpec("openai", "https://api.parasail.io/v1", "PARASAIL_API_KEY"),
    "replicate": ProviderSpec("replicate", "https://api.replicate.com/v1", "REPLICATE_API_TOKEN"),
    "vllm": ProviderSpec("openai", "http://127.0.0.1:8000/v1", None),
    "sgl": ProviderSpec("openai", "http://127.0.0.1:30000/v1", None),
    "deepseek": ProviderSpec("openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "together": ProviderSpec("openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
    "fireworks": ProviderSpec("openai", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
}

# protocol → the module and class serving it; imported on first use, because botocore
# (Bedrock) and google-auth (Vertex) cost memory that a gateway without them should not pay
ADAPTER_CLASSES: Final[dict[str, tuple[str, str]]] = {
    "openai": ("openai_compat", "OpenAIAdapter"),
    "azure": ("openai_compat", "AzureAdapter"),
    "mistral": ("openai_compat", "MistralAdapter"),
    "anthropic": ("anthropic", "AnthropicAdapter"),
    "gemini": ("gemini", "GeminiAdapter"),
    "vertex": ("vertex", "VertexAdapter"),
    "bedrock": ("bedrock", "BedrockAdapter"),
    "cohere": ("cohere", "CohereAdapter"),
    "replicate": ("replicate", "ReplicateAdapter"),
}
PROTOCOLS: Final = frozenset(ADAPTER_CLASSES)
