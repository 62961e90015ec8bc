"""The ``/logs/{id}`` page: one exchange as a person reads it.

Turns by role; an assistant's tool calls with their arguments indented; each tool
result under the name of the call it answers; the gateway's answer last; the
error, the attempts, token/cost/latency facts; and the raw JSON behind a toggle.
Long system prompts fold away (a coding agent's runs to many kilobytes and is the
same in every row). Everything from the row is escaped here.
"""

from __future__ import annotations

import json
from typing import Any, Final

from finopsd.log.text import text_of
from finopsd.web.items import fmt_cost, fmt_ms, pretty_json
from finopsd.web.pages import esc, render_page, session_href, template

__all__ = ["call_names_of", "message_html", "render_detail"]

FOLD_CHARS: Final = 600  # system prompts longer than this start folded
ROLE_LABELS: Final = {"system": "system", "developer": "developer", "user": "user", "assistant": "assistant",
                      "tool": "tool result", "function": "function result"}  # fmt: skip


def _text(text: str) -> str:
    return f'<div class="text">{esc(text)}</div>' if text else ""


def _part(part: Any) -> str:
    """One content part: text as text; an image as a line naming it (never loaded: no remote fetch)."""
    if isinstance(part, str):
        return _text(part)
    if not isinstance(part, dict):
        return f"<pre>{esc(json.dumps(part, ensure_ascii=False))}</pre>"
    kind = part.get("type")
    if kind == "text" or (kind is None and isinstance(part.get("text"), str)):
        return _text(str(part.get("text") or ""))
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        shown = str(url or "")
        if len(shown) > 120:
            shown = shown[:117] + "…"
        return f'<p class="part">[image: <code>{esc(shown)}</code>]</p>'
    return f'<pre class="part">{esc(json.dumps(part, indent=2, ensure_ascii=False))}</pre>'


def _content(content: Any) -> str:
    if isinstance(content, list):
        return "".join(_part(p) for p in content)
    if content is None:
        return ""
    return _part(content) if isinstance(content, str | dict) else _text(str(content))


def _tool_call(call: Any) -> str:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict):
        return f'<pre class="call">{esc(json.dumps(call, ensure_ascii=False))}</pre>'
    return (
        f'<div class="call"><div class="call-head">calls <b class="tool-name">{esc(fn.get("name"))}</b>'
        f' <code class="muted">{esc(call.get("id"))}</code></div>'
        f'<pre class="args">{esc(pretty_json(fn.get("arguments", "")))}</pre></div>'
    )


def message_html(message: dict[str, Any], call_names: dict[str, str], partial: bool) -> str:
    """One turn as an ``<article>`` (a long system prompt as a folded ``<details>``)."""
    role = str(message.get("role") or "?")
    label = esc(ROLE_LABELS.get(role, role))
    body = ""
    if isinstance(message.get("reasoning_content"), str) and message["reasoning_content"]:
        reasoning = _text(message["reasoning_content"])
        body += f'<details class="reasoning"><summary>reasoning</summary>{reasoning}</details>'
    body += _content(message.get("content"))
    for call in message.get("tool_calls") or ():
        body += _tool_call(call)
    if role == "tool":
        call_id = str(message.get("tool_call_id") or "")
        name = call_names.get(call_id)
        label += f' for <b class="tool-name">{esc(name)}</b>' if name else ""
        label += f' <code class="muted">{esc(call_id)}</code>' if call_id else ""
    elif message.get("name"):
        label += f" · {esc(message['name'])}"
    if message.get("final"):
        label = "answer" if not message.get("tool_calls") else "answer · tool calls"
        label += " (partial)" if partial else ""
    classes = f"msg role-{esc(role)}" + (" final" if message.get("final") else "")
    if role in ("system", "developer") and len(text_of(message.get("content"))) > FOLD_CHARS:
        size = len(text_of(message.get("content")))
        return (
            f'<details class="{classes}"><summary class="who">{label}'
            f' <span class="muted">({size:,} characters)</span></summary>{body}</details>'
        )
    if not body:
        body = '<p class="muted">(empty)</p>'
    return f'<article class="{classes}"><div class="who">{label}</div>{body}</article>'


def call_names_of(messages: list[dict[str, Any]]) -> dict[str, str]:
    """Tool-call id -> name: tool results name their call by id only; the page shows the name."""
    return {
        str(call.get("id")): str((call.get("function") or {}).get("name"))
        for message in messages for call in message.get("tool_calls") or () if isinstance(call, dict)
    }  # fmt: skip


