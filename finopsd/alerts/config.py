"""Config section ``alerts``: webhook targets, budget thresholds, the provider error-rate alert."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Mapping

from finopsd.yamldoc import Doc, Reader

FORMATS: Final = ("json", "slack", "teams")
_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, repr=False)
class AlertTarget:
    name: str
    url: str  # may come from env: (a Slack webhook URL is a secret); never shown or logged
    format: str  # one of FORMATS

    def __repr__(self) -> str:
        return f"AlertTarget(name={self.name!r}, format={self.format!r})"


@dataclass(frozen=True)
class AlertsConfig:
    targets: tuple[AlertTarget, ...] = ()
    budget_thresholds: tuple[float, ...] = (50.0, 80.0, 100.0)  # percent of each budget
    provider_error_rate: float | None = None  # a fraction of a provider's requests in 5 minutes; None: off
    min_requests: int = 10  # in those 5 minutes, before the rate means anything
    check_interval_s: float = 15
    retries: int = 5  # attempts per target after the first
    retry_base_s: float = 1  # the first retry waits this long, each next one twice as long


def alerts_section(doc: Doc, data: Any, env: Mapping[str, str]) -> AlertsConfig:
    r = Reader(doc, data, "alerts", {"targets", "budget_thresholds", "provider_error_rate", "min_requests",
                                     "check_interval_s", "retries", "retry_base_s"})  # fmt: skip
    targets = []
    for i, item in enumerate(r.get("targets", list, [])):
        t = Reader(doc, item, f"alerts.targets[{i}]", {"name", "url", "format"})
        name = t.get("name", str) or f"target-{i}"
        if not _NAME.fullmatch(name):
            raise doc.error(t.sub("name"), "up to 64 letters, digits, '_', '.' or '-'")
        url = t.secret("url", env)
        if not url or not url.startswith(("http://", "https://")):
            raise doc.error(t.sub("url"), "needs an http:// or https:// URL (or env:VAR holding one)")
        fmt = t.get("format", str, "json")
        if fmt not in FORMATS:
            raise doc.error(t.sub("format"), f"must be one of {', '.join(FORMATS)}")
        targets.append(AlertTarget(name=name, url=url, format=fmt))
    thresholds = r.get("budget_thresholds", list, [50, 80, 100])
    for i, value in enumerate(thresholds):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1000:
            raise doc.error(f"alerts.budget_thresholds[{i}]", "must be a percent above 0 (at most 1000)")
    rate = r.get("provider_error_rate", float)
    if rate is not None and not 0 < rate <= 1:
        raise doc.error(r.sub("provider_error_rate"), "must be a fraction above 0, at most 1 (0.2 = 20%)")
    return AlertsConfig(
        targets=tuple(targets), budget_thresholds=tuple(sorted({float(v) for v in thresholds})),
        provider_error_rate=rate, min_requests=int(r.number("min_requests", 10, 1)),
        check_interval_s=r.number("check_interval_s", 15, 0.05), retries=int(r.number("retries", 5, 0)),
        retry_base_s=r.number("retry_base_s", 1, 0.01),
    )  # fmt: skip
