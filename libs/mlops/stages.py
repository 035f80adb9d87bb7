"""The registry's stage names and their one normalisation, shared so that a permission check and the
registry read a stage the same way: the guard decides on the value the registry will store, never on the
raw string a caller sent (``"Production "`` is ``production`` to both)."""

from __future__ import annotations

from mlops.errors import InvalidArgument

CANDIDATE = "candidate"
SHADOW = "shadow"
CANARY = "canary"
PRODUCTION = "production"
ARCHIVED = "archived"
STAGES: tuple[str, ...] = (CANDIDATE, SHADOW, CANARY, PRODUCTION, ARCHIVED)


def normalize_stage(stage: object, *, default: str | None = None) -> str:
    """``stage`` stripped, lower-cased and checked; empty gives ``default`` when one is allowed.

    Anything that is not one of :data:`STAGES` (a number, a list, an unknown name) is InvalidArgument.
    """
    if stage is not None and not isinstance(stage, str):
        raise InvalidArgument(f"stage must be a string, one of {', '.join(STAGES)}", field="stage")
    value = (stage or "").strip().lower()
    if not value and default is not None:
        return default
    if value not in STAGES:
        raise InvalidArgument(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}", field="stage")
    return value
