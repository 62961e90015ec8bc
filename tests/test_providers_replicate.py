"""Replicate adapter: chat → prediction, the follow-up call, and the output stream; no network.

Fixtures under tests/fixtures/replicate/ follow the documented prediction object (status, urls,
output as a list of string pieces, metrics with token counts) and the SSE stream of ``urls.stream``
(``output`` events whose text pieces keep their leading spaces and split newlines over several
``data:`` lines, a ``logs`` event, ``done`` with ``{}``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finopsd.config import ProviderConfig
from finopsd.errors import BadRequest, UpstreamError, UpstreamTimeout
from finopsd.providers.base import Target
from finopsd.providers.replicate import ReplicateAdapter
from finopsd.sse import SSEDecoder

FIXTURES = Path(__file__).parent / "fixtures" / "replicate"
ADAPTER = ReplicateAdapter()
BASE = "https://api.replicate.com/v1"
LLAMA = "meta/meta-llama-3-70b-instruct"
HAIKU = "Here is a haiku:\n\nAutumn moonlight—\na worm digs silently\ninto the chestnut."


def target(model: str = LLAMA, key: str | None = "r8_testtoken") -> Target:
    provider = ProviderConfig(name="replicate", type="replicate", base_url=BASE)
    return Target(provider, model, key, "replicate-0" if key else None)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def build(req: dict[str, Any], model: str = LLAMA, stream: bool = False) -> tuple[Any, dict[str, Any]]:
    call = ADAPTER.build_request(target(model), req, stream=stream)
    return call, json.loads(call.body)


# --- request -----------------------------------------------------------------------------------


def test_official_model_goes_to_its_predictions_path_with_prompt_and_limits() -> None:
    call, body = build({"messages": [{"role": "system", "content": "You write haiku."},
                                     {"role": "user", "content": "Write a haiku about autumn"}],
                        "max_tokens": 512, "temperature": 0.6, "top_p": 0.9})
    assert call.url == f"{BASE}/models/meta/meta-llama-3-70b-instruct/predictions"
    assert call.headers["Authorization"] == "Bearer r8_testtoken" and call.headers["Prefer"] == "wait"
    assert body == {"input": {"prompt": "Write a haiku about autumn", "system_prompt": "You write haiku.",
                              "max_tokens": 512, "max_new_tokens": 512, "temperature": 0.6, "top_p": 0.9}}


def test_pinned_version_goes_to_predictions_with_version_and_stream_flag() -> None:
    call, body = build({"messages": [{"role": "user", "content": "hi"}]},
                       model="meta/llama-2-70b-chat:02e509c789964a7ea8736978a43525956ef40397be9033abf9fd2badfe68c9e3",
                       stream=True)
    assert call.url == f"{BASE}/predictions"
    assert body["version"] == "02e509c789964a7ea8736978a43525956ef40397be9033abf9fd2badfe68c9e3"
    assert body["stream"] is True and "Prefer" not in call.headers


def test_a_conversation_becomes_a_labelled_transcript() -> None:
    _, body = build({"messages": [{"role": "user", "content": "Name a colour"},
                                  {"role": "assistant", "content": "Blue."},
                                  {"role": "user", "content": [{"type": "text", "text": "Another"}]}]})
    assert body["input"]["prompt"] == "User: Name a colour\n\nAssistant: Blue.\n\nUser: Another"


def test_tools_are_refused_with_a_clear_400() -> None:
    tools = [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]
    with pytest.raises(BadRequest, match="no tool calling") as info:
        build({"messages": [{"role": "user", "content": "hi"}], "tools": tools})
    assert info.value.status == 400 and info.value.param == "tools"


def test_a_model_name_without_owner_is_refused() -> None:
    with pytest.raises(BadRequest, match="owner/name"):
        build({"messages": [{"role": "user", "content": "hi"}]}, model="llama3")


# --- follow-up calls ---------------------------------------------------------------------------


def test_stream_followup_reads_urls_stream_with_auth_and_event_stream_accept() -> None:
    follow = ADAPTER.followup(target(), fixture("prediction_starting.json"), stream=True)
    assert follow is not None and follow.method == "GET"
    assert follow.url == "https://stream.replicate.com/v1/files/bcwr-3okdfv3o2mqtv3hnl6vgwuac2ftyk5zr67ukgohybxdsfmcwfbdq"
    assert follow.headers["Accept"] == "text/event-stream" and follow.headers["Authorization"] == "Bearer r8_testtoken"


def test_non_stream_followup_waits_on_urls_get_only_while_running() -> None:
    follow = ADAPTER.followup(target(), fixture("prediction_starting.json"), stream=False)
    assert follow is not None and follow.method == "GET" and follow.headers["Prefer"] == "wait"
    assert follow.url == f"{BASE}/predictions/gm3qorzdhgbfurvjtvhg6dckhu"
    assert ADAPTER.followup(target(), fixture("prediction_succeeded.json"), stream=False) is None


def test_model_without_stream_url_is_refused_for_streaming() -> None:
    prediction = json.loads(fixture("prediction_starting.json"))
    del prediction["urls"]["stream"]
    with pytest.raises(UpstreamError, match="does not stream") as info:
        ADAPTER.followup(target(), json.dumps(prediction).encode(), stream=True)
    assert info.value.status == 400


def test_failed_prediction_raises_with_its_error() -> None:
    prediction = {**json.loads(fixture("prediction_starting.json")), "status": "failed",
                  "error": "CUDA out of memory"}
    with pytest.raises(UpstreamError, match="CUDA out of memory"):
        ADAPTER.followup(target(), json.dumps(prediction).encode(), stream=False)


# --- answers -----------------------------------------------------------------------------------


def test_succeeded_prediction_joins_output_pieces_and_reports_token_usage() -> None:
    done = ADAPTER.parse_response(target(), fixture("prediction_succeeded.json"))
    assert done["choices"][0]["message"] == {"role": "assistant", "content": HAIKU}
    assert done["choices"][0]["finish_reason"] == "stop"
    assert (done["usage"]["prompt_tokens"], done["usage"]["completion_tokens"], done["usage"]["total_tokens"]) == (25, 21, 46)
    assert done["id"] == "chatcmpl-gm3qorzdhgbfurvjtvhg6dckhu"


def test_prediction_still_running_after_the_wait_is_a_timeout() -> None:
    with pytest.raises(UpstreamTimeout, match="still starting"):
        ADAPTER.parse_response(target(), fixture("prediction_starting.json"))


def test_stream_output_pieces_keep_spaces_and_newlines_then_stop() -> None:
    raw = fixture("stream_text.sse")
    decoder, state = SSEDecoder(), ADAPTER.new_stream(target())
    chunks: list[dict[str, Any]] = []
    for i in range(0, len(raw), 9):
        for event, data in decoder.feed(raw[i : i + 9]):
            chunks.extend(ADAPTER.parse_event(state, event, data))
    ds = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content", "") for d in ds) == HAIKU
    assert ds[0]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"
    assert ADAPTER.finish_stream(state) == []  # the stream carries no usage


def test_stream_error_event_raises_with_its_detail() -> None:
    state = ADAPTER.new_stream(target())
    with pytest.raises(UpstreamError, match="input too long"):
        ADAPTER.parse_event(state, "error", '{"detail": "input too long"}')


def test_done_with_canceled_reason_raises() -> None:
    state = ADAPTER.new_stream(target())
    assert ADAPTER.parse_event(state, "output", "partial")[0]["choices"][0]["delta"]["content"] == "partial"
    with pytest.raises(UpstreamError, match="canceled"):
        ADAPTER.parse_event(state, "done", '{"reason": "canceled"}')


def test_error_bodies_use_the_problem_detail() -> None:
    err = ADAPTER.parse_error(422, b'{"title": "Input validation failed", "detail": "- input.max_tokens: Must be less than or equal to 8192", "status": 422}')
    assert err.status == 422 and "max_tokens" in err.message
