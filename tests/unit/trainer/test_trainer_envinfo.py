"""What a run captures about its code and environment: commit, dirty flag and diff hash, packages."""

from __future__ import annotations

import subprocess
from pathlib import Path

from services.trainer import envinfo


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_commit_dirty_flag_and_a_diff_hash_that_follows_the_changes(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    clean = envinfo.code_version(tmp_path)
    assert len(clean.commit) == 40 and not clean.dirty and clean.diff_sha256 == ""
    (tmp_path / "a.py").write_text("x = 2\n")
    first = envinfo.code_version(tmp_path)
    assert first.commit == clean.commit and first.dirty and len(first.diff_sha256) == 64
    assert envinfo.code_version(tmp_path).diff_sha256 == first.diff_sha256
    (tmp_path / "new.py").write_text("y = 1\n")  # an untracked file counts too
    second = envinfo.code_version(tmp_path)
    assert second.dirty and second.diff_sha256 != first.diff_sha256


def test_without_git_the_source_is_hashed(tmp_path: Path) -> None:
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "m.py").write_text("z = 1\n")
    v = envinfo.code_version(tmp_path)
    assert v.commit.startswith("source:") and not v.dirty
    (tmp_path / "services" / "m.py").write_text("z = 2\n")
    assert envinfo.code_version(tmp_path).commit != v.commit


def test_pip_freeze_lists_installed_packages() -> None:
    lines = envinfo.pip_freeze().splitlines()
    names = [line.split("==")[0].lower() for line in lines]
    assert "torch" in names and names == sorted(names) and all("==" in line for line in lines)
