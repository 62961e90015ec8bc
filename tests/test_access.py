"""Access and isolation: every route's mark, stored responses per key, fallbacks per key.

The route test walks the app's own router, so a route added later without a mark, or
marked public by mistake, fails here rather than in production.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from finopsd import access
from finopsd import config as cfg
from finopsd.app import build_app
from finopsd.appkeys import LOGSTORE
from tests.fakes import FakeUpstream, Reply
from tests.test_governance import key_line

MSGS: list[Any] = [{"role": "user", "content": "Say hello."}]
ALPHA, BRAVO, OTHER = "sk-fo-alpha-access-0000001", "sk-fo-bravo-access-0000002", "sk-fo-other-access-0000003"
ANTHROPIC_KEY = "sk-ant-upstream-secret-0001"
# the few routes anyone may call: none reaches an upstream or stored data
CHAT = {"id": "c1", "object": "chat.completion", "created": 0, "model": "m", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "Hello, world"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
PUBLIC = {("GET", "/healthz"), ("GET", "/openapi.json"), ("GET", "/login"), ("POST", "/login"), ("GET", "/mcp"),
          ("GET", "/mcp/"), ("GET", "/static/{name}")}


def governed_yaml(openai_url: str, anthropic_url: str, keys: str, extra: str = "") -> str:
    return f"""
server: {{admin_token: adm-token-access-test}}
auth: {{required: true}}
teams: {{red: {{}}, blue: {{}}}}
providers:
  openai:
    base_url: {openai_url}
    keys: [{{value: env:TEST_OPENAI_KEY}}]
    models: [gpt-5]
  groq:
    base_url: {openai_url}
    keys: [{{value: sk-groq-literal-secret}}]
    models: [llama-3.3-70b-versatile]
    max_retries: 0
  anthropic:
    type: anthropic
    base_url: {anthropic_url}
    keys: [{{value: {ANTHROPIC_KEY}}}]
    models: [claude-sonnet-4-5]
