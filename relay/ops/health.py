"""Delivery health for the console's overview, per window (the last hour, the last 24 h):
final receipts by status, the delivery rate, the top failure codes, the time to final
(p50, p95) and the messages that went overdue (message lifecycle).

Counts of receipts come from the search indexes (``EventIndex.count`` by status, code and
kind, by accept time); the time to final and the late ones from
the hourly counts the worker keeps (``relay.state.lifecycle``); overdue messages are the
``receipt_overdue`` events of the window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from relay.codes import CODE_DESCRIPTIONS, STATUSES
from relay.events import RECEIPT_OVERDUE
from relay.state import Store
from relay.state.lifecycle import FINAL_BOUNDS
from relay.times import format_duration

#: final statuses, as the console shows them; Delivered is a success
FINAL_STATUSES = tuple(status for status in STATUSES if status != "Submitted")
FAILED_STATUSES = ("Un-Delivered", "Failed")
#: codes that are not failures (delivered, submitted, clicked)
SUCCESS_CODES = frozenset({"7500", "7501", "7528"})
WINDOWS = {"1h": 3600, "24h": 86400}


@dataclass(frozen=True)
class Health:
    """One window's delivery health. ``p50``/``p95``: upper bounds (seconds) of the bucket
    the percentile falls in (None without final receipts timed; ``inf`` past the last)."""

    finals: dict[str, int]
    rate: float | None
    top_codes: list[tuple[str, str, int]]
    p50: float | None
    p95: float | None
    timed: int
    overdue: int
    late: int

    @property
    def p50_text(self) -> str:
        return _bound_text(self.p50)

    @property
    def p95_text(self) -> str:
        return _bound_text(self.p95)


def _bound_text(bound: float | None) -> str:
    """``≤ 5m`` for a bucket's upper bound, ``> 3d`` past the last one."""
    if bound is None:
        return ""
    if bound == float("inf"):
        return f"> {format_duration(FINAL_BOUNDS[-1])}"
    return f"≤ {format_duration(bound)}"


def delivery_health(store: Store, now: float | None = None) -> dict[str, Health]:
    now = time.time() if now is None else now
    return {label: _window(store, now, seconds) for label, seconds in WINDOWS.items()}


def _window(store: Store, now: float, seconds: int) -> Health:
    since = now - seconds

    def count(facet: str, value: str) -> int:
        return store.index.count({facet: value}, since, now=now)

    finals = {status: count("status", status) for status in FINAL_STATUSES}
    codes = sorted(code for code in CODE_DESCRIPTIONS if code not in SUCCESS_CODES)
    by_code = [(code, count("code", code)) for code in codes]
    top = sorted(((c, n) for c, n in by_code if n), key=lambda item: (-item[1], item[0]))[:5]
    delivered = finals["Delivered"]
    ended = delivered + sum(finals[s] for s in FAILED_STATUSES)
    counts = store.lifecycle.final_counts(seconds // 3600, now)
    p50, p95, timed = _percentiles(counts)
    return Health(
        finals=finals,
        rate=delivered / ended if ended else None,
        top_codes=[(code, CODE_DESCRIPTIONS[code], n) for code, n in top],
        p50=p50,
        p95=p95,
        timed=timed,
        overdue=count("kind", RECEIPT_OVERDUE),
        late=counts.get("late", 0),
    )


def _percentiles(counts: dict[str, int]) -> tuple[float | None, float | None, int]:
    bounds = [*FINAL_BOUNDS, float("inf")]
    per = [counts.get(f"le{b}" if b != float("inf") else "le+Inf", 0) for b in bounds]
    total = sum(per)
    if not total:
        return None, None, 0

    def upper(share: float) -> float:
        seen = 0
        for bound, n in zip(bounds, per, strict=True):
            seen += n
            if seen >= share * total:
                return bound
        return bounds[-1]

    return upper(0.5), upper(0.95), total
