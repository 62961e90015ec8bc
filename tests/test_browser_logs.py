"""/logs in a real browser: headless Chromium (Debian's package) loads both views, searches,
opens a session's timeline and a request, watches both update live; screenshots land in
``test-artifacts/``.

``scripts/test`` installs ``chromium`` with apt when it is missing. Playwright's own
browser download is never used (``executable_path`` points at the system browser). A
missing browser fails this test with the fix in the message: skipping would hide that
the page was never tried.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.fakes import FakeUpstream
from tests.test_routes_logs import ANSWER, CHAT, TOOL_TURN
from tests.test_routes_openai import MSGS, TOOLS

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-proxy-server",  # the gateway under test is on 127.0.0.1; a proxy from the env must not intercept it
]  # fmt: skip


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if executable is None:
        pytest.fail(f"{CHROMIUM} not found: run scripts/test (it installs Debian's chromium),"
                    " or apt-get install chromium")
    try:
        from playwright.async_api import async_playwright  # noqa: PLC0415 - the message below beats an ImportError
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]' (never `playwright install`)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=executable, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


async def open_page(browser: Any) -> tuple[Any, list[str]]:
    """A fresh tab, and the list where its script errors and CSP refusals show up."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(f"{m.text} {m.location}") if m.type == "error" else None)
    return page, problems


async def send_traffic(gateway: TestClient, fake: FakeUpstream) -> None:
    """One agent task in two turns: the model calls two tools, then answers from their results."""
    fake.play("openai/parallel_tool_calls.sse")
    fake.answer_json(ANSWER)
    first = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": MSGS, "tools": TOOLS, "stream": True})
    await first.read()
    second = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": TOOL_TURN, "tools": TOOLS})
    await second.read()


async def test_logs_page_search_detail_and_live_tail_in_chromium(
    gateway: TestClient, fake_openai: FakeUpstream, browser: Any
) -> None:
    await send_traffic(gateway, fake_openai)
    page, problems = await open_page(browser)

    # the list: both requests, newest first, within a second of being made
    await page.goto(str(gateway.make_url("/logs?view=requests")))
    rows = page.locator("#rows tbody tr")
    await rows.nth(1).wait_for(timeout=1000)
    assert await rows.count() == 2
    assert (await page.inner_text("#totals")).startswith("2 requests")
    await page.screenshot(path=str(ARTIFACTS / "logs-list.png"), full_page=True)

    # search: a word only the tool result holds; the hit comes back highlighted
    await page.fill("input[name=q]", "quokka")
    await page.press("input[name=q]", "Enter")
    await page.wait_for_url("**/logs?q=quokka*view=requests*")
    assert await rows.count() == 1
    assert await page.inner_text("#rows mark") == "quokka"
    await page.screenshot(path=str(ARTIFACTS / "logs-search.png"), full_page=True)

    # the detail page: tool calls by name with their arguments, the tool result, the answer
    await rows.first.locator("td.prompt a").click()
    await page.wait_for_url("**/logs/*")
    await page.locator("article.final").wait_for()
    text = await page.inner_text("main")
    assert "read_file" in text and "list_files" in text and '"recursive": true' in text
    assert "tool result for read_file" in text and "print('quokka')" in text
    assert "main.py prints quokka; one test file exists." in await page.inner_text("article.final")
    assert not await page.locator("details.raw pre").is_visible()
    await page.click("details.raw summary")
    assert await page.locator("details.raw pre").is_visible()
    await page.click("details.raw summary")  # closed again for the screenshot
    await page.screenshot(path=str(ARTIFACTS / "logs-detail.png"), full_page=True)

    # live tail: a request made while the page is open shows up at the top by itself
    await page.goto(str(gateway.make_url("/logs?view=requests")))
    await page.check("#tail")
    fake_openai.play("openai/text_stream.sse")
    hello = [{"role": "user", "content": "say hello to the tail"}]
    resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "stream": True, "messages": hello})
    await resp.read()
    new_id = resp.headers["x-request-id"]
    await page.locator(f'#rows tbody tr[data-id="{new_id}"]').wait_for(timeout=6000)  # polls every 2 s
    assert await rows.first.get_attribute("data-id") == new_id and await rows.count() == 3
    assert "say hello to the tail" in await rows.first.inner_text()
    await page.wait_for_function("document.getElementById('totals').textContent.startsWith('3 requests')")
    await page.screenshot(path=str(ARTIFACTS / "logs-tail.png"), full_page=True)
    assert problems == []


