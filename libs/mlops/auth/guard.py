"""The guard every service runs in front of its REST and gRPC methods: who is calling (bearer token),
may they (role -> permission), not too often (per-token rate limit, counted in Redis across replicas:
:mod:`mlops.auth.ratelimit`); and the principal of the
current request, for the audit trail.

Authentication and authorisation are two steps (:meth:`Guard.authenticate`, :meth:`Guard.authorize`) so
that a transport can authenticate before it reads anything the decision needs (a request body naming a
stage) and decide only after; :meth:`Guard.check` does both when the decision needs nothing more."""

from __future__ import annotations

from contextvars import ContextVar

from redis.asyncio import Redis

from mlops.auth.policy import missing
from mlops.auth.ratelimit import RateLimiter
from mlops.auth.tokens import Principal, TokenStore
from mlops.errors import PermissionDenied, RateLimited, Unauthenticated
from mlops.settings import PlatformSettings

current_principal: ContextVar[Principal | None] = ContextVar("mlops_principal", default=None)

ANONYMOUS = Principal(token_id="", name="anonymous", role="admin")


def bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Guard:
    def __init__(self, settings: PlatformSettings, redis: Redis) -> None:
        self._store = TokenStore(settings.auth_tokens_file) if settings.auth_tokens_file else None
        self._rate = settings.rate_limit_per_s
        self._limiter = RateLimiter(redis, self._rate) if self._rate > 0 else None

    @property
    def enabled(self) -> bool:
        return self._store is not None

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller's principal (also the current one); raises Unauthenticated / RateLimited.

        The rate limit counts every authenticated request, refused ones included, so a token cannot flood
        a service with requests its role does not allow."""
        if self._store is None:
            current_principal.set(ANONYMOUS)
            return ANONYMOUS
        token = bearer(authorization)
        if token is None:
            raise Unauthenticated("a bearer token is required (Authorization: Bearer <token>)")
        principal = self._store.verify(token)
        if principal is None:
            raise Unauthenticated("the token is unknown or revoked")
        current_principal.set(principal)
        if self._limiter is not None and not self._limiter.admit(principal.token_id):
            raise RateLimited(f"more than {self._rate} requests per second for token {principal.token_id}")
        return principal

    def authorize(self, principal: Principal, permissions: str | tuple[str, ...]) -> None:
        """Raises PermissionDenied unless ``principal``'s role holds every one of ``permissions``."""
        if self._store is None:
            return
        lacking = missing(principal.role, (permissions,) if isinstance(permissions, str) else permissions)
        if lacking is not None:
            raise PermissionDenied(f"role {principal.role!r} may not {lacking}; ask an admin for a stronger role")

    async def check(self, authorization: str | None, permissions: str | tuple[str, ...]) -> Principal:
        """The caller's principal when allowed; raises Unauthenticated / PermissionDenied / RateLimited."""
        principal = await self.authenticate(authorization)
        self.authorize(principal, permissions)
        return principal
