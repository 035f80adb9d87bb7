"""A write-ahead journal of records a process has promised to publish but the broker has not acknowledged.

Why: a service that answers first and publishes after (the router's outbox, inference's prediction log)
would lose the records of its last few milliseconds to a crash, though the caller already holds the
answer. Awaiting the broker before answering costs a round trip on every request; appending the record
to a local file costs one ``write`` (a few microseconds). A ``write`` that returned is in the kernel's
page cache, and a killed process (``kill -9``, an OOM kill, a segfault) does not take the page cache
with it: only the loss of the machine (or its volume) does.

Layout: one directory per service; each live process appends to its own segment file and holds an
exclusive ``flock`` on every segment it still owns, so the kernel releases a dead process's locks at the
moment it dies. A segment whose lock can be taken is an orphan: whoever finds it (the restarted process,
or a surviving replica sharing the directory) republishes its unacknowledged records and deletes it.
Consumers are idempotent by ``event_id``, so a record that was acknowledged but whose acknowledgement
never reached the journal is harmless when sent again.

Entries: ``kind`` (1 byte) + length (4 bytes, big-endian) + body; ``R`` bodies are a record
(:class:`JournalRecord`), ``A`` bodies the newline-separated ids of records acknowledged. A torn tail
(a crash inside a write) is ignored.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">cI")
_FIELD = struct.Struct(">H")
_RECORD, _ACK = b"R", b"A"
_SUFFIX = ".journal"


@dataclass(frozen=True)
class JournalRecord:
    """What republishing needs: the record's id (its ``event_id``), its key and its serialised value."""

    id: str
    key: str
    value: bytes


def _encode_record(record: JournalRecord) -> bytes:
    rid, key = record.id.encode(), record.key.encode()
    body = _FIELD.pack(len(rid)) + rid + _FIELD.pack(len(key)) + key + record.value
    return _HEADER.pack(_RECORD, len(body)) + body


def _decode_record(body: bytes) -> JournalRecord:
    (n,) = _FIELD.unpack_from(body, 0)
    rid = body[2:2 + n].decode()
    (m,) = _FIELD.unpack_from(body, 2 + n)
    key = body[4 + n:4 + n + m].decode()
    return JournalRecord(rid, key, body[4 + n + m:])


def read_segment(data: bytes) -> tuple[dict[str, JournalRecord], set[str]]:
    """The records and the acknowledged ids of one segment's bytes; a torn last entry is skipped."""
    records: dict[str, JournalRecord] = {}
    acked: set[str] = set()
    offset = 0
    while offset + _HEADER.size <= len(data):
        kind, length = _HEADER.unpack_from(data, offset)
        body = data[offset + _HEADER.size:offset + _HEADER.size + length]
        if len(body) < length:
            break  # torn tail: the process died inside this write
        offset += _HEADER.size + length
        try:
            if kind == _RECORD:
                record = _decode_record(body)
                records[record.id] = record
            elif kind == _ACK:
                acked.update(body.decode().split("\n"))
        except (struct.error, UnicodeDecodeError):
            log.warning("skipping a corrupt journal entry at offset %d", offset)
    return records, acked


class _Segment:
    """One file this process appends to, locked for as long as it holds unacknowledged records."""

    def __init__(self, directory: Path) -> None:
        # Created and locked under a temporary name, then renamed: another process never sees an
        # unlocked segment file that is in fact live.
        name = f"{os.getpid()}-{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        tmp = directory / f".{name}.tmp"
        self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = directory / f"{name}{_SUFFIX}"
        os.rename(tmp, self.path)
        self.size = 0
        self.outstanding: set[str] = set()
        self.sealed = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.size += len(data)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing releases the lock, after the file is gone


class Journal:
    """Append before answering, acknowledge after the broker did, recover orphans at start and sweep them."""

    def __init__(self, directory: Path, segment_bytes: int = 8 * 1024 * 1024) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._active: _Segment | None = None
        self._segments: list[_Segment] = []
        self._owner: dict[str, _Segment] = {}

    @property
    def outstanding(self) -> int:
        return len(self._owner)

    def append(self, record: JournalRecord) -> None:
        """Journal ``record``; once this returns, a crash of this process cannot lose it."""
        segment = self._writable()
        segment.write(_encode_record(record))
        segment.outstanding.add(record.id)
        self._owner[record.id] = segment

    def ack(self, ids: Iterable[str]) -> None:
        """The broker acknowledged these records: forget them, and delete segments nothing is left in."""
        done = [i for i in ids if i in self._owner]
        if not done:
            return
        self._writable().write(self._ack_entry(done))
        emptied: set[int] = set()
        for rid in done:
            segment = self._owner.pop(rid)
            segment.outstanding.discard(rid)
            if segment.sealed and not segment.outstanding:
                emptied.add(id(segment))
        if emptied:
            for segment in [s for s in self._segments if id(s) in emptied]:
                self._segments.remove(segment)
                segment.remove()

    @staticmethod
    def _ack_entry(ids: list[str]) -> bytes:
        body = "\n".join(ids).encode()
        return _HEADER.pack(_ACK, len(body)) + body

    def _writable(self) -> _Segment:
        active = self._active
        if active is not None and active.size < self.segment_bytes:
            return active
        if active is not None:
            active.sealed = True
            if not active.outstanding:
                self._segments.remove(active)
                active.remove()
        self._active = _Segment(self.directory)
        self._segments.append(self._active)
        return self._active

    def close(self) -> None:
        """On a graceful stop, after everything was acknowledged: remove this process's segments. A segment
        still holding records stays for the next process to republish."""
        for segment in self._segments:
            if segment.outstanding:
                os.close(segment.fd)
            else:
                segment.remove()
        self._segments, self._active, self._owner = [], None, {}

    async def recover(self, republish: Callable[[list[JournalRecord]], Awaitable[None]]) -> int:
        """Republish the unacknowledged records of every orphaned segment (one whose process is gone), then
        delete those segments; returns how many records were republished. A failed republish leaves the
        segments for the next sweep."""
        claimed, pending = self._claim_orphans()
        try:
            if pending:
                await republish(pending)
                log.warning("republished %d records a stopped process had journaled but not sent", len(pending))
            for path, _ in claimed:
                path.unlink(missing_ok=True)
            return len(pending)
        finally:
            for _, fd in claimed:
                os.close(fd)

    def _claim_orphans(self) -> tuple[list[tuple[Path, int]], list[JournalRecord]]:
        """Lock every segment no live process holds; their records that were never acknowledged."""
        own = {s.path for s in self._segments}
        claimed: list[tuple[Path, int]] = []
        records: dict[str, JournalRecord] = {}
        acked: set[str] = set()
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            if path in own:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # another process recovered it meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # its process is alive
            if not path.exists():  # recovered and deleted between our open and our lock
                os.close(fd)
                continue
            claimed.append((path, fd))
            found, done = read_segment(_read_all(fd))
            records.update(found)
            acked |= done
        return claimed, [r for rid, r in records.items() if rid not in acked]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
