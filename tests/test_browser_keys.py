"""/keys in headless Chromium: log in, create a key, use it at once from the openai SDK, edit its
budget, rotate and delete it, all in the browser; a cross-site form and a fetch without the page's
CSRF token are refused. Screenshots land in ``test-artifacts/``."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream
from tests.test_browser_logs import ARTIFACTS, browser, open_page  # noqa: F401 - the fixture
from tests.test_governance import PRICING, ask, refused

TOKEN = "adm-browser-token-1"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def gateway_for_keys(make_gateway: GatewayFactory, fake_openai: FakeUpstream) -> TestClient:
    fake_openai.play("openai/text_stream.sse")
    return await make_gateway(gateway_yaml(fake_openai.url, f"auth: {{required: true}}\n{PRICING}"
                                           f"server: {{admin_token: {TOKEN}}}\n"))


async def test_create_use_edit_rotate_delete_a_key_in_chromium(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, browser: Any  # noqa: F811
) -> None:
    gw = await gateway_for_keys(make_gateway, fake_openai)
    page, problems = await open_page(browser)
    await page.goto(str(gw.make_url("/keys")))
    await page.fill("input[name=token]", TOKEN)  # sent to the login form, then back to /keys
    await page.click("button[type=submit]")
    await page.wait_for_url("**/keys")

    form = page.locator("#new-key")
    await form.locator("input[name=name]").fill("browser-key")
    await form.locator("input[name=budgets]").fill("0.01/day")
    await form.locator("input[name=models]").fill("openai/*")
    await form.locator("input[name=owner]").fill("ana")
    await form.locator("button[type=submit]").click()
    await page.locator("#shown-once").wait_for(state="visible")
    secret = await page.input_value("#secret")
    profile = await page.inner_text("#roo-profile")
    assert secret.startswith("sk-fo-") and f"Base URL: {gw.make_url('/openai')}" in profile
    assert f"API Key:  {secret}" in profile and "Model:    openai/gpt-5" in profile
    await page.screenshot(path=str(ARTIFACTS / "keys-created.png"), full_page=True)

    assert await ask(gw, secret)  # live at once: no file, no restart
    assert (await refused(gw, secret)).status_code == 402

    await page.goto(str(gw.make_url("/keys")))
    row = page.locator('table.keys tr[data-name="browser-key"]')
    assert "ana" in await row.inner_text()
    await row.locator("summary").click()
    await row.locator("input[name=budgets]").fill("5/day")
    async with page.expect_navigation():  # saved, the page reloads
        await row.locator("form button[type=submit]").click()
    assert "of $5.00 / day" in await page.locator('table.keys tr[data-name="browser-key"]').inner_text()
    assert await ask(gw, secret)  # the next request is admitted

    row = page.locator('table.keys tr[data-name="browser-key"]')
    await row.locator("button", has_text="rotate").click()
    await page.locator("#shown-once").wait_for(state="visible")
    rotated = await page.input_value("#secret")
    assert rotated != secret
    assert (await refused(gw, secret)).status_code == 401
    assert await ask(gw, rotated)
    view = await (await gw.get("/api/keys/browser-key", headers=BEARER)).json()
    assert view["usage"]["budgets"][0]["spent_usd"] > 0.03  # three requests' spend kept across the rotation

    await page.goto(str(gw.make_url("/keys")))
    page.on("dialog", lambda dialog: dialog.accept())
    await page.locator('table.keys tr[data-name="browser-key"] button', has_text="delete").click()
    await page.locator('table.keys tr[data-name="browser-key"]').wait_for(state="detached")
    assert (await refused(gw, rotated)).status_code == 401
    logged = await (await gw.get("/api/logs?key=browser-key", headers=BEARER)).json()
    assert logged["totals"]["requests"] == 4  # 3 answered and the 402, still under its name after the delete
    audit = await page.inner_text("table.audit")
    assert "delete" in audit and "rotate" in audit and "admin session" in audit
    await page.screenshot(path=str(ARTIFACTS / "keys-audit.png"), full_page=True)

    assert problems == []  # no script error, no CSP refusal
    # the cookie alone is not enough: the page's own fetch without the token is refused
    status = await page.evaluate("""fetch('/api/keys', {method: 'POST', headers: {'Content-Type':
        'application/json'}, body: JSON.stringify({name: 'no-token'})}).then(r => r.status)""")
    assert status == 403
    page_html = await page.content()
    assert secret not in page_html and rotated not in page_html


async def test_a_cross_site_form_cannot_make_a_key(
    make_gateway: GatewayFactory, fake_openai: FakeUpstream, browser: Any, aiohttp_server: Any  # noqa: F811
) -> None:
    gw = await gateway_for_keys(make_gateway, fake_openai)
    target = gw.make_url("/api/keys")
    evil = web.Application()

    async def lure(request: web.Request) -> web.Response:  # a page the admin merely visits
        return web.Response(content_type="text/html", text=f"""<form id="f" method="post" action="{target}"
            enctype="text/plain"><input name='{{"name": "evil", "x": "' value='"}}'></form>
            <script>document.getElementById("f").submit()</script>""")

    evil.router.add_get("/", lure)
    evil_server = await aiohttp_server(evil)
    page, _ = await open_page(browser)
    await page.goto(str(gw.make_url("/login")))
    await page.fill("input[name=token]", TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/logs*")
    await page.goto(str(evil_server.make_url("/").with_host("localhost")))
    await page.wait_for_url(f"**{target.path}")  # the form went through to the gateway...
    assert "evil" not in [k["name"] for k in (await (await gw.get("/api/keys", headers=BEARER)).json())["keys"]]
    body = await page.inner_text("body")
    assert '"status"' not in body and "cross_site_refused" in body  # ...and was refused

