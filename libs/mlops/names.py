"""One check for the names callers choose (streams, datasets, models, endpoints) and one way to turn input
into a filesystem path that cannot leave its root.

Names become directory and file names (the offline store, schemas, datasets, artifacts), Redis keys and
metric labels, so they are held to a strict pattern: a letter or digit first, then letters, digits,
``.``, ``_`` or ``-``; at most 128 characters; never ``..``. No separator, no absolute path, no parent.
:func:`safe_join` is the second line: every path built from input is resolved and must stay under its
root, whatever the name check let through (symlinks included).
"""

from __future__ import annotations

import re
from pathlib import Path

from mlops.errors import InvalidArgument

#: The pattern every caller-chosen name matches (see the module docstring).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NAME = re.compile(NAME_PATTERN)
NAME_RULE = "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'"


def is_name(value: object) -> bool:
    """Whether ``value`` is a valid name (a str matching :data:`NAME_PATTERN`, without ``..``)."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None and ".." not in value


def check_name(value: object, kind: str = "name", field: str | None = None) -> str:
    """``value`` when it is a valid name, else :class:`InvalidArgument` naming ``field`` (default ``kind``)."""
    if not is_name(value):
        shown = repr(value)[:80]
        raise InvalidArgument(f"{kind} {shown} is not a valid name: {NAME_RULE}", field=field or kind)
    return value  # type: ignore[return-value]


def safe_join(root: Path, *parts: str, field: str = "name") -> Path:
    """``root / parts...`` resolved, refused with :class:`InvalidArgument` unless it stays under ``root``
    (an absolute part, ``..`` or a symlink pointing out all land outside)."""
    base = Path(root).resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise InvalidArgument(f"{'/'.join(parts)[:80]!r} points outside its store", field=field)
    return path
