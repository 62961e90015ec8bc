"""The editing parts of /keys: forms for keys and teams, row actions, the audit trail.

Every value is escaped here. The forms post nothing themselves: ``/static/keys.js`` turns
them into admin API calls carrying the page's CSRF token (``finopsd.admin.csrf_token``).
Entries from the config file get no form: the file is their source of truth.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any, Final
from urllib.parse import quote

from finopsd.keyconfig import PERIODS

__all__ = ["PAGE_SIZE", "audit_table", "edit_form", "new_forms", "row_actions"]

PAGE_SIZE: Final = 200  # keys per page: 10,000 keys stay a page you can load


def _esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _input(label: str, name: str, value: Any = "", kind: str = "text", hint: str = "") -> str:
    extra = f' placeholder="{_esc(hint)}"' if hint else ""
    return (f'<label>{_esc(label)} <input type="{kind}" name="{name}" value="{_esc(value)}"{extra}'
            f'{" min=1" if kind == "number" else ""}></label>')


def _budget_text(budgets: list[dict[str, Any]]) -> str:
    return ", ".join(f"{b['usd']:g}/{b['period']}" for b in budgets)


def _fields(kind: str, item: dict[str, Any] | None) -> str:
    item = item or {}
    rate = item.get("rate") or {}
    parts = []
    if kind == "key":
        parts += [_input("team", "team", item.get("team")),
                  _input("models", "models", ", ".join(item.get("models") or []), hint="openai/*, anthropic/* (all)")]
    parts += [_input("budgets", "budgets", _budget_text(item.get("budgets") or []),
                     hint=f"5/day, 100/month ({'/'.join(PERIODS)})"),
              _input("requests/min", "rpm", rate.get("requests_per_minute"), "number"),
              _input("tokens/min", "tpm", rate.get("tokens_per_minute"), "number")]
    if kind == "key":
        parts.append(_input("expires", "expires", item.get("expires"), hint="2027-01-01"))
    parts += [_input("description", "description", item.get("description")),
              _input("owner", "owner", item.get("owner"))]
    if kind == "key":
        checked = " checked" if item.get("status", "active") != "disabled" else ""
        parts.append(f'<label><input type="checkbox" name="enabled"{checked}> enabled</label>')
    return "".join(parts)


def new_forms() -> str:
    """The create forms, and the box where a new secret is shown once."""
    return (
        '<section class="editor"><h2>New key</h2>'
        '<form class="api-form" id="new-key" data-method="POST" data-url="/api/keys" data-kind="key">'
        f'{_input("name", "name", hint="platform-roo")}{_fields("key", None)}'
        '<button type="submit">Create key</button></form>'
        '<div id="shown-once" class="shown-once" hidden><p><b>The new key, shown this once:</b></p>'
        '<p><input id="secret" readonly size="60"> <button type="button" id="copy">Copy</button></p>'
        '<p>Roo Code profile (API Provider: OpenAI Compatible):</p><pre id="roo-profile"></pre>'
        '<p><a href="/keys">done: show it in the list</a></p></div>'
        '<h2>New team</h2>'
        '<form class="api-form" id="new-team" data-method="POST" data-url="/api/teams" data-kind="team">'
        f'{_input("name", "name", hint="platform")}{_fields("team", None)}'
        '<button type="submit">Create team</button></form>'
        '<p id="problem" class="problem" role="alert"></p></section>'
    )


def _url(kind: str, name: str) -> str:
    return f"/api/{kind}s/{quote(name, safe='')}"


def edit_form(kind: str, item: dict[str, Any]) -> str:
    """An entry's edit form (dashboard entries only); it sends the version it was drawn from."""
    if item.get("source") != "dashboard":
        return '<span class="muted">config file (read-only)</span>'
    url = _esc(_url(kind, item["name"]))
    return (f'<details><summary>edit</summary><form class="api-form" data-method="PATCH" data-url="{url}"'
            f' data-kind="{kind}" data-version="{_esc(item["version"])}">{_fields(kind, item)}'
            '<button type="submit">Save</button></form></details>')


def row_actions(kind: str, item: dict[str, Any]) -> str:
    if item.get("source") != "dashboard":
        return ""
    url, version = _esc(_url(kind, item["name"])), _esc(item["version"])
    buttons = []
    if kind == "key":
        buttons.append(f'<button type="button" class="api-action" data-method="POST" data-url="{url}/rotate"'
                       f' data-version="{version}">rotate</button>')
        enabled = item.get("status") != "disabled"
        body = _esc(json.dumps({"enabled": not enabled}))
        buttons.append(f'<button type="button" class="api-action" data-method="PATCH" data-url="{url}"'
                       f' data-version="{version}" data-body="{body}">{"disable" if enabled else "enable"}</button>')
    buttons.append(f'<button type="button" class="api-action" data-method="DELETE" data-url="{url}"'
                   f' data-version="{version}" data-confirm="delete {_esc(kind)} {_esc(item["name"])}?">delete</button>')
    return f'<div class="actions">{"".join(buttons)}</div>'


def _change(before: Any, after: Any) -> str:
    if not isinstance(before, dict) or not isinstance(after, dict):
        shown = after if after is not None else before
        return _esc(json.dumps(shown, sort_keys=True)) if shown is not None else ""
    changed = [f"{k}: {json.dumps(before.get(k))} → {json.dumps(after.get(k))}"
               for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    return _esc("; ".join(changed) or "no change")


def audit_table(items: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{_esc(a['time'])}</td><td>{_esc(a['actor'])}</td><td>{_esc(a['client_ip'] or '—')}</td>"
        f"<td>{_esc(a['action'])}</td><td>{_esc(a['kind'])} <b>{_esc(a['name'])}</b></td>"
        f"<td>{_change(a['before'], a['after'])}</td></tr>"
        for a in items
    ) or '<tr><td colspan="6" class="muted">no changes yet</td></tr>'
    return ('<h2>Audit trail</h2><table class="rows audit"><thead><tr><th>time</th><th>actor</th><th>client</th>'
            f'<th>action</th><th>what</th><th>change</th></tr></thead><tbody>{rows}</tbody></table>'
            '<p class="muted">all of it: <a href="/api/audit">/api/audit</a></p>')
