"""Raw-HTTP checks of the wire, sessions, workspaces and cancellation against a real server."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import httpx
import pytest

from bailu.config import SessionSettings
from bailu.sessions import SessionStore
from bailu.store.db import Database
from tests.conftest import BailuServer
from tests.fakes import FakeUpstream

FRAME = re.compile(r"^id:(\d+)\nevent:result\n:HTTP_STATUS/200\ndata:(\{[^\n]*\})$")


@pytest.fixture(scope="module")
def echo_app(server: BailuServer) -> str:
    return server.app(model="up-echo", instructions="System says hi.")


def frames_of(resp: httpx.Response) -> list[dict]:
    chunks = [c for c in resp.text.split("\n\n") if c]
    out = []
    for i, chunk in enumerate(chunks, start=1):
        m = FRAME.match(chunk)
        assert m, f"bad frame: {chunk!r}"
        assert int(m.group(1)) == i
        out.append(json.loads(m.group(2)))
    return out


def test_sse_framing(server: BailuServer, echo_app: str) -> None:
    resp = server.post(echo_app, {"input": {"prompt": "one two"}, "parameters": {"incremental_output": True}}, stream=True)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/event-stream;charset=UTF-8"
    assert resp.headers["transfer-encoding"] == "chunked"
    assert "content-encoding" not in resp.headers
    assert resp.headers["x-request-id"]
    assert "[DONE]" not in resp.text
    frames = frames_of(resp)
    assert all("output" in f and f["request_id"] == resp.headers["x-request-id"] for f in frames)
    assert [f["output"]["finish_reason"] for f in frames] == ["null"] * (len(frames) - 1) + ["stop"]
    assert "".join(f["output"]["text"] for f in frames) == "upstream heard: one two"
    assert all(f["usage"]["models"][0]["model_id"] == "up-echo" for f in frames)
    assert frames[-1]["usage"]["models"][0]["output_tokens"] == 4


def test_stream_decided_by_header_only(server: BailuServer, echo_app: str) -> None:
    body = {"input": {"prompt": "x"}, "stream": True}
    resp = server.post(echo_app, body, headers={"Accept": "text/event-stream"})
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["output"]["text"] == "upstream heard: x"


def test_non_stream_shape(server: BailuServer, echo_app: str) -> None:
    resp = server.post(echo_app, {"input": {"prompt": "你好"}})
    body = resp.json()
    assert set(body) == {"output", "usage", "request_id"}
    assert set(body["output"]) == {"text", "finish_reason", "session_id"}
    assert re.fullmatch(r"[0-9a-f]{32}", body["output"]["session_id"])
    assert body["request_id"] == resp.headers["x-request-id"]
    assert "你好" in resp.content.decode("utf-8")  # raw UTF-8, not \\u escapes


def test_unknown_and_legacy_keys_ignored(server: BailuServer, echo_app: str) -> None:
    body = {
        "model": "",
        "input": {"prompt": "legacy", "file_list": ["http://x/y.pdf"], "memory_id": "", "whatever": 1},
        "parameters": {"workspace": None, "file_list": [], "has_thoughts": False, "future_knob": {"a": 1}},
        "debug": {},
        "resources": [],
    }
    assert server.post(echo_app, body).json()["output"]["text"] == "upstream heard: legacy"
    # the PHP sample sends no parameters at all; the Node sample sends flags as strings
    assert server.post(echo_app, {"input": {"prompt": "php"}}).status_code == 200
    resp = server.post(echo_app, {"input": {"prompt": "node"}, "parameters": {"incremental_output": "true"}}, stream=True)
    assert frames_of(resp)[-1]["output"]["text"] == ""


def test_java_alias_path(server: BailuServer, echo_app: str) -> None:
    resp = httpx.post(f"{server.base}/apps/{echo_app}/completion", json={"input": {"prompt": "java"}},
                      headers={"Authorization": f"Bearer {server.key}"})
    assert resp.json()["output"]["text"] == "upstream heard: java"


def test_messages_rules(server: BailuServer, echo_app: str, upstream: FakeUpstream) -> None:
    first = server.post(echo_app, {"input": {"prompt": "stored turn"}}).json()
    msgs = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "你是谁？"},
        {"role": "assistant", "content": "我是助手。"},
    ]
    # messages + prompt: prompt appended last; messages beat session_id
    body = {"input": {"messages": msgs, "prompt": "你能做什么？", "session_id": first["output"]["session_id"]}}
    resp = server.post(echo_app, body).json()
    sent = upstream.last("fake-echo")["messages"]
    assert sent == [
        {"role": "system", "content": "System says hi.\n\nYou are a helpful assistant."},
        {"role": "user", "content": "你是谁？"},
        {"role": "assistant", "content": "我是助手。"},
        {"role": "user", "content": "你能做什么？"},
    ]
    assert resp["output"]["text"] == "upstream heard: 你能做什么？"
    assert resp["output"]["session_id"] != first["output"]["session_id"]
    # the reply's session holds that conversation, so it can be continued by id
    server.post(echo_app, {"input": {"prompt": "继续", "session_id": resp["output"]["session_id"]}})
    sent = upstream.last("fake-echo")["messages"]
    assert [m["content"] for m in sent[1:]] == ["你是谁？", "我是助手。", "你能做什么？", "upstream heard: 你能做什么？", "继续"]


def test_legacy_history_field(server: BailuServer, echo_app: str, upstream: FakeUpstream) -> None:
    body = {"input": {"prompt": "and now?", "history": [{"user": "hi", "bot": "hello"}]}}
    server.post(echo_app, body)
    assert [m["content"] for m in upstream.last("fake-echo")["messages"]] == ["System says hi.", "hi", "hello", "and now?"]


def test_unknown_session_starts_empty_and_keeps_id(server: BailuServer, echo_app: str, upstream: FakeUpstream) -> None:
    sid = uuid.uuid4().hex
    resp = server.post(echo_app, {"input": {"prompt": "fresh", "session_id": sid}}).json()
    assert resp["output"]["session_id"] == sid
    assert len(upstream.last("fake-echo")["messages"]) == 2


def test_sessions_are_scoped_to_the_app(server: BailuServer, echo_app: str, upstream: FakeUpstream) -> None:
    other = server.app(model="up-echo")
    sid = server.post(echo_app, {"input": {"prompt": "secret of app one"}}).json()["output"]["session_id"]
    server.post(other, {"input": {"prompt": "hello", "session_id": sid}})
    assert "secret of app one" not in json.dumps(upstream.last("fake-echo")["messages"])


def _db(server: BailuServer) -> Database:
    return Database(f"sqlite:///{server.data_dir / 'bailu.db'}")


def _history(server: BailuServer, app_id: str, sid: str) -> list[dict]:
    db = _db(server)
    try:
        with db.read() as s:
            from bailu.store import workspaces

            ws = workspaces.default_workspace_id(s)
            assert ws
            return SessionStore(db, SessionSettings()).history(s, ws, app_id, sid)
    finally:
        db.dispose()


def test_failed_turn_not_stored(server: BailuServer) -> None:
    app = server.app(model="fails-midway")
    resp = server.post(app, {"input": {"prompt": "doomed"}, "parameters": {"incremental_output": True}}, stream=True)
    first = json.loads(resp.text.split("\n\n")[0].split("data:", 1)[1])
    assert "event:error" in resp.text
    assert _history(server, app, first["output"]["session_id"]) == []


def test_concurrent_turns_on_one_session(server: BailuServer, echo_app: str, upstream: FakeUpstream) -> None:
    sid = server.post(echo_app, {"input": {"prompt": "start"}}).json()["output"]["session_id"]

    async def burst() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            async def one(i: int) -> None:
                r = await client.post(
                    f"{server.url}/apps/{echo_app}/completion",
                    headers={"Authorization": f"Bearer {server.key}"},
                    json={"input": {"prompt": f"msg-{i}", "session_id": sid}},
                )
                assert r.status_code == 200
            await asyncio.gather(*(one(i) for i in range(20)))

    asyncio.run(burst())
    history = _history(server, echo_app, sid)
    assert len(history) == 2 * 21
    for user, answer in zip(history[::2], history[1::2], strict=True):
        assert user["role"] == "user" and answer["role"] == "assistant"
        assert answer["content"] == f"upstream heard: {user['content']}"
    assert sorted(m["content"] for m in history[2::2]) == sorted(f"msg-{i}" for i in range(20))


def _wait_for(predicate, seconds: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_stream_disconnect_cancels_upstream(server: BailuServer, upstream: FakeUpstream) -> None:
    app = server.app(model="up-hang")
    tag = 424242
    with httpx.stream("POST", f"{server.url}/apps/{app}/completion",
                      headers={"Authorization": f"Bearer {server.key}", "X-DashScope-SSE": "enable"},
                      json={"input": {"prompt": "hang"}, "parameters": {"seed": tag}}, timeout=30) as resp:
        lines = []
        for line in resp.iter_lines():
            lines.append(line)
            if line.startswith("data:"):
                break
        assert lines[0] == "id:1"
    sid = json.loads(lines[-1][5:])["output"]["session_id"]
    assert _wait_for(lambda: tag in upstream.disconnects), "upstream call was not cancelled"
    assert _history(server, app, sid) == []


def test_non_stream_disconnect_cancels_upstream(server: BailuServer, upstream: FakeUpstream) -> None:
    app = server.app(model="up-hang")
    tag = 434343
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/apps/{app}/completion", headers={"Authorization": f"Bearer {server.key}"},
                   json={"input": {"prompt": "hang"}, "parameters": {"seed": tag}}, timeout=1.0)
    assert _wait_for(lambda: tag in upstream.disconnects), "upstream call was not cancelled"


def test_workspace_isolation(server: BailuServer) -> None:
    ws_a = server.cli("workspace", "create", f"team-a-{uuid.uuid4().hex[:6]}")
    ws_b = server.cli("workspace", "create", f"team-b-{uuid.uuid4().hex[:6]}")
    key_a = server.cli("key", "create", "--workspace", ws_a)
    key_b = server.cli("key", "create", "--workspace", ws_b)
    app_a = server.app(workspace=ws_a)
    body = {"input": {"prompt": "hi"}}
    ok = server.post(app_a, body, key=key_a, headers={"X-DashScope-WorkSpace": ws_a})
    assert ok.status_code == 200
    # without the header the default workspace is meant: A's key has no right there
    assert server.post(app_a, body, key=key_a).json()["code"] == "Workspace.AccessDenied"
    # B's key can't reach A, with or without naming A; answers don't reveal whether the app exists
    assert server.post(app_a, body, key=key_b, headers={"X-DashScope-WorkSpace": ws_a}).json()["code"] == "Workspace.AccessDenied"
    r1 = server.post(app_a, body, key=key_b, headers={"X-DashScope-WorkSpace": ws_b})
    r2 = server.post("e" * 32, body, key=key_b, headers={"X-DashScope-WorkSpace": ws_b})
    assert (r1.status_code, r1.json()["code"], r1.json()["message"]) == (r2.status_code, r2.json()["code"], r2.json()["message"]) == (403, "App.AccessDenied", "App access denied.")
    # the default workspace's key cannot reach A either
    assert server.post(app_a, body, headers={"X-DashScope-WorkSpace": ws_a}).status_code == 403
    assert server.post(app_a, body).json()["code"] == "App.AccessDenied"


def test_latest_published_version_is_used(server: BailuServer, upstream: FakeUpstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    app = server.app(model="up-echo", instructions="version one")
    spec = tmp_path / "v2.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "type": "agent", "model": "up-echo", "instructions": "version two"}))
    server.cli("app", "update", app, "-f", str(spec))
    server.post(app, {"input": {"prompt": "x"}})
    assert upstream.last("fake-echo")["messages"][0]["content"] == "version one"  # draft not live yet
    server.cli("app", "publish", app)
    server.post(app, {"input": {"prompt": "x"}})
    assert upstream.last("fake-echo")["messages"][0]["content"] == "version two"