def _conversation(item: dict[str, Any]) -> str:
    turns = item.get("conversation")
    if turns is None:
        return '<p class="muted">The conversation was not stored (<code>logs.content: false</code>).</p>'
    call_names = call_names_of(turns)
    partial = item.get("status") != "ok"
    out = [message_html(turn, call_names, partial) for turn in turns]
    if not any(turn.get("final") for turn in turns):
        out.append('<p class="muted no-answer">No answer was received.</p>')
    request = item["request"] if isinstance(item.get("request"), dict) else {}
    tools: list[Any] = []
    for tool in request.get("tools") or ():
        if isinstance(tool, dict):
            spec = tool["function"] if isinstance(tool.get("function"), dict) else tool
            tools.append(spec.get("name"))
    if tools:
        names = ", ".join(f"<code>{esc(n)}</code>" for n in tools if isinstance(n, str))
        out.insert(0, f'<p class="tools">tools offered: {names}</p>')
    return "\n".join(out)


def _facts(item: dict[str, Any]) -> str:
    usage = item.get("usage") or {}
    status = f"{item.get('status') or '?'}" + (f" ({item['status_code']})" if item.get("status_code") else "")
    cost = fmt_cost(item.get("cost_usd")) + (f" ({item['cost_flags']})" if item.get("cost_flags") else "")
    tokens = (
        f"{usage.get('prompt_tokens') if usage.get('prompt_tokens') is not None else '—'} prompt"
        f" ({usage.get('cached_tokens') or 0} cached) → "
        f"{usage.get('completion_tokens') if usage.get('completion_tokens') is not None else '—'} completion"
        f" ({usage.get('reasoning_tokens') or 0} reasoning)"
    )
    rows = [
        ("time", (item.get("time") or "").replace("T", " ").replace("Z", " UTC")),
        ("request id", item["id"]),
        ("route", item.get("route")),
        ("model", f"{item.get('model') or '?'} → {item.get('provider') or '?'}"
                  f" / {item.get('upstream_model') or '?'}"),
        ("key / team", " / ".join(str(x) for x in (item.get("key"), item.get("team")) if x) or "—"),
        ("status", status),
        ("finish reason", item.get("finish_reason") or "—"),
        ("stream", {"True": "yes", "False": "no"}.get(str(item.get("stream")), "—")),
        ("latency", fmt_ms(item.get("duration_ms"))),
        ("time to first token", fmt_ms(item.get("ttft_ms"))),
        ("tokens", tokens),
        ("cost", cost),
        ("without cache", "—" if item.get("cost_without_cache_usd") is None else
         f"{fmt_cost(item['cost_without_cache_usd'])} (saved {fmt_cost(item.get('cache_savings_usd') or 0)})"),
        ("upstream key", item.get("upstream_key") or "—"),
        ("client", " · ".join(str(x) for x in (item.get("client_ip"), item.get("user_agent")) if x) or "—"),
    ]
    cells = "".join(f'<div><dt>{esc(k)}</dt><dd class="fact-{esc(k.replace(" ", "-"))}">{esc(v)}</dd></div>'
                    for k, v in rows)  # fmt: skip
    return f'<dl class="facts">{cells}</dl>'


def _attempts(item: dict[str, Any]) -> str:
    attempts = [a for a in item.get("attempts") or () if isinstance(a, dict)]
    if len(attempts) < 2 and not any("note" in a or a.get("error") for a in attempts):
        return ""  # one clean attempt says nothing the facts do not
    lines = "".join(
        "<li>" + ", ".join(f"{esc(k)}: <code>{esc(v)}</code>" for k, v in a.items()) + "</li>" for a in attempts
    )
    return f'<section class="attempts"><h2>Attempts</h2><ol>{lines}</ol></section>'


def render_detail(item: dict[str, Any]) -> str:
    """The whole page for one ``detail_item``."""
    error = item.get("error")
    error_html = ""
    if error:
        code = f" ({esc(item['status_code'])})" if item.get("status_code") else ""
        error_html = (
            f'<div class="error" role="alert"><b>{esc(error.get("type") or "error")}</b>{code}:'
            f' {esc(error.get("message") or "")}</div>'
        )
    raw = {k: v for k, v in item.items() if k != "conversation"}  # the conversation is derived from these
    session = ""
    if item.get("session_id"):
        turn = item.get("turn")
        href = session_href(str(item["session_id"]), turn if isinstance(turn, int) else None)
        session = f'<a class="session-link" href="{esc(href)}">← its session{f" (turn {turn})" if turn else ""}</a>'
    title = esc(f"{item.get('model') or 'request'} · {(item.get('time') or '')[:19].replace('T', ' ')}")
    main = template("detail.html").substitute(
        title=title,
        facts=_facts(item),
        error=error_html,
        attempts=_attempts(item),
        conversation=_conversation(item),
        raw=esc(json.dumps(raw, indent=2, ensure_ascii=False, default=str)),
    )
    header = f'{session} <a href="/logs?view=requests">← all requests</a>'
    return render_page(main, title=title, header=header, main_attrs=' class="detail"')
