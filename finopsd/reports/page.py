"""The ``/usage`` page: the range form, each chart with its top-N table, and budget burn-down.

Everything is built from the /api/usage answer (``routes.usage``), so the page and the API
cannot disagree; every value is escaped here or in ``charts``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlencode

from finopsd.reports.charts import bars, legend, lines
from finopsd.reports.series import GROUPS, NONE, OTHER
from finopsd.spend import iso, usd_text
from finopsd.web.items import fmt_ms
from finopsd.web.pages import _input, _select, esc, render_page

__all__ = ["render_usage"]

RANGES: Final = (("24h", "last 24 hours"), ("7d", "last 7 days"), ("30d", "last 30 days"), ("custom", "custom"))
GRAINS: Final = (("", "auto"), ("hour", "per hour"), ("day", "per day"))
TOP_N: Final = 10
SHOWN: Final = 8  # series drawn in a chart; the rest are summed as OTHER


def _count(v: float) -> str:
    v = float(v)
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= size:
            return f"{v / size:.3g}{suffix}"
    return f"{v:.3g}" if v != int(v) else f"{int(v)}"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def form(query: Mapping[str, str]) -> str:
    v = {k: query.get(k, "") for k in ("range", "since", "until", "grain", "group_by", *GROUPS)}
    return (
        '<form class="filters" method="get" action="/usage"><div class="fields">'
        + _select("range", v["range"] or "7d", RANGES, "range")
        + _input("since", v["since"], "since", extra=' size="16" placeholder="2026-01-01 (custom)"')
        + _input("until", v["until"], "until", extra=' size="16" placeholder="now"')
        + _select("grain", v["grain"], GRAINS, "bars")
        + _select("group_by", v["group_by"] or "team", [(g, g) for g in GROUPS], "group by")
        + "".join(_input(g, v[g], f"only {g}", extra=' size="10"') for g in GROUPS)
        + '<button type="submit">Show</button> <a href="/usage">reset</a></div></form>'
    )


def _logs_href(body: dict[str, Any], **filters: str) -> str:
    params = {"view": "requests", **body["filters"], **filters, "since": iso(body["since"]),
              "until": iso(body["until"])}  # fmt: skip
    return "/logs?" + urlencode(params)


def _name_cell(body: dict[str, Any], name: str) -> str:
    if name in (NONE, OTHER):
        return f'<td class="muted">{esc(name)}</td>'
    return f'<td><a href="{esc(_logs_href(body, **{body["group_by"]: name}))}">{esc(name)}</a></td>'


def _table(body: dict[str, Any], name: str, groups: list[dict[str, Any]], columns: list[tuple[str, str, Any]],
           total: bool = True) -> str:  # fmt: skip
    head = "".join(f"<th>{esc(label)}</th>" for label, _, _ in columns)
    rows = "".join(
        f"<tr>{_name_cell(body, g['name'])}"
        + "".join(f'<td data-metric="{m}">{esc(fmt(g["totals"][m]) if g["totals"][m] is not None else "—")}</td>'
                  for _, m, fmt in columns) + "</tr>"
        for g in groups[:TOP_N]
    ) or f'<tr><td colspan="{len(columns) + 1}" class="muted">nothing in this range</td></tr>'
    foot = ""
    if total:
        every = body["all"]["totals"]
        foot = "<tfoot><tr><th>all</th>" + "".join(
            f'<th data-metric="{m}">{esc(fmt(every[m]) if every[m] is not None else "—")}</th>'
            for _, m, fmt in columns) + "</tr></tfoot>"
    return (f'<table class="rows top" data-table="{esc(name)}"><thead><tr><th>{esc(body["group_by"])}</th>{head}'
            f"</tr></thead><tbody>{rows}</tbody>{foot}</table>")


def _shown(groups: list[dict[str, Any]], metric: str, n: int) -> list[tuple[str, list[float]]]:
    """The first n groups' series; the rest summed into one, so the stack still adds up."""
    out = [(g["name"], g["series"][metric]) for g in groups[:n]]
    rest = groups[n:]
    if rest:
        out.append((OTHER, [sum(g["series"][metric][i] for g in rest) for i in range(len(rest[0]["series"][metric]))]))
    return out


