"""Bearer tokens kept hashed (sha256) in a JSON file: create, list, revoke, verify. The file is re-read
when it changes, so a revocation takes effect at the next request of every service."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlops.errors import InvalidArgument, NotFound

ROLES = ("viewer", "predictor", "producer", "scientist", "admin",
         # the services' own (least privilege per service: mlops.auth.policy.SERVICE_ROLES)
         "service-reader", "service-trainer", "service-router")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, name and role."""

    token_id: str
    name: str
    role: str


@dataclass
class TokenRecord:
    id: str
    name: str
    role: str
    sha256: str
    created_at: str
    revoked_at: str | None = None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._by_hash: dict[str, TokenRecord] = {}
        self._records: list[TokenRecord] = []

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._records, self._by_hash, self._mtime = [], {}, None
            return
        if mtime == self._mtime:
            return
        raw = json.loads(self.path.read_text() or "{}")
        self._records = [TokenRecord(**r) for r in raw.get("tokens", [])]
        self._by_hash = {r.sha256: r for r in self._records if not r.revoked_at}
        self._mtime = mtime

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"tokens": [asdict(r) for r in self._records]}, indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)
        self._mtime = None

    def verify(self, token: str) -> Principal | None:
        with self._lock:
            self._load()
            record = self._by_hash.get(_hash(token))
        return Principal(record.id, record.name, record.role) if record else None

    def create(self, name: str, role: str) -> tuple[TokenRecord, str]:
        """A new token; the plaintext is returned once and never stored."""
        if role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}", field="role")
        if not name:
            raise InvalidArgument("a token needs a name", field="name")
        token_id = secrets.token_hex(4)
        token = f"mlops_{token_id}_{secrets.token_urlsafe(24)}"
        with self._lock:
            self._load()
            record = TokenRecord(id=token_id, name=name, role=role, sha256=_hash(token),
                                 created_at=datetime.now(UTC).isoformat())
            self._records.append(record)
            self._save()
        return record, token

    def list(self) -> list[TokenRecord]:
        with self._lock:
            self._load()
            return list(self._records)

    def revoke(self, token_id: str) -> TokenRecord:
        with self._lock:
            self._load()
            for record in self._records:
                if record.id == token_id and not record.revoked_at:
                    record.revoked_at = datetime.now(UTC).isoformat()
                    self._save()
                    return record
        raise NotFound(f"no active token with id {token_id!r}", field="id")