virtual_keys:
{keys}
{extra}
"""


KEYS = (key_line("alpha", ALPHA, team="red") + key_line("bravo", BRAVO, team="red")
        + key_line("other", OTHER, team="blue", models="['groq/*']"))


@pytest.fixture
async def gw(make_gateway: Any, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream) -> TestClient:
    return await make_gateway(governed_yaml(fake_openai.url, fake_anthropic.url, KEYS))


def routes(app: web.Application) -> list[tuple[str, str, Any]]:
    out = []
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        assert route.resource is not None
        out.append((route.method, route.resource.canonical, route.handler))
    return out


# a body that passes every route's own validation, so only the credentials are missing
ANY_BODY = {"model": "openai/gpt-5", "messages": MSGS, "input": "hi", "prompt": "hi", "max_tokens": 5,
            "jsonrpc": "2.0", "id": 1, "method": "tools/list"}


async def test_every_route_is_marked_and_refuses_a_caller_without_credentials(
    gw: TestClient, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> None:
    found = routes(gw.server.app)
    unmarked = [(m, p) for m, p, h in found if getattr(h, access.ATTR, None) is None]
    assert unmarked == []
    public = {(m, p) for m, p, h in found if getattr(h, access.ATTR).level == "public"}
    assert public == PUBLIC
    for method, path, handler in found:
        if (method, path) in PUBLIC:
            continue
        url = path.replace("{id}", "resp_abc").replace("{name}", "some-name")
        for auth in ({}, {"Authorization": "Bearer sk-fo-not-a-key"}):
            resp = await gw.request(method, url, json=ANY_BODY, allow_redirects=False,
                                    headers={"Accept": "application/json, text/event-stream", **auth})
            if resp.status == 429 and getattr(handler, access.ATTR).level == "admin":
                continue  # wrong admin tokens get throttled, on pages too
            if getattr(handler, access.ATTR).page:  # a browser goes to the login form instead
                assert resp.status == 303 and resp.headers["Location"].startswith("/login?"), (method, path)
            elif getattr(handler, access.ATTR).level == "admin":
                assert resp.status in (401, 429), (method, path, resp.status, await resp.text())
            else:
                assert resp.status == 401, (method, path, resp.status, await resp.text())
    assert fake_openai.requests == [] and fake_anthropic.requests == []


async def test_an_unmarked_route_is_closed(fake_openai: FakeUpstream, fake_anthropic: FakeUpstream,
                                           aiohttp_client: Any) -> None:
    app = build_app(cfg.parse(governed_yaml(fake_openai.url, fake_anthropic.url, KEYS), env={
        "TEST_OPENAI_KEY": "sk-upstream-openai-secret"}))

    async def forgotten(request: web.Request) -> web.Response:
        return web.json_response({"stored": "data"})

    app.router.add_get("/v1/forgotten", forgotten)
    client = await aiohttp_client(app)
    resp = await client.get("/v1/forgotten", headers={"Authorization": f"Bearer {ALPHA}"})
    assert resp.status == 401 and "data" not in await resp.text()  # closed as an admin route
    assert (await client.get("/v1/forgotten", headers={"Authorization": "Bearer adm-token-access-test"})).status == 200


async def test_count_tokens_needs_a_key_that_may_use_the_model_and_scrubs_the_answer(
    gw: TestClient, fake_anthropic: FakeUpstream
) -> None:
    url = str(gw.make_url("/anthropic"))
    fake_anthropic.answer_json({"type": "error", "error": {"type": "authentication_error",
                                "message": f"invalid x-api-key: {ANTHROPIC_KEY}"}}, status=401)
    async with anthropic.AsyncAnthropic(base_url=url, api_key="sk-fo-nobody", max_retries=0) as nobody:
        with pytest.raises(anthropic.AuthenticationError):
            await nobody.messages.count_tokens(model="anthropic/claude-sonnet-4-5", messages=MSGS)
    async with anthropic.AsyncAnthropic(base_url=url, api_key=OTHER, max_retries=0) as limited:
        with pytest.raises(anthropic.PermissionDeniedError):
            await limited.messages.count_tokens(model="anthropic/claude-sonnet-4-5", messages=MSGS)
    assert fake_anthropic.requests == []  # neither reached the upstream with our key
    async with anthropic.AsyncAnthropic(base_url=url, api_key=ALPHA, max_retries=0) as allowed:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await allowed.messages.count_tokens(model="anthropic/claude-sonnet-4-5", messages=MSGS)
    assert ANTHROPIC_KEY not in info.value.response.text and "[secret]" in info.value.response.text
    assert fake_anthropic.last.path == "/v1/messages/count_tokens"


async def test_model_lists_need_a_key_and_show_only_its_models(gw: TestClient) -> None:
    for path in ("/anthropic/v1/models", "/openai/models", "/v1/models"):
        assert (await gw.get(path)).status == 401
        resp = await gw.get(path, headers={"Authorization": f"Bearer {OTHER}"})
        assert [m["id"] for m in (await resp.json())["data"]] == ["groq/llama-3.3-70b-versatile"]


# --- stored responses belong to their key -----------------------------------------------


async def test_a_stored_response_is_only_its_keys(gw: TestClient, fake_openai: FakeUpstream) -> None:
    fake_openai.answer_json(CHAT)
    base = str(gw.make_url("/openai/v1"))
    async with openai.AsyncOpenAI(base_url=base, api_key=ALPHA, max_retries=0) as alpha, \
            openai.AsyncOpenAI(base_url=base, api_key=BRAVO, max_retries=0) as bravo, \
            openai.AsyncOpenAI(base_url=base, api_key=OTHER, max_retries=0) as other:
        made = await alpha.responses.create(model="groq/llama-3.3-70b-versatile", input="hi", store=True,
                                            stream=False)
        assert (await alpha.responses.retrieve(made.id)).id == made.id
        for stranger in (bravo, other):  # another key of the same team, a key of another team
            with pytest.raises(openai.NotFoundError):
                await stranger.responses.retrieve(made.id)
            with pytest.raises(openai.NotFoundError):
                await stranger.responses.delete(made.id)
            with pytest.raises(openai.NotFoundError):
                await stranger.responses.create(model="groq/llama-3.3-70b-versatile", input="and then?",
                                                previous_response_id=made.id)
        assert (await gw.get(f"/openai/v1/responses/{made.id}")).status == 401
        assert (await gw.delete(f"/openai/v1/responses/{made.id}")).status == 401
        assert (await alpha.responses.retrieve(made.id)).id == made.id  # still there, untouched
        later = await alpha.responses.create(model="groq/llama-3.3-70b-versatile", input="and then?",
                                             previous_response_id=made.id)
        assert later.output_text
        await alpha.responses.delete(made.id)
        with pytest.raises(openai.NotFoundError):
            await alpha.responses.retrieve(made.id)


async def test_store_failing_after_the_answer_still_answers_and_notes_it(
    gw: TestClient, fake_openai: FakeUpstream
) -> None:
    fake_openai.answer_json(CHAT)
    fake_openai.play("openai/text_stream.sse")
    store = gw.server.app[LOGSTORE]
    # what a full disk does to the insert, and only to it
    await store._on_writer(store._db.execute, "create trigger full_disk before insert on stored_responses"
                           " begin select raise(abort, 'database or disk is full'); end")
    async with openai.AsyncOpenAI(base_url=str(gw.make_url("/openai/v1")), api_key=ALPHA, max_retries=0) as alpha:
        for stream in (False, True):
            if stream:
                events = [e async for e in await alpha.responses.create(
                    model="groq/llama-3.3-70b-versatile", input="hi", store=True, stream=True)]
                made_id, text = events[-1].response.id, events[-1].response.output_text
            else:
                made = await alpha.responses.create(model="groq/llama-3.3-70b-versatile", input="hi", store=True)
                made_id, text = made.id, made.output_text
            assert text == "Hello, world"
            with pytest.raises(openai.NotFoundError):
                await alpha.responses.retrieve(made_id)
    await store.flush()
    rows = (await store.search())["items"]
    answered = [r for r in rows if r["status_code"] == 200]
    assert len(answered) == 2
    for row in answered:
        notes = [a.get("note", "") for a in (await store.get(row["id"]))["attempts"]]
        assert any("not stored" in n for n in notes)


# --- every model an exchange may reach passes the key's globs ------------------------------


async def test_config_fallbacks_outside_the_keys_models_are_never_tried(
    make_gateway: Any, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> None:
    extra = ("aliases: {fast: groq/llama-3.3-70b-versatile, smart: openai/gpt-5}\n"
             "fallbacks:\n  groq/llama-3.3-70b-versatile: [openai/gpt-5, smart]\n  fast: [openai/gpt-5]\n")
    gw = await make_gateway(governed_yaml(fake_openai.url, fake_anthropic.url, KEYS, extra))
    fake_openai.key_replies["Bearer sk-groq-literal-secret"] = Reply(
        status=500, json={"error": {"message": "groq is down"}}, content_type="application/json")
    fake_openai.answer_json(CHAT)
    base = str(gw.make_url("/openai"))
    async with openai.AsyncOpenAI(base_url=base, api_key=OTHER, max_retries=0) as limited:
        for model in ("groq/llama-3.3-70b-versatile", "fast"):
            with pytest.raises(openai.InternalServerError):
                await limited.chat.completions.create(model=model, messages=MSGS)
        with pytest.raises(openai.PermissionDeniedError):  # an alias to a model the key may not use
            await limited.chat.completions.create(model="smart", messages=MSGS)
    used = [r.headers.get("Authorization") for r in fake_openai.requests]
    assert used and set(used) == {"Bearer sk-groq-literal-secret"}  # openai/gpt-5 was never called
    async with openai.AsyncOpenAI(base_url=base, api_key=ALPHA, max_retries=0) as unlimited:
        answer = await unlimited.chat.completions.create(model="groq/llama-3.3-70b-versatile", messages=MSGS)
    assert answer.choices[0].message.content == "Hello, world"  # a key with every model falls back