def _section(title: str, chart: str, keys: str, table: str) -> str:
    return f'<section class="usage"><h2>{esc(title)}</h2><div class="pair"><div>{chart}{keys}</div>{table}</div></section>'


def _budgets(body: dict[str, Any]) -> str:
    rows = []
    for b in body["budgets"]:
        share = min(1.0, b["spent_usd"] / b["usd"]) if b["usd"] else 1.0
        fill = "#d55e00" if share >= 1 else "#e69f00" if share >= 0.8 else "#009e73"
        bar = (f'<svg width="160" height="12" role="img" aria-label="{b["percent"]}% of the budget">'
               f'<rect width="160" height="12" fill="#eee"/><rect width="{160 * share:.1f}" height="12" fill="{fill}"/>'
               f"<title>{esc(usd_text(b['spent_usd']))} of {esc(usd_text(b['usd']))} ({b['percent']}%)</title></svg>")
        out = b["projected_run_out"]
        when = ("spent" if out and b["spent_usd"] >= b["usd"] else f"runs out {out[:16].replace('T', ' ')} UTC"
                if out else "not before it resets" if b["resets_at"] else "no spend lately")
        rows.append(
            f'<tr data-budget="{esc(b["scope"])}:{esc(b["name"])}:{esc(b["period"])}"><td>{esc(b["scope"])}</td>'
            f'<td><a href="{esc(_logs_href(body, **{b["scope"]: b["name"]}))}">{esc(b["name"])}</a></td>'
            f"<td>{esc(b['period'])}</td><td>{esc(usd_text(b['spent_usd']))} / {esc(usd_text(b['usd']))}</td>"
            f"<td>{bar} {b['percent']}%</td><td>{esc(usd_text(b['usd_per_day']))}/day</td><td>{esc(when)}</td>"
            f"<td>{esc((b['resets_at'] or 'never')[:16].replace('T', ' '))}</td></tr>")
    body_rows = "".join(rows) or '<tr><td colspan="8" class="muted">no budgets configured</td></tr>'
    return ('<section class="usage"><h2>Budget burn-down</h2><table class="rows budgets"><thead><tr><th>for</th>'
            "<th>name</th><th>window</th><th>spent</th><th>used</th><th>rate</th><th>projection</th><th>resets</th>"
            f"</tr></thead><tbody>{body_rows}</tbody></table></section>")


def _alerts(alerts: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<tr data-alert="{a["id"]}"><td>{esc(a["ts"][:16].replace("T", " "))}</td><td>{esc(a["kind"])}</td>'
        f"<td>{esc(a['message'])}</td><td>{esc(a['status'])}</td><td>{a['attempts']}</td>"
        f"<td>{esc(a['last_error'] or '')}</td></tr>" for a in alerts
    ) or '<tr><td colspan="6" class="muted">no alert has fired (see alerts: in the config)</td></tr>'
    return ('<section class="usage"><h2>Alerts</h2><table class="rows alerts"><thead><tr><th>time (UTC)</th>'
            "<th>kind</th><th>message</th><th>delivery</th><th>attempts</th><th>last failure</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>")


