"""Store tests, each on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from bailu.config import SessionSettings
from bailu.sessions import SessionStore
from bailu.store import apps as app_repo
from bailu.store import workspaces as ws_repo
from bailu.store.db import Database
from bailu.store.tables import ApiKey, AppVersion, ChatSession


@pytest.fixture
def db(database_url: str):  # type: ignore[no-untyped-def]
    database = Database(database_url)
    database.migrate()
    with database.write() as s:
        ws_repo.ensure_default_workspace(s)
    yield database
    database.dispose()


def test_migrate_is_idempotent_and_default_workspace_unique(db: Database) -> None:
    db.migrate()
    with db.write() as s:
        first = ws_repo.ensure_default_workspace(s).id
    with db.write() as s:
        assert ws_repo.ensure_default_workspace(s).id == first
    with db.read() as s:
        assert [w.id for w in ws_repo.list_workspaces(s)] == [first]


def test_keys_are_stored_hashed_and_scoped(db: Database) -> None:
    with db.write() as s:
        ws = ws_repo.create_workspace(s, "team")
        key = ws_repo.create_key(s, ws.id)
    assert key.startswith("sk-") and len(key) == 35
    with db.read() as s:
        rows = s.scalars(select(ApiKey)).all()
        assert all(key not in (r.key_hash, r.id, r.prefix) for r in rows)
        owner = ws_repo.key_owner(s, key)
        assert owner is not None and owner.workspace_id == ws.id
        assert ws_repo.key_owner(s, key + "x") is None
    with db.write() as s:
        s.execute(update(ApiKey).values(revoked=True))
    with db.read() as s:
        assert ws_repo.key_owner(s, key) is None


def test_published_versions_are_immutable_snapshots(db: Database) -> None:
    with db.write() as s:
        ws = ws_repo.default_workspace_id(s)
        assert ws
        app = app_repo.create_app(s, ws, {"name": "a", "type": "agent", "instructions": "one"})
        assert app_repo.latest_published(s, ws, app.id) is None
        assert app_repo.publish(s, app) == 1
        app_repo.update_draft(s, app, {"name": "a", "type": "agent", "instructions": "two"})
    with db.read() as s:
        live = app_repo.latest_published(s, ws, app.id)
        assert live is not None and live.version == 1 and live.spec["instructions"] == "one"
        assert app_repo.latest_published(s, "llm-otherworkspace0", app.id) is None
    with db.write() as s:
        found = app_repo.get_app(s, ws, app.id)
        assert found is not None
        assert app_repo.publish(s, found) == 2
    with db.read() as s:
        live = app_repo.latest_published(s, ws, app.id)
        assert live is not None and live.version == 2 and live.spec["instructions"] == "two"
        assert [v.spec["instructions"] for v in s.scalars(select(AppVersion).order_by(AppVersion.version))] == ["one", "two"]


def _turn(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]


def test_sessions_keep_last_turns_and_scope(db: Database) -> None:
    store = SessionStore(db, SessionSettings(ttl_seconds=3600, max_turns=3))
    for i in range(5):
        store.append_turn("ws", "app", "s1", _turn(i), f"r{i}")
    with db.read() as s:
        assert [m["content"] for m in store.history(s, "ws", "app", "s1")] == ["q2", "a2", "q3", "a3", "q4", "a4"]
        assert store.history(s, "ws", "other-app", "s1") == []
        assert store.history(s, "other-ws", "app", "s1") == []
        assert store.history(s, "ws", "app", "unknown") == []
        n = s.scalar(text("select count(*) from session_turns"))
        assert n == 3


def test_sessions_expire_after_last_use(db: Database) -> None:
    store = SessionStore(db, SessionSettings(ttl_seconds=60, max_turns=50))
    store.append_turn("ws", "app", "s1", _turn(1), "r1")
    with db.write() as s:
        s.execute(update(ChatSession).values(last_used_at=ws_repo.now() - timedelta(seconds=61)))
    with db.read() as s:
        assert store.history(s, "ws", "app", "s1") == []
    store.append_turn("ws", "app", "s1", _turn(2), "r2")  # the same id starts again, empty
    with db.read() as s:
        assert [m["content"] for m in store.history(s, "ws", "app", "s1")] == ["q2", "a2"]


def test_concurrent_appends_never_lose_or_interleave(db: Database) -> None:
    store = SessionStore(db, SessionSettings(ttl_seconds=3600, max_turns=100))
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            store.append_turn("ws", "app", "shared", _turn(i), f"r{i}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.read() as s:
        history = store.history(s, "ws", "app", "shared")
    assert len(history) == 32
    for q, a in zip(history[::2], history[1::2], strict=True):
        assert a["content"] == "a" + q["content"][1:]
    assert sorted(int(q["content"][1:]) for q in history[::2]) == list(range(16))
