"""Refused attempts (401, 403, 429): every one counted in ``mlops_auth_refused_total``, and audited with a
rate limit per caller (token id, else peer address), so a flood of refusals shows in the trail without
filling the audit store or the ``audit.log`` topic.

The limit is per process: each caller gets ``burst`` audit records per ``window_s``; past that its
refusals are only counted (``mlops_auth_refused_unaudited_total``). Callers are remembered in a bounded
table: when it is full, the oldest windows are forgotten first, and a caller never seen is not audited
until room frees (still counted), so many addresses cannot grow the table either."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client import Counter

from mlops.auth import audit
from mlops.auth.tokens import Principal
from mlops.bus.producer import Producer
from mlops.errors import MlopsError, PermissionDenied, RateLimited, Unauthenticated

REFUSED = Counter(
    "mlops_auth_refused_total", "Requests refused by the guard.", ["service", "transport", "reason"]
)
UNAUDITED = Counter(
    "mlops_auth_refused_unaudited_total", "Refusals past the per-caller audit rate limit (counted only).",
    ["service", "transport"],
)

REFUSALS = (Unauthenticated, PermissionDenied, RateLimited)


def is_refusal(exc: BaseException) -> bool:
    return isinstance(exc, REFUSALS)


class AuditLimiter:
    """At most ``burst`` admissions per key per ``window_s``; at most ``max_keys`` keys remembered."""

    def __init__(self, burst: int = 10, window_s: float = 60.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (window start, count)

    def admit(self, key: str) -> bool:
        now = self._clock()
        started, count = self._windows.get(key, (now, 0))
        if now - started >= self.window_s:
            started, count = now, 0
        if count >= self.burst:
            return False
        if key not in self._windows and len(self._windows) >= self.max_keys:
            self._forget_expired(now)
            if len(self._windows) >= self.max_keys:
                return False
        self._windows[key] = (started, count + 1)
        self._windows.move_to_end(key)
        return True

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, (started, _) in self._windows.items() if now - started >= self.window_s]:
            del self._windows[key]

    def __len__(self) -> int:
        return len(self._windows)


class RefusalAudit:
    """One service's refusals over one transport: the metric, and the rate-limited audit record."""

    def __init__(self, service: str, transport: str, producer: Callable[[], Producer | None],
                 limiter: AuditLimiter | None = None) -> None:
        self._service = service
        self._transport = transport
        self._producer = producer
        self._limiter = limiter or AuditLimiter()

    async def report(self, exc: MlopsError, *, principal: Principal | None, peer: str, action: str,
                     target: str) -> None:
        """Count ``exc`` and audit it unless this caller's audit budget is spent. 429s are counted only:
        auditing each request past a rate limit would turn the flood the limit stops into audit records."""
        REFUSED.labels(self._service, self._transport, exc.code).inc()
        if isinstance(exc, RateLimited):
            return
        known = principal is not None and bool(principal.token_id)
        key = f"token:{principal.token_id}" if known and principal else f"peer:{peer}"
        if not self._limiter.admit(key):
            UNAUDITED.labels(self._service, self._transport).inc()
            return
        await audit.record(
            self._producer(),
            principal.name if known and principal else "anonymous",
            f"refused {action}",
            target,
            f"{exc.http_status} {exc.code}: {exc.message} (from {peer or 'unknown peer'})",
            actor_id=principal.token_id if known and principal else "",
        )
