"""Stage rules, pure: the stage names, validation, what a transition changes, and rollback targets.

A model has at most one version in ``production``: promoting one demotes the previous holder to
``archived``. Aliases are derived from stages (no separate alias table): ``production``/``champion``,
``latest``, and ``candidate``/``shadow``/``canary``/``archived`` (the highest version in that stage).
The stage names and their normalisation live in :mod:`mlops.stages`, which the permission check uses too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mlops.errors import Conflict, InvalidArgument
from mlops.stages import ARCHIVED, CANARY, CANDIDATE, PRODUCTION, SHADOW, STAGES
from mlops.stages import normalize_stage as normalize_stage  # re-exported: the registry's one normalisation

#: Stages the inference service loads (everything but archived).
SERVING_STAGES: tuple[str, ...] = (CANDIDATE, SHADOW, CANARY, PRODUCTION)

LATEST = "latest"
CHAMPION = "champion"
ALIASES: tuple[str, ...] = (LATEST, CHAMPION, *STAGES)

#: Version numbers are SQLite's 64-bit integers: a bare number of more digits names no version.
MAX_VERSION_DIGITS = 18

REGISTERED = "registered"
STAGE_CHANGED = "stage_changed"


@dataclass(frozen=True, slots=True)
class StageChange:
    """One version moving from one stage to another."""

    version: int
    from_stage: str
    to_stage: str


def plan_transition(stages: Mapping[int, str], version: int, target: str) -> list[StageChange]:
    """The changes that putting ``version`` in ``target`` implies, given every version's current stage.

    Demotions come first, so at no point are two versions in production. Setting the stage a version
    already has changes nothing.
    """
    if version not in stages:
        raise KeyError(version)
    current = stages[version]
    if current == target:
        return []
    changes: list[StageChange] = []
    if target == PRODUCTION:
        changes += [
            StageChange(v, PRODUCTION, ARCHIVED) for v, s in sorted(stages.items()) if s == PRODUCTION and v != version
        ]
    changes.append(StageChange(version, current, target))
    return changes


def rollback_target(history: Iterable[tuple[int, str]], stages: Mapping[int, str]) -> int:
    """The version that held production before the current holder.

    ``history`` is every transition ``(version, to_stage)`` in the order it happened. The answer is the
    most recent version, other than the current production one, that was ever put in production.
    """
    current = next((v for v, s in stages.items() if s == PRODUCTION), None)
    for version, to_stage in reversed(list(history)):
        if to_stage == PRODUCTION and version != current and version in stages:
            return version
    raise Conflict("no previous production version to roll back to", field="model")


def resolve_alias(alias: str, stages: Mapping[int, str]) -> int:
    """The version an alias names; a bare number (ASCII digits) names that version."""
    name = (alias or "").strip().lower()
    if name.isascii() and name.isdigit():
        if len(name) > MAX_VERSION_DIGITS:  # no such version; and int() refuses past 4,300 digits: a 500
            raise LookupError(name)
        return int(name)
    if name not in ALIASES:
        raise InvalidArgument(
            f"unknown alias {alias!r}; expected a version number or one of {', '.join(ALIASES)}", field="alias"
        )
    if name == LATEST:
        candidates: Sequence[int] = sorted(stages)
    else:
        stage = PRODUCTION if name == CHAMPION else name
        candidates = sorted(v for v, s in stages.items() if s == stage)
    if not candidates:
        raise LookupError(name)
    return candidates[-1]


def aliases_of(stages: Mapping[int, str]) -> dict[str, int]:
    """Every alias that currently names a version."""
    out: dict[str, int] = {}
    for alias in ALIASES:
        try:
            out[alias] = resolve_alias(alias, stages)
        except LookupError:
            continue
    return out
