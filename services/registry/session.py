"""Transactions over the registry database, shared by the run and model-version stores.

Writes are serialised by a lock within the process; the database's unique indexes (one version number
per model, one production version per model, one run per key) keep several processes honest as well.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.registry.db import make_engine, upgrade_schema

T = TypeVar("T")


class Database:
    """An engine with the schema brought up to date, sessions, and serialised writes."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.upgraded = upgrade_schema(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(select(1))
        return True

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def write(self, fn: Callable[[Session], T], attempts: int = 3) -> T:
        """Run ``fn`` in a transaction under the write lock, retrying a lost race on a unique index."""
        for attempt in range(attempts):
            try:
                with self._write_lock, self.session() as session:
                    return fn(session)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")
