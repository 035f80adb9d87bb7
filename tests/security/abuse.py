"""Hostile request bodies for the adversarial suite, sent over a raw socket: a chunked body of any size
(no Content-Length, so only a limit counted while reading can stop it), a gzip or deflate bomb inflated
from a few hundred KiB, and JSON nested past any sane depth. The socket sender stops writing as soon as
the server answers, so a server that refuses early is seen to refuse early."""

from __future__ import annotations

import json
import select
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

MIB = 1024 * 1024


@dataclass
class Answer:
    """What a raw request got: the status, the head of the response, and how much of the body was sent."""

    status: int
    head: bytes
    sent: int


def _status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def send_chunked(url: str, headers: dict[str, str], total: int, chunk: int = 256 * 1024,
                 timeout_s: float = 120.0) -> Answer:
    """POST ``total`` bytes of ``x`` as a chunked body to ``url``, stopping as soon as the server answers.

    Returns the status and how many body bytes went out before the answer (or all of them)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout_s)
    try:
        head = [f"POST {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
                f"Host: {parts.netloc}", "Transfer-Encoding: chunked", "Content-Type: application/json",
                *(f"{k}: {v}" for k, v in headers.items())]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        piece = f"{chunk:x}\r\n".encode() + b"x" * chunk + b"\r\n"
        sent = 0
        sock.setblocking(False)
        pending = b""
        finished = False
        received = b""
        while True:
            want_write = not finished
            readable, writable, _ = select.select([sock], [sock] if want_write else [], [], timeout_s)
            if not readable and not writable:
                raise TimeoutError(f"no answer from {url} within {timeout_s} s")
            if readable:
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                received += data
                if b"\r\n\r\n" in received or not data:
                    break
            if writable and not finished:
                if not pending:
                    if sent >= total:
                        pending = b"0\r\n\r\n"
                        finished = True
                    else:
                        pending = piece
                        sent += chunk
                try:
                    n = sock.send(pending)
                    pending = pending[n:]
                except (BlockingIOError, InterruptedError):
                    pass
                except (ConnectionResetError, BrokenPipeError):
                    finished = True
        # Read the rest of the head, if the answer came in pieces.
        sock.setblocking(True)
        while b"\r\n\r\n" not in received:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                break
            if not data:
                break
            received += data
        if not received:
            raise ConnectionError(f"{url} closed the connection without an answer after {sent} bytes")
        return Answer(_status(received), received.split(b"\r\n\r\n", 1)[0], sent)
    finally:
        sock.close()


def bomb(inflated: int, encoding: str = "gzip") -> bytes:
    """``inflated`` bytes of JSON-ish filler compressed (gzip or deflate): a few hundred KiB on the wire."""
    wbits = 31 if encoding == "gzip" else 15
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    out = [packer.compress(b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["')]
    block = b" " * MIB
    for _ in range(inflated // MIB):
        out.append(packer.compress(block))
    out.append(packer.compress(b'"]}]}'))
    out.append(packer.flush())
    return b"".join(out)


def deep_json(depth: int) -> bytes:
    """An object whose ``reason`` and ``stage`` sit beside a value nested ``depth`` lists deep."""
    nested = "[" * depth + "]" * depth
    return f'{{"stage": "candidate", "reason": "x", "deep": {nested}}}'.encode()


def big_int_event(digits: int) -> bytes:
    return json.dumps({"event_id": "e1", "entity_id": "a", "event_time": "2024-01-01T00:00:00Z"})[:-1].encode() \
        + b', "value": ' + b"9" * digits + b"}"


def rss_kib(pid: int) -> int:
    """The resident set of ``pid`` (``VmRSS`` in ``/proc/<pid>/status``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")
