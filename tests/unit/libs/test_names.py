"""The one name rule and the one way from input to a path under a root."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.errors import InvalidArgument
from mlops.names import check_name, is_name, safe_join


@pytest.mark.parametrize("name", ["payments", "a", "A.b_c-1", "x" * 128, "v1.2"])
def test_valid_names(name: str) -> None:
    assert is_name(name) and check_name(name, "stream") == name


@pytest.mark.parametrize("name", [
    "", "../x", "..", "a..b", "/etc", "a/b", "a\\b", ".hidden", "-x", "x" * 129, "a b", "a\x00b", "é", None, 5,
])
def test_hostile_names_are_refused_naming_the_field(name: object) -> None:
    assert not is_name(name)
    with pytest.raises(InvalidArgument) as err:
        check_name(name, "stream")
    assert err.value.field == "stream"


def test_safe_join_stays_under_its_root(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a", "b.json") == (tmp_path / "a" / "b.json").resolve()
    for parts in (("..", "x"), ("/etc/passwd",), ("a", "../../x")):
        with pytest.raises(InvalidArgument):
            safe_join(tmp_path, *parts, field="stream")


def test_safe_join_refuses_a_symlink_pointing_out(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(InvalidArgument):
        safe_join(root, "link", "file")
