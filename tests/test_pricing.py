"""Pricing: usage in OpenAI shape → USD, from genai-prices' bundled data or the config's overrides.

Expected amounts are worked out by hand from the providers' published prices
(gpt-5: $1.25 input, $0.125 cached input, $10 output per MTok; claude-sonnet-4-5
under 200k input tokens: $3 input, $0.30 cache read, $3.75 5-minute cache write,
$6 1-hour cache write, $15 output; gemini-2.5-pro under 200k: $1.25 / $10).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from finopsd import config as cfg
from finopsd.pricing import Pricer, genai_provider_id, token_counts
from finopsd.providers.anthropic import usage_to_openai as anthropic_usage
from finopsd.providers.bedrock import usage_to_openai as bedrock_usage
from finopsd.providers.gemini import usage_from_metadata as gemini_usage


def pricer(yaml_text: str = "") -> Pricer:
    config = cfg.parse(yaml_text or "{}", env={})
    return Pricer(config.pricing, config.providers)


def openai_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }  # fmt: skip


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pricing must work offline: genai-prices' updater is never started."""

    def refuse(*args: Any, **kw: Any) -> None:
        raise AssertionError("pricing tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_cached_input_tokens_cost_the_cache_read_rate() -> None:
    p = pricer()
    cost, flags = p.price("openai", "gpt-5", openai_usage(1_000_000, 100_000, cached=500_000))
    assert flags == set()
    assert cost == pytest.approx(0.5 * 1.25 + 0.5 * 0.125 + 0.1 * 10)
    uncached, _ = p.price("openai", "gpt-5", openai_usage(1_000_000, 100_000))
    assert uncached == pytest.approx(1.25 + 1.0)


def test_anthropic_cache_reads_and_writes_each_have_their_rate() -> None:
    usage = anthropic_usage({"input_tokens": 1000, "cache_read_input_tokens": 20_000,
                             "cache_creation_input_tokens": 5000, "output_tokens": 500})
    cost, flags = pricer().price("anthropic", "claude-sonnet-4-5-20250929", usage)
    assert flags == set()
    assert cost == pytest.approx((1000 * 3 + 20_000 * 0.30 + 5000 * 3.75 + 500 * 15) / 1e6)


def test_one_hour_cache_writes_cost_more_than_five_minute_ones() -> None:
    usage = anthropic_usage({"input_tokens": 1000, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 5000,
                             "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 5000},
                             "output_tokens": 500})
    cost, _ = pricer().price("anthropic", "claude-sonnet-4-5-20250929", usage)
    assert cost == pytest.approx((1000 * 3 + 5000 * 6 + 500 * 15) / 1e6)


def test_reasoning_tokens_are_billed_as_output() -> None:
    usage = gemini_usage({"promptTokenCount": 1000, "candidatesTokenCount": 200, "thoughtsTokenCount": 800})
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 800
    cost, flags = pricer().price("gemini", "gemini-2.5-pro", usage)
    assert flags == set()
    assert cost == pytest.approx((1000 * 1.25 + 1000 * 10) / 1e6)
    # the same total output without the reasoning split costs the same
    plain, _ = pricer().price("gemini", "gemini-2.5-pro", openai_usage(1000, 1000))
    assert plain == pytest.approx(cost)


def test_openai_reasoning_model_prices_reasoning_inside_completion_tokens() -> None:
    cost, _ = pricer().price("openai", "gpt-5", openai_usage(1000, 1000, reasoning=600))
    assert cost == pytest.approx((1000 * 1.25 + 1000 * 10) / 1e6)


def test_vertex_and_bedrock_names_map_to_their_vendors() -> None:
    assert genai_provider_id("vertex", "vertex") == "google"
    assert genai_provider_id("bedrock", "bedrock") == "aws"
    assert genai_provider_id("corp-claude", "anthropic") == "anthropic"
    usage = bedrock_usage({"inputTokens": 1000, "outputTokens": 1000})
    cost, flags = pricer().price("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", usage)
    assert flags == set() and cost == pytest.approx((1000 * 3 + 1000 * 15) / 1e6)


def test_config_override_wins_over_bundled_price() -> None:
    p = pricer("pricing:\n  openai/gpt-5: {input: 1, output: 2}\n")
    cost, flags = p.price("openai", "gpt-5", openai_usage(1_000_000, 1_000_000))
    assert (cost, flags) == (pytest.approx(3.0), set())


def test_override_cache_rates_default_to_input_unless_given() -> None:
    usage = {**openai_usage(1_000_000, 0, cached=400_000),
             "prompt_tokens_details": {"cached_tokens": 400_000, "cache_creation_tokens": 100_000}}
    plain = pricer("pricing:\n  corp/m: {input: 2, output: 8}\n")
    assert plain.price("corp", "m", usage)[0] == pytest.approx(2.0)
    split = pricer("pricing:\n  corp/m: {input: 2, output: 8, cache_read: 0.5, cache_write: 2.5}\n")
    assert split.price("corp", "m", usage)[0] == pytest.approx(0.5 * 2 + 0.4 * 0.5 + 0.1 * 2.5)


def test_override_globs_price_self_hosted_models_at_zero_without_the_unpriced_flag() -> None:
    p = pricer("pricing:\n  vllm/*: {input: 0, output: 0}\n")
    assert p.price("vllm", "qwen3-coder", openai_usage(5000, 500)) == (0.0, set())


def test_unknown_model_costs_zero_and_is_flagged_unpriced() -> None:
    p = pricer()
    assert p.price("mylab", "my-model", openai_usage(100, 10)) == (0.0, {"unpriced"})
    assert p.price("openai", "no-such-model-xyz", openai_usage(100, 10)) == (0.0, {"unpriced"})


def test_self_hosted_model_is_never_given_a_cloud_price() -> None:
    # vLLM serving a model named like a cloud one must not be charged the cloud price
    assert pricer().price("vllm", "gpt-5", openai_usage(1000, 1000)) == (0.0, {"unpriced"})


def test_custom_openai_compatible_provider_is_priced_by_model_name() -> None:
    cost, flags = pricer().price("corp-proxy", "gpt-5", openai_usage(1_000_000, 0))
    assert flags == set() and cost == pytest.approx(1.25)


def test_unpriced_lists_configured_models_without_a_price() -> None:
    p = pricer("""
providers:
  openai: {keys: [{value: sk-x}], models: [gpt-5]}
  vllm: {models: [qwen3-coder, llama-local]}
pricing:
  vllm/qwen3-coder: {input: 0, output: 0}
""")
    assert p.unpriced([("openai", "gpt-5"), ("vllm", "qwen3-coder"), ("vllm", "llama-local")]) == ["vllm/llama-local"]


def test_each_model_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    p = pricer()
    calls: list[tuple[str, str]] = []
    real = Pricer._genai_knows

    def counting(self: Pricer, genai_id: str, model: str) -> bool:
        calls.append((genai_id, model))
        return real(self, genai_id, model)

    monkeypatch.setattr(Pricer, "_genai_knows", counting)
    for _ in range(5):
        p.price("openai", "gpt-5", openai_usage(10, 10))
        p.price("mylab", "my-model", openai_usage(10, 10))
    assert calls == [("openai", "gpt-5"), ("", "my-model")]


def test_inconsistent_usage_is_clamped_not_an_error() -> None:
    # an upstream reporting more cached tokens than prompt tokens must not break pricing
    usage = openai_usage(100, 10, cached=500, reasoning=99)
    counts = token_counts(usage)
    assert counts["cache_read"] == 100 and counts["reasoning"] == 10
    cost, flags = pricer().price("openai", "gpt-5", usage)
    assert flags == set() and cost == pytest.approx((100 * 0.125 + 10 * 10) / 1e6)


def test_empty_usage_costs_nothing() -> None:
    assert pricer().price("openai", "gpt-5", {}) == (0.0, set())


@pytest.mark.parametrize(("provider", "model"), [
    ("openai", "gpt-5"), ("anthropic", "claude-sonnet-4-5"), ("gemini", "gemini-2.5-pro"),
    ("gemini", "gemini-2.5-flash"), ("groq", "llama-3.3-70b-versatile"), ("bedrock", "anthropic.claude-3-haiku-20240307-v1:0"),
])
def test_fast_linear_prices_equal_genai_prices_exact_calculation(provider: str, model: str) -> None:
    import random

    from finopsd.pricing import _genai_cost, token_counts

    pricer = Pricer({}, {})
    if not pricer.is_priced(provider, model):
        return  # nothing to compare for a model the bundled data does not know
    source = pricer._resolve(provider, model)
    assert isinstance(source, str)
    rng = random.Random(5)
    day = 20_000
    for _ in range(30):
        prompt = rng.choice([10, 5_000, 150_000, 250_000, 900_000])
        read = rng.randint(0, prompt // 2)
        write = rng.randint(0, (prompt - read) // 2)
        completion = rng.randint(0, 20_000)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "prompt_tokens_details": {"cached_tokens": read, "cache_creation_tokens": write,
                                           "ephemeral_1h_input_tokens": write // 3},
                 "completion_tokens_details": {"reasoning_tokens": completion // 2}}
        cost, flags = pricer.price(provider, model, usage, at=day * 86400.0)
        assert flags == set()
        assert cost == pytest.approx(_genai_cost(source, model, token_counts(usage), day), rel=1e-9, abs=1e-12)


def test_flat_priced_models_take_the_linear_path_and_tiered_ones_the_exact_one() -> None:
    pricer = Pricer({}, {})
    assert pricer._rates("openai", "gpt-5", 20_000) is not None
    assert pricer._rates("anthropic", "claude-sonnet-4-5", 20_000) is None  # 2x above 200k prompt tokens
