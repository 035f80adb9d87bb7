"""What re-declaring a stream's schema changes, and whom it breaks: pure, so the refusal, the dry run (``feast
plan``-like) and the CLI all show the same diff.

A change is *breaking* when it drops a field or changes its type and a serving model version (production,
canary or shadow) lists that field in its signature: its next request, or the next dataset built for it,
would lack the field or hold values of the wrong type. Fields are matched by name (a signature lists feature
names, not streams), which may name a reader of a same-named field of another stream: the safe side, and a
forced change goes through with a reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.ingest.schema import StreamSchema

#: The stages whose versions answer traffic or shadow it: a field they read must not vanish under them.
READING_STAGES: tuple[str, ...] = ("production", "canary", "shadow")


@dataclass(frozen=True, slots=True)
class Reader:
    """A serving model version and the features its signature lists."""

    model: str
    version: str
    stage: str
    features: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.model} v{self.version} ({self.stage})"


@dataclass(frozen=True, slots=True)
class Retyped:
    name: str
    before: str
    after: str


@dataclass(slots=True)
class SchemaDiff:
    stream: str
    from_version: int  # 0: the stream had no schema
    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    retyped: list[Retyped] = field(default_factory=list)

    @property
    def removes_or_retypes(self) -> bool:
        """Whether any serving model could be broken by it (only then is the registry asked)."""
        return bool(self.dropped or self.retyped)

    @property
    def touched(self) -> list[str]:
        return [*self.dropped, *(r.name for r in self.retyped)]


def diff(stream: str, before: StreamSchema | None, after: StreamSchema) -> SchemaDiff:
    old = {f.name: f.type for f in before.fields} if before is not None else {}
    new = {f.name: f.type for f in after.fields}
    return SchemaDiff(
        stream=stream,
        from_version=before.version if before is not None else 0,
        added=[n for n in new if n not in old],
        dropped=[n for n in old if n not in new],
        retyped=[Retyped(n, old[n], new[n]) for n in new if n in old and old[n] != new[n]],
    )


def readers_of(change: SchemaDiff, readers: Iterable[Reader]) -> dict[str, list[str]]:
    """Per dropped or retyped field, the serving versions that read it (fields no one reads are left out)."""
    touched = change.touched
    out: dict[str, list[str]] = {}
    for reader in readers:
        if reader.stage not in READING_STAGES:
            continue
        for name in touched:
            if name in reader.features:
                out.setdefault(name, []).append(reader.label)
    return {name: out[name] for name in touched if name in out}


def plan(change: SchemaDiff, read_by: dict[str, list[str]]) -> dict[str, Any]:
    """The diff as the API and the CLI show it; ``breaking``: a serving version reads what it drops or retypes."""
    return {
        "stream": change.stream,
        "from_version": change.from_version,
        "added": change.added,
        "dropped": change.dropped,
        "retyped": [{"field": r.name, "from": r.before, "to": r.after} for r in change.retyped],
        "read_by": read_by,
        "breaking": bool(read_by),
    }


def summary(change: SchemaDiff, read_by: dict[str, list[str]]) -> str:
    """One line for a refusal or the audit trail: what goes, what changes type, who reads it."""
    parts = []
    if change.dropped:
        parts.append("drops " + ", ".join(change.dropped))
    if change.retyped:
        parts.append("retypes " + ", ".join(f"{r.name} ({r.before} -> {r.after})" for r in change.retyped))
    readers = "; ".join(f"{name} is read by {', '.join(who)}" for name, who in read_by.items())
    return "; ".join(parts) + (f"; {readers}" if readers else "")
