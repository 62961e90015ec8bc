"""Budget burn-down: each key's and team's spend in its budget window, and when it runs out.

The rate is the window's own average (spend so far / time since the window began, at
least an hour, so a window minutes old does not project from one request); a ``total``
budget has no window, so it burns at the last week's average from the roll-ups (the
seven days before today and today so far).
The projection is None when nothing is being spent, or when the window resets first.
"""

from __future__ import annotations

from typing import Any, Final

from finopsd.spend import iso, window_end, window_start

__all__ = ["burn_down"]

RECENT_S: Final = 7 * 86400


def burn_down(report: dict[str, Any], recent_usd: dict[tuple[str, str], float], recent_s: float,
              now: float) -> list[dict[str, Any]]:  # fmt: skip
    """One entry per budget in the governance report; ``recent_usd``: (scope, name) -> the spend
    of the last ``recent_s`` seconds (about a week)."""
    out = []
    owners = [("key", k) for k in report["keys"]] + [("team", t) for t in report["teams"]]
    for scope, owner in owners:
        for b in owner["budgets"]:
            start = window_start(b["period"], now)
            end = window_end(b["period"], start)
            if b["period"] == "total":
                rate = recent_usd.get((scope, owner["name"]), 0.0) / recent_s
            else:
                rate = b["spent_usd"] / max(now - start, 3600.0)
            left = b["usd"] - b["spent_usd"]
            if left <= 0:
                runs_out: float | None = now
            elif rate > 0:
                runs_out = now + left / rate
                if end is not None and runs_out >= end:
                    runs_out = None  # the window resets before the budget is spent
            else:
                runs_out = None
            out.append({
                "scope": scope, "name": owner["name"], "period": b["period"], "usd": b["usd"],
                "spent_usd": b["spent_usd"], "percent": b["percent"], "window_start": iso(start) if end else None,
                "resets_at": b["resets_at"], "usd_per_day": round(rate * 86400, 6),
                "projected_run_out": iso(runs_out),
            })  # fmt: skip
    return out
