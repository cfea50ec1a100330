"""Engine creation and migrations.

SQLite runs in WAL mode with one writer path (a process-wide lock around write
transactions, so concurrent requests queue instead of failing with "database is
locked"); PostgreSQL uses the same repository code with a normal pool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from bailu.config import normalize_database_url

MIGRATIONS = Path(__file__).parent / "migrations"


class Database:
    """An engine plus a session factory; ``read()`` and ``write()`` open transactions."""

    def __init__(self, url: str) -> None:
        url = normalize_database_url(url)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock() if self.is_sqlite else None

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._factory() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction, committed on success, rolled back on error."""
        if self._write_lock is None:
            with self._factory.begin() as session:
                yield session
            return
        with self._write_lock, self._factory.begin() as session:
            yield session

    def writer_busy(self) -> bool:
        """Whether another thread of this process is inside a SQLite write transaction."""
        return self._write_lock is not None and self._write_lock.locked()

    def migrate(self, revision: str = "head") -> None:
        with self.engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
