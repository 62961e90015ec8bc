"""Fuzzing what clients send: every route, its parameters, its headers and its body.

Whatever arrives, the gateway answers a 4xx for bad input (never a 5xx of its own), in the
error shape its dialect uses, and a request that reached the router is logged once.
Upstream answers are fuzzed in tests/test_fuzz_upstream.py. Examples are bounded so the
module takes seconds, and derandomized under CI (tests/live.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.live import LiveGateway, live_gateway

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
MODELS = st.sampled_from(["openai/gpt-5", "groq/x", "nope/x", "", "openai/", "/", "gpt-5", "openai//a"]) | st.text()
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]) | st.text(max_size=5)},
    optional={"content": JSON, "tool_calls": JSON, "tool_call_id": JSON},
)
# numbers as the wire can carry them: out of int64, out of double, negative, fractional
NUMBERS = st.sampled_from([-1, 0, -0.5, 10**23, -(10**23), 1e308, 2**63, 1.5]) | st.integers()
CHAT_BODY = st.fixed_dictionaries(
    {},
    optional={
        "model": MODELS | JSON,
        "messages": st.lists(MESSAGE, max_size=3) | JSON,
        "stream": st.booleans() | JSON,
        "stream_options": JSON,
        "tools": JSON,
        "fallbacks": st.lists(MODELS, max_size=2) | JSON,
        "temperature": JSON,
        "max_tokens": NUMBERS | JSON,
        "max_completion_tokens": NUMBERS | JSON,
    },
)


def bounded(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# every route a client can reach, with what it reads
ROUTES = [
    ("POST", "/openai/chat/completions"), ("POST", "/v1/embeddings"), ("POST", "/openai/completions"),
    ("GET", "/openai/models"), ("GET", "/openai//models"), ("POST", "/openai/v1/responses"),
    ("GET", "/openai/v1/responses/{id}"), ("DELETE", "/v1/responses/{id}"),
    ("POST", "/anthropic/v1/messages"), ("POST", "/anthropic/v1/messages/count_tokens"),
    ("GET", "/anthropic/v1/models"), ("POST", "/mcp"), ("GET", "/mcp"), ("DELETE", "/mcp"),
    ("GET", "/api/mcp/servers"), ("GET", "/healthz"), ("GET", "/openapi.json"),
    ("GET", "/logs"), ("GET", "/logs/{id}"), ("GET", "/api/logs"), ("GET", "/api/logs/{id}"),
    ("GET", "/keys"), ("GET", "/api/keys"), ("POST", "/api/keys"), ("PATCH", "/api/keys/{id}"),
    ("POST", "/api/keys/{id}/rotate"), ("POST", "/api/teams"), ("GET", "/api/audit"), ("GET", "/login"), ("POST", "/login"),
    ("GET", "/static/logs.css"), ("OPTIONS", "/openai/chat/completions"), ("GET", "/nope"),
    ("POST", "/genai/v1beta/models/{id}:generateContent"), ("POST", "/genai/v1beta/models/{id}:streamGenerateContent"),
    ("POST", "/genai/v1/models/openai/gpt-5:countTokens"), ("GET", "/genai/v1beta/models"),
    ("GET", "/genai/v1beta/models/{id}"), ("POST", "/genai/v1beta/models/{id}:embedContent"),
]
# the query parameters any route reads (the log filters, login's next, Claude Code's beta)
PARAMS = ["q", "provider", "model", "key", "team", "status", "stream", "since", "until", "min_cost",
          "min_latency_ms", "limit", "cursor", "order", "totals", "preview", "next", "beta", "api-version"]
PARAM_VALUES = (st.text(max_size=30) | st.sampled_from(["²", "١٢", "1e400", "-1", "99999999999999999999999",
                                                        "t1.0~99999999999999999999999", "r1e400~1", "nan", "inf",
                                                        "2026-01-31T09:00Z", "0001-01-01T00:00+01:00", "true"]))
# request headers clients send (CLIENTS.md) and the ones the gateway reads, with any latin-1
# value (bytes that are not UTF-8 included); Content-Encoding is left to the body-size work
# (gzip bodies) and Content-Length to the HTTP parser
HEADERS = ["Host", "Authorization", "x-api-key", "Content-Type", "Accept", "Origin", "Sec-Fetch-Site", "Cookie",
           "Mcp-Session-Id", "MCP-Protocol-Version", "Mcp-Method", "Mcp-Name", "anthropic-version",
           "anthropic-beta", "X-Claude-Code-Session-Id", "session-id", "x-session-id", "User-Agent",
           "Access-Control-Request-Method", "Access-Control-Request-Headers", "X-Stainless-Retry-Count",
           "x-goog-api-key"]
HEADER_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"),
                       max_size=40) | st.sampled_from(["::1", "a, b", "[::1", "Bearer ", "application/json",
                                                        "text/event-stream", "2025-06-18", "-1", "null"])
BODIES = (
    CHAT_BODY.map(lambda b: json.dumps(b).encode())
    | JSON.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
    | st.integers(1, 2000).map(lambda n: b'{"model": "openai/gpt-5", "x": ' + b"[" * n + b"]" * n + b"}")
    | st.sampled_from([b"token=%ff%fe&next=/logs", b"token=\xff", b'{"a": 1e400}', b'{"a": NaN}',
                       b'{"m": "\\ud800"}', b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}'])
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    yield from live_gateway(tmp_path_factory)


def error_shape_ok(status: int, raw: bytes) -> bool:
    """A 4xx answers in one of the dialects' error shapes (OpenAI, Anthropic, Google, JSON-RPC) or as a page."""
    if status < 400 or not raw.startswith(b"{"):
        return True
    answer = json.loads(raw)
    err = answer.get("error")
    return isinstance(err, dict) and isinstance(err.get("message"), str)


