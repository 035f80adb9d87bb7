"""The write-ahead journal on real files and real processes: what a killed process journaled and never had
acknowledged is republished once by whoever finds it; a live process's segments are left alone; a torn
last write is skipped; segments whose records were all acknowledged are deleted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlops.bus.journal import Journal, JournalRecord, read_segment

_CHILD = """
import os, sys, time
from pathlib import Path
from mlops.bus.journal import Journal, JournalRecord
journal = Journal(Path(sys.argv[1]), segment_bytes=int(sys.argv[2]))
n, acked = int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    journal.append(JournalRecord(f"id-{i}", f"key-{i % 3}", f"value-{i}".encode()))
journal.ack(f"id-{i}" for i in range(acked))
print("ready", flush=True)
time.sleep(600)
"""


def _child(directory: Path, n: int, acked: int, segment_bytes: int = 1 << 20) -> subprocess.Popen[str]:
    """A process that journals ``n`` records, has the first ``acked`` acknowledged, and waits to be killed."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(directory), str(segment_bytes), str(n), str(acked)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _segments(directory: Path) -> list[Path]:
    return list(directory.glob("*.journal"))


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


class Collector:
    def __init__(self, fail: int = 0) -> None:
        self.records: list[JournalRecord] = []
        self.fail = fail

    async def __call__(self, records: list[JournalRecord]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("broker down")
        self.records.extend(records)


async def test_a_killed_process_s_unacknowledged_records_are_republished_once(tmp_path: Path) -> None:
    proc = _child(tmp_path, n=50, acked=20, segment_bytes=256)  # small segments: several files
    _kill(proc)
    survivor = Journal(tmp_path)
    collect = Collector()
    assert await survivor.recover(collect) == 30
    assert sorted(r.id for r in collect.records) == sorted(f"id-{i}" for i in range(20, 50))
    assert {r.id: r.value for r in collect.records}["id-33"] == b"value-33"
    assert {r.id: r.key for r in collect.records}["id-34"] == "key-1"
    assert not _segments(tmp_path)  # recovered segments are gone...
    assert await survivor.recover(collect) == 0  # ...so nothing is sent twice
    assert len(collect.records) == 30


async def test_a_live_process_s_segments_are_left_alone(tmp_path: Path) -> None:
    proc = _child(tmp_path, n=10, acked=0)
    try:
        assert await Journal(tmp_path).recover(Collector()) == 0
        assert _segments(tmp_path)
    finally:
        _kill(proc)
    assert await Journal(tmp_path).recover(Collector()) == 10


async def test_a_failed_republish_leaves_the_records_for_the_next_sweep(tmp_path: Path) -> None:
    _kill(_child(tmp_path, n=5, acked=1))
    journal = Journal(tmp_path)
    collect = Collector(fail=1)
    with pytest.raises(ConnectionError):
        await journal.recover(collect)
    assert await journal.recover(collect) == 4
    assert len(collect.records) == 4


def test_a_torn_last_write_is_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append(JournalRecord("a", "k", b"1"))
    journal.append(JournalRecord("b", "k", b"2"))
    (path,) = tmp_path.glob("*.journal")
    data = path.read_bytes()
    records, acked = read_segment(data[:-1])
    assert list(records) == ["a"] and not acked
    records, _ = read_segment(data)
    assert list(records) == ["a", "b"]


def test_segments_are_deleted_once_everything_in_them_is_acknowledged(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=200)
    for i in range(40):
        journal.append(JournalRecord(f"id-{i}", "k", b"x" * 20))
    assert len(list(tmp_path.glob("*.journal"))) > 3
    journal.ack(f"id-{i}" for i in range(40))
    assert journal.outstanding == 0
    assert len(list(tmp_path.glob("*.journal"))) == 1  # only the active segment is left
    journal.close()
    assert not list(tmp_path.glob("*.journal"))


async def test_a_graceful_stop_keeps_what_was_never_acknowledged(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append(JournalRecord("a", "k", b"1"))
    journal.append(JournalRecord("b", "k", b"2"))
    journal.ack(["a"])
    journal.close()
    collect = Collector()
    assert await Journal(tmp_path).recover(collect) == 1
    assert [r.id for r in collect.records] == ["b"]


def test_the_journal_files_are_private(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append(JournalRecord("a", "k", b"1"))
    (path,) = tmp_path.glob("*.journal")
    assert path.stat().st_mode & 0o777 == 0o600
    assert os.getpid() == int(path.name.split("-")[0])
    assert time.time_ns() >= int(path.name.split("-")[1])