async def test_sessions_view_search_timeline_and_live_updates_in_chromium(
    gateway: TestClient, fake_openai: FakeUpstream, browser: Any
) -> None:
    page, problems = await open_page(browser)
    rows = page.locator("#rows tbody tr")

    # /logs opens on sessions, live: the first task shows up by itself, the empty notice goes
    await page.goto(str(gateway.make_url("/logs")))
    assert await page.inner_text("#empty") == "No sessions match these filters."
    await send_traffic(gateway, fake_openai)
    await rows.first.wait_for(timeout=6000)  # refreshes every 2 s
    assert await page.locator("#empty").count() == 0

    # the two requests are one task, still running
    await page.reload()
    assert await rows.count() == 1
    cells = await rows.first.locator("td").all_inner_texts()
    assert cells[1] == "—" and cells[2] == "Read src/main.py and list tests." and cells[3] == "openai/gpt-5"
    assert cells[4] == "2" and cells[8].endswith("running")
    assert (await page.inner_text("#totals")).startswith("1 session · 2 requests")
    assert await page.get_attribute(".views a.on", "href") == "/logs"
    await page.screenshot(path=str(ARTIFACTS / "sessions-list.png"), full_page=True)

    # search: the hit names the turn where the word first came (the tool result turn 2 sent)
    await page.fill("input[name=q]", "quokka")
    await page.press("input[name=q]", "Enter")
    await page.wait_for_url("**/logs?q=quokka*")
    assert await rows.count() == 1
    assert (await rows.first.locator("td.prompt").inner_text()).startswith("turn 2")
    assert await page.inner_text("#rows mark") == "quokka"
    await page.screenshot(path=str(ARTIFACTS / "sessions-search.png"), full_page=True)

    # the hit opens the timeline at that turn; each turn shows only what it added
    await rows.first.locator("td.prompt a").click()
    await page.wait_for_url("**/logs/sessions/*#turn-2")
    first, second = page.locator("#turn-1"), page.locator("#turn-2")
    assert "You are Roo." in await first.inner_text() and "Read src/main.py" in await first.inner_text()
    assert "read_file" in await first.locator("article.final").inner_text()
    text = await second.inner_text()
    assert "You are Roo." not in text and "Read src/main.py and list tests." not in text
    assert "tool result for read_file" in text and "print('quokka')" in text
    assert "main.py prints quokka" in await second.locator("article.final").inner_text()
    assert "210 → 12 tokens" in await second.locator(".turn-head").inner_text()
    await page.screenshot(path=str(ARTIFACTS / "session-timeline.png"), full_page=True)

    # live: the agent's next turn appears on the open timeline by itself
    fake_openai.answer_json({**ANSWER, "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "Added tests/test_quokka.py."}}]})
    third = [*TOOL_TURN, ANSWER["choices"][0]["message"], {"role": "user", "content": "now add a quokka test"}]
    resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "messages": third, "tools": TOOLS})
    await resp.read()
    await page.locator("#turn-3").wait_for(timeout=6000)  # polls every 2 s
    turn3 = await page.inner_text("#turn-3")
    assert "now add a quokka test" in turn3 and "Added tests/test_quokka.py." in turn3
    assert "main.py prints quokka" not in turn3  # the previous answer is history, not new
    assert await page.inner_text("#facts .fact-turns") == "3"

    # a turn links to its request's own page, and that page back to the session
    await page.locator("#turn-3 a.request-link").click()
    await page.wait_for_url("**/logs/*")
    assert "Added tests/test_quokka.py." in await page.inner_text("article.final")
    await page.click("a.session-link")
    await page.wait_for_url("**/logs/sessions/*#turn-3")

    # live list: a new task shows up on top, and the running one's row keeps up
    await page.goto(str(gateway.make_url("/logs")))
    fake_openai.play("openai/text_stream.sse")
    hello = [{"role": "user", "content": "say hello to the sessions view"}]
    resp = await gateway.post(CHAT, json={"model": "openai/gpt-5", "stream": True, "messages": hello})
    await resp.read()
    await rows.nth(1).wait_for(timeout=6000)  # a string predicate would need 'unsafe-eval', which the CSP refuses
    assert "say hello to the sessions view" in await rows.first.inner_text()
    assert (await rows.nth(1).locator("td").all_inner_texts())[4] == "3"
    await page.locator("#totals", has_text="2 sessions · 4 requests").wait_for(timeout=6000)  # the next poll
    await page.screenshot(path=str(ARTIFACTS / "sessions-live.png"), full_page=True)

    # the requests view is one click away
    await page.click(".views a[href='/logs?view=requests']")
    await page.wait_for_url("**/logs?view=requests")
    assert await page.locator("#rows tbody tr").count() == 4
    assert problems == []