def render_usage(query: Mapping[str, str], body: dict[str, Any] | None, error: str | None = None) -> str:
    header = '<span class="where">usage</span>'
    if body is None:
        main = form(query) + f'<p class="error" role="alert">{esc(error)}</p>'
        return render_page(main, title="Usage", header=header)
    b, g, grain = body["buckets"], body["groups"], body["grain"]
    every = body["all"]
    span = f"{iso(body['since'])} to {iso(body['until'])}, per {grain}, by {body['group_by']}"
    parts = [form(query), f'<p class="totals" data-total-cost="{every["totals"]["cost_usd"]!r}">{esc(span)}: '
             f"{esc(usd_text(every['totals']['cost_usd']))}, {every['totals']['requests']:,} requests</p>"]

    cost = _shown(g, "cost_usd", SHOWN)
    parts.append(_section(
        f"Cost per {grain}", bars("cost", f"cost per {grain} by {body['group_by']}", b, grain, cost, usd_text, "USD"),
        legend([n for n, _ in cost], [("#222", "total")]),
        _table(body, "cost", g, [("cost", "cost_usd", usd_text), ("requests", "requests", _count),
                                 ("cost without caching", "cost_without_cache_usd", usd_text)])))
    requests = _shown(g, "requests", SHOWN)
    tokens = [(label, every["series"][m]) for label, m in (("prompt (uncached)", "prompt_tokens"),
                                                           ("cached", "cached_tokens"), ("completion", "completion_tokens"))]
    uncached = [p - c for p, c in zip(tokens[0][1], tokens[1][1])]
    tokens[0] = (tokens[0][0], [max(0, u) for u in uncached])
    parts.append(_section(
        f"Requests per {grain}", bars("requests", f"requests per {grain}", b, grain, requests, _count, "requests"),
        legend([n for n, _ in requests], [("#222", "total")]),
        _table(body, "requests", g, [("requests", "requests", _count), ("errors", "errors", _count),
                                     ("client closed", "client_closed", _count)])))
    parts.append(_section(
        f"Tokens per {grain}", bars("tokens", f"tokens per {grain}", b, grain, tokens, _count, "tokens"),
        legend([n for n, _ in tokens], [("#222", "total")]),
        _table(body, "tokens", g, [("prompt", "prompt_tokens", _count), ("cached", "cached_tokens", _count),
                                   ("completion", "completion_tokens", _count)])))
    for metric, label in (("latency", "Latency"), ("ttft", "Time to first token")):
        slow = sorted(g, key=lambda x: -(x["totals"][f"{metric}_p95_ms"] or 0))
        series = [(f"{x['name']} p95", x["series"][f"{metric}_p95_ms"]) for x in slow[:4]]
        series = [("all p50", every["series"][f"{metric}_p50_ms"]), ("all p95", every["series"][f"{metric}_p95_ms"]),
                  *series]
        parts.append(_section(
            f"{label} p50 / p95 per {grain}",
            lines(metric, f"{label.lower()} p50 and p95 per {grain}", b, grain, series, fmt_ms, "milliseconds",
                  dashed=(True, False)),
            legend([n for n, _ in series]),
            _table(body, metric, slow, [("p50", f"{metric}_p50_ms", fmt_ms), ("p95", f"{metric}_p95_ms", fmt_ms)])))
    errors = [(x["name"], x["series"]["error_rate"]) for x in sorted(g, key=lambda x: -x["totals"]["errors"])[:SHOWN]]
    kinds = "".join(f'<tr><td><a href="{esc(_logs_href(body, status="error"))}">{esc(kind)}</a></td>'
                    f"<td>{n:,}</td></tr>" for kind, n in every["error_types"].items())
    parts.append(_section(
        f"Error rate per {grain}", lines("errors", f"error rate per {grain}", b, grain, errors, _pct, "% of requests"),
        legend([n for n, _ in errors]),
        _table(body, "errors", sorted(g, key=lambda x: -x["totals"]["errors"]),
               [("errors", "errors", _count), ("error rate", "error_rate", _pct)])
        + '<table class="rows kinds"><thead><tr><th>error type</th><th>count</th></tr></thead><tbody>'
        + (kinds or '<tr><td colspan="2" class="muted">no errors</td></tr>') + "</tbody></table>"))
    parts.append(_budgets(body))
    parts.append(_alerts(body["alerts"]))
    return render_page("".join(parts), title="Usage", header=header)
