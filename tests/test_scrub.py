"""The scrubber on its own: what counts as a secret, and values of any shape or depth."""

from __future__ import annotations

import io
import json
import logging

from finopsd import config as cfg
from finopsd.scrub import MARK, MAX_LEARNED, LogScrub, Scrubber, config_secrets

KEY = "sk-live/abc+def==0001"  # AWS-style characters: '/' and '+'


def test_every_form_of_a_secret_is_replaced_and_short_values_are_not_secrets() -> None:
    s = Scrubber([KEY, "1", "true", None])
    assert s.text(f"a {KEY} b") == f"a {MARK} b"
    assert s.bytes(json.dumps({"m": KEY}).encode()) == json.dumps({"m": MARK}).encode()
    assert s.text("1 true") == "1 true"  # a header value like `x-beta: 1` blanks nothing


def test_values_of_any_depth_and_their_keys_are_scrubbed() -> None:
    s = Scrubber([KEY])
    deep: list = []
    inner = deep
    for _ in range(5000):  # deeper than Python's recursion limit
        inner.append([])
        inner = inner[0]
    inner.append(KEY)
    out = s.value({"d": deep, KEY: (KEY, 1, None), "n": 2.5})
    leaf = out["d"]
    while isinstance(leaf[0], list):
        leaf = leaf[0]
    assert leaf == [MARK] and out[MARK] == [MARK, 1, None] and out["n"] == 2.5
    clean = {"a": ["b"]}
    assert s.value(clean) is clean  # nothing to replace: no copy


def test_run_time_tokens_are_learned_within_a_bound() -> None:
    s = Scrubber()
    for i in range(MAX_LEARNED + 5):
        s.learn(f"ya29.token-{i:04d}")
    assert s.text("ya29.token-0000") == "ya29.token-0000"  # the oldest forgotten
    assert s.text(f"ya29.token-{MAX_LEARNED + 4:04d}") == MARK


def test_the_config_secrets_are_every_credential() -> None:
    config = cfg.parse("""
server: {admin_token: admin-token-0001}
providers:
  openai: {keys: [{value: env:K}], headers: {x-extra: header-secret-01}}
  bedrock: {type: bedrock, region: us-east-1, access_key_id: AKIAEXAMPLE01, secret_access_key: aws/secret+key01}
mcp:
  servers:
    gh: {command: npx, env: {GITHUB_TOKEN: ghp_example_0001}}
""", env={"K": "sk-from-env-0001"})
    found = set(config_secrets(config))
    assert {"admin-token-0001", "sk-from-env-0001", "header-secret-01", "aws/secret+key01",
            "ghp_example_0001"} <= found


def test_the_process_log_is_scrubbed_messages_arguments_and_tracebacks() -> None:
    secret = "sk-live-log-secret-0042"
    scrubber = Scrubber([secret])
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(LogScrub(lambda: scrubber))
    logger = logging.getLogger("tests.scrub.process-log")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.warning("upstream said: %s", f"bad key Bearer {secret}")
        try:
            raise RuntimeError(f"echoed {secret}")
        except RuntimeError:
            logger.exception("request %s failed", "r1")
        scrubber.learn("ya29.run-time-token-77")  # asked each time: a token learned later counts
        logger.info("token ya29.run-time-token-77 refreshed")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert secret not in text and "ya29.run-time-token-77" not in text
    assert text.count(MARK) == 3 and "RuntimeError: echoed [secret]" in text and "request r1 failed" in text