def test_openapi_document_lists_the_public_paths(live: LiveGateway) -> None:
    status, raw = live.request("GET", "/openapi.json")
    doc = json.loads(raw)
    assert status == 200 and doc["openapi"].startswith("3.1")
    for path in ("/openai/chat/completions", "/v1/models", "/openai/v1/embeddings", "/healthz"):
        assert path in doc["paths"]


@bounded(300)
@given(body=CHAT_BODY)
def test_chat_never_answers_5xx_to_bad_input(live: LiveGateway, body: dict[str, Any]) -> None:
    before = live.rows_logged()
    status, raw = live.request("POST", "/openai/chat/completions", json.dumps(body).encode())
    assert status < 500, raw
    answer = json.loads(raw) if raw.startswith(b"{") else None
    if status >= 400:
        assert answer is not None and set(answer["error"]) == {"message", "type", "param", "code"}
    # a body that passed the route's checks reached the router (unknown providers included)
    routed = status == 200 or (answer is not None and answer["error"].get("code") not in (
        "invalid_json", "missing_required_parameter", "invalid_type"))
    assert live.rows_logged() - before == (1 if routed else 0)


@bounded(100)
@given(raw=st.binary(max_size=200))
def test_raw_bytes_never_crash_any_endpoint(live: LiveGateway, raw: bytes) -> None:
    for path in ("/openai/chat/completions", "/v1/embeddings", "/openai/completions"):
        status, _ = live.request("POST", path, raw)
        assert status < 500


@bounded(250)
@given(route=st.sampled_from(ROUTES), query=st.dictionaries(st.sampled_from(PARAMS), PARAM_VALUES, max_size=4),
       headers=st.dictionaries(st.sampled_from(HEADERS), HEADER_VALUE, max_size=3), body=BODIES,
       segment=PARAM_VALUES.filter(bool))
def test_every_route_parameter_and_header_gets_a_4xx_not_a_5xx(
    live: LiveGateway, route: tuple[str, str], query: dict[str, str], headers: dict[str, str], body: bytes,
    segment: str,
) -> None:
    method, path = route[0], route[1].replace("{id}", quote(segment, safe=""))
    qs = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query.items())
    status, raw = live.request(method, f"{path}?{qs}" if qs else path,
                               body if method in ("POST", "DELETE") else None, headers)
    assert status < 500 or status in (502, 503), (method, path, query, headers, status, raw[:300])
    assert b"internal error in the gateway" not in raw
    assert error_shape_ok(status, raw), raw[:300]
