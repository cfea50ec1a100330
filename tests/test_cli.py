"""The CLI contract (DESIGN.md), run as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BailuServer, new_pg_database
from tests.fakes import FakeUpstream


def bailu(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("BAILU_", "DASHSCOPE_"))}
    full_env.update(env or {})
    out = subprocess.run([sys.executable, "-m", "bailu", *args], env=full_env, capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def last_line(out: subprocess.CompletedProcess[str]) -> str:
    return out.stdout.strip().splitlines()[-1]


def test_create_commands_print_ids_last(tmp_path: Path) -> None:
    data = tmp_path / "d"
    ws_default = last_line(bailu("init", "--data-dir", str(data)))
    assert ws_default.startswith("llm-")
    assert last_line(bailu("init", "--data-dir", str(data))) == ws_default  # idempotent
    env = {"BAILU_DATA_DIR": str(data)}
    ws = last_line(bailu("workspace", "create", "research", env=env))
    assert ws.startswith("llm-") and ws != ws_default
    dup = bailu("workspace", "create", "research", env=env, check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    key = last_line(bailu("key", "create", "--workspace", "research", env=env))
    assert key.startswith("sk-")
    assert key not in (data / "bailu.db").read_bytes().decode("latin-1")
    spec = tmp_path / "app.yaml"
    spec.write_text("name: 美食推荐\ntype: agent\nmodel: qwen-max\ninstructions: |\n  请给出{{city}}的三种美食推荐。\nparameters: {temperature: 0.7, max_tokens: 1024}\n", encoding="utf-8")
    created = bailu("app", "create", "-f", str(spec), "--workspace", ws, "--publish", env=env)
    app_id = last_line(created)
    assert len(app_id) == 32 and "qwen-max" in created.stderr  # warned: model not configured here
    assert last_line(bailu("app", "publish", app_id, "--workspace", ws, env=env)) == app_id
    assert app_id in bailu("app", "list", "--workspace", "research", env=env).stdout


def test_bad_spec_and_config_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntemprature: 1\n")
    out = bailu("app", "create", "-f", str(bad), "--data-dir", str(tmp_path / "d"), check=False)
    assert out.returncode != 0 and "temprature" in out.stderr and "Traceback" not in out.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text('[models.x]\nprovider = "nope"\n')
    out = bailu("init", "--data-dir", str(tmp_path / "d"), "--config", str(cfg), check=False)
    assert out.returncode != 0 and "provider must be one of" in out.stderr


def test_call_command(server: BailuServer) -> None:
    app = server.app(model="story")
    env = {"DASHSCOPE_API_KEY": server.key}
    out = bailu("call", app, "你好", "--url", server.url, env=env)
    assert out.stdout.strip() == "从前有座山，山里有座庙。Once upon a time there was a mountain."
    sid = out.stderr.strip().split("session_id: ")[1]
    streamed = bailu("call", app, "again", "--url", server.url, "--session-id", sid, "--stream", env=env)
    assert streamed.stdout.strip() == out.stdout.strip()
    assert f"session_id: {sid}" in streamed.stderr
    bad = bailu("call", app, "x", "--url", server.url, "--api-key", "sk-nope", check=False)
    assert bad.returncode != 0 and "InvalidApiKey" in bad.stderr


@pytest.mark.postgres
def test_server_on_postgresql(pg_server: str, upstream: FakeUpstream, tmp_path: Path) -> None:
    """The same server, end to end, with BAILU_DATABASE_URL pointing at PostgreSQL."""
    srv = BailuServer(tmp_path / "pgdata", upstream, database_url=new_pg_database(pg_server))
    try:
        assert not (tmp_path / "pgdata" / "bailu.db").exists()
        app = srv.app(model="up-echo")
        first = srv.post(app, {"input": {"prompt": "one"}}).json()
        sid = first["output"]["session_id"]
        srv.post(app, {"input": {"prompt": "two", "session_id": sid}})
        assert [m["content"] for m in upstream.last("fake-echo")["messages"]] == ["one", "upstream heard: one", "two"]
        assert srv.post(app, {"input": {"prompt": "x"}}, key="sk-bad").status_code == 401
    finally:
        srv.stop()
