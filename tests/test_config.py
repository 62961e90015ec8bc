"""Config: the public key names, defaults, env references, and errors that name file line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from finopsd import config as cfg

EXAMPLE = Path(__file__).parent.parent / "config.example.yaml"


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse(text, "config.yaml", env or {})
    return str(info.value)


def test_issue_example_parses_with_defaults_filled() -> None:
    text = """
server:
  host: 127.0.0.1
  port: 8080
  max_body_mb: 32
  cors:
    allowed_origins: ["*"]
    allowed_headers: [Content-Type, Authorization, X-Requested-With, X-Stainless-Timeout, X-Api-Key]
storage:
  path: /var/lib/finopsd/finops.db
providers:
  openai: {keys: [{value: env:OPENAI_API_KEY}]}
  groq:   {keys: [{value: env:GROQ_API_KEY}]}
  vllm:   {base_url: http://gpu-box:8000/v1, models: [qwen3-coder]}
  mylab:  {type: openai, base_url: http://10.0.0.5:9000/v1, models: [my-model]}
aliases:
  sonnet: anthropic/claude-sonnet-4-5-20250929
"""
    c = cfg.parse(text, env={"OPENAI_API_KEY": "sk-o", "GROQ_API_KEY": "gsk-g"})
    assert c.providers["openai"].base_url == "https://api.openai.com/v1"
    assert c.providers["openai"].keys[0].value == "sk-o"
    assert c.providers["groq"].base_url == "https://api.groq.com/openai/v1"
    assert c.providers["vllm"].keys == () and c.providers["vllm"].models == ("qwen3-coder",)
    assert c.providers["mylab"].type == "openai"
    assert c.aliases == {"sonnet": "anthropic/claude-sonnet-4-5-20250929"}
    assert c.storage.path == "/var/lib/finopsd/finops.db"
    assert "X-Stainless-Timeout" in c.server.cors.allowed_headers


def test_example_config_file_is_valid() -> None:
    env = {name: "test-value" for name in (
        "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY", "AZURE_OPENAI_API_KEY", "FINOPSD_ADMIN_TOKEN",
        "GEMINI_API_KEY", "MISTRAL_API_KEY", "OPENROUTER_API_KEY")}
    c = cfg.load(EXAMPLE, env)
    assert c.providers and c.server.host == "127.0.0.1"


def test_mistyped_key_names_file_line_and_path() -> None:
    text = "providers:\n  groq:\n    kyes: [{value: x}]\n"
    assert error_of(text) == "config.yaml:3: providers.groq.kyes: unknown key"


def test_unknown_top_level_key() -> None:
    assert error_of("server: {}\n\nlogz: {}\n") == "config.yaml:3: logz: unknown key"


def test_wrong_type_names_expected_type() -> None:
    msg = error_of("server:\n  port: eighty\n")
    assert msg == "config.yaml:2: server.port: must be an integer, got a string"
    assert "must be true or false" in error_of("logs:\n  content: maybe\n")


def test_list_item_error_points_at_item() -> None:
    msg = error_of("server:\n  cors:\n    allowed_headers:\n      - Content-Type\n      - 5\n")
    assert msg == "config.yaml:5: server.cors.allowed_headers[1]: must be a string, got int"


def test_unset_env_reference_is_an_error() -> None:
    msg = error_of("providers:\n  openai:\n    keys:\n      - value: env:NOPE_KEY\n")
    assert msg == "config.yaml:4: providers.openai.keys[0].value: environment variable NOPE_KEY is not set"


def test_custom_provider_needs_type_and_base_url() -> None:
    assert "set `type`" in error_of("providers:\n  mylab: {base_url: http://x}\n")
    assert "unknown type 'grpc'" in error_of("providers:\n  mylab: {type: grpc, base_url: http://x}\n")
    assert "needs `base_url`" in error_of("providers:\n  mylab: {type: openai}\n")


def test_alias_must_name_provider_and_model() -> None:
    assert "provider/model" in error_of("aliases:\n  fast: llama\n")


def test_invalid_yaml_names_line() -> None:
    assert error_of("server:\n  port: [1\n").startswith("config.yaml:3: invalid YAML")


def test_port_range_checked() -> None:
    assert "between 0 and 65535" in error_of("server: {port: 70000}\n")


def test_embedded_default_enables_providers_with_keys(tmp_path: Path) -> None:
    env = {"GROQ_API_KEY": "gsk-x", "ANTHROPIC_API_KEY": "sk-ant", "HOME": str(tmp_path)}
    c = cfg.embedded_default(env)
    assert sorted(c.providers) == ["anthropic", "groq"]
    assert c.server.host == "127.0.0.1" and c.server.port == 8080
    assert c.storage.path == str(tmp_path / ".local/share/finopsd/finops.db")


def test_secrets_stay_out_of_reprs() -> None:
    c = cfg.parse("server: {admin_token: tok-secret}\nproviders:\n  openai: {keys: [{value: sk-secret}]}\n", env={})
    assert "sk-secret" not in repr(c) and "tok-secret" not in repr(c)


def test_fallbacks_must_name_configured_providers() -> None:
    text = "providers:\n  groq: {keys: []}\nfallbacks:\n  groq/a:\n    - groq/b\n    - mistral/c\n"
    assert error_of(text) == "config.yaml:6: fallbacks.groq/a[1]: 'mistral/c' names no configured provider"


def test_caching_sections_on_provider_key_and_team() -> None:
    text = """
providers:
  anthropic: {keys: [{value: sk-a}], caching: {ttl: 1h}}
  bedrock: {region: us-east-1, caching: {auto: false}}
teams:
  batch: {caching: {auto: false}}
virtual_keys:
  - {name: roo, key_sha256: "%s", team: batch, caching: {ttl: 5m}}
""" % ("a" * 64)
    c = cfg.parse(text, env={})
    assert c.providers["anthropic"].caching == cfg.CachingConfig(auto=True, ttl="1h")
    assert c.providers["bedrock"].caching.auto is False
    assert c.teams["batch"].caching.auto is False and c.virtual_keys[0].caching.ttl == "5m"
    assert "config.yaml:3: providers.anthropic.caching.ttl: must be one of 5m, 1h" in error_of(
        "providers:\n  anthropic:\n    caching: {ttl: 2h}\n")
    assert "teams.t.caching.automatic: unknown key" in error_of("teams:\n  t: {caching: {automatic: false}}\n")
