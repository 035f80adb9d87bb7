"""Who made a change, for the transition record: the authenticated caller when auth is on, with the
actor the caller declares (``X-Mlops-Actor`` / ``x-mlops-actor``) beside it; the declared actor alone
when auth is off (every caller is then anonymous)."""

from __future__ import annotations

from mlops.auth.guard import current_principal


def who(declared: str | None, default: str) -> str:
    declared = (declared or "").strip()[:200]
    principal = current_principal.get()
    if principal is None or not principal.token_id:
        return declared or default
    if declared and declared != principal.name:
        return f"{principal.name} ({declared})"
    return principal.name
