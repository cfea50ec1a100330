"""The ``bailu`` command. Every command that creates something prints its id (or
key) alone on the last line of stdout; notes go to stderr."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import httpx

from bailu.appspec import load_spec_file
from bailu.config import Settings, load_settings
from bailu.errors import ConfigError
from bailu.store import apps as app_repo
from bailu.store import workspaces as ws_repo
from bailu.store.db import Database

DEFAULT_URL = "http://127.0.0.1:8080/api/v1"


def _store_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file (default DIR/bailu.toml).")(fn)
    fn = click.option("--data-dir", type=click.Path(file_okay=False), help="Data directory (default $BAILU_DATA_DIR or ./.bailu).")(fn)
    return fn


def _settings(data_dir: str | None, config_file: str | None, **kw: Any) -> Settings:
    try:
        return load_settings(data_dir, config_file, **kw)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _open_store(settings: Settings) -> Database:
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    db.migrate()
    with db.write() as s:
        ws_repo.ensure_default_workspace(s)
    return db


@contextmanager
def _store(data_dir: str | None, config_file: str | None) -> Iterator[tuple[Settings, Database]]:
    settings = _settings(data_dir, config_file)
    db = _open_store(settings)
    try:
        yield settings, db
    finally:
        db.dispose()


def _workspace_id(db: Database, workspace: str | None) -> str:
    with db.read() as s:
        ws = ws_repo.find_workspace(s, workspace)
        if ws is None:
            raise click.ClickException(f"no workspace {workspace!r}")
        return ws.id


def _note(msg: str) -> None:
    click.echo(msg, err=True)


@click.group()
@click.version_option(package_name="bailu")
def main() -> None:
    """bailu: a self-hosted Bailian application platform."""


@main.command()
@_store_options
def init(data_dir: str | None, config_file: str | None) -> None:
    """Create or upgrade storage and the default workspace (idempotent)."""
    with _store(data_dir, config_file) as (settings, db):
        ws = _workspace_id(db, None)
        _note(f"storage ready at {settings.database_url.split('@')[-1]}")
        click.echo(ws)


@main.command()
@_store_options
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8080).")
@click.option("--log-level", default="info", show_default=True)
def serve(data_dir: str | None, config_file: str | None, host: str | None, port: int | None, log_level: str) -> None:
    """Serve the DashScope application API."""
    import uvicorn

    from bailu.server.app import create_app

    settings = _settings(data_dir, config_file, host=host, port=port)
    _open_store(settings).dispose()
    _note(f"bailu serving on http://{settings.host}:{settings.port}/api/v1")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=log_level == "debug",
        timeout_graceful_shutdown=5,
    )


@main.group()
def workspace() -> None:
    """Workspaces."""


@workspace.command("create")
@click.argument("name")
@_store_options
def workspace_create(name: str, data_dir: str | None, config_file: str | None) -> None:
    with _store(data_dir, config_file) as (_, db):
        with db.read() as s:
            if ws_repo.find_workspace(s, name) is not None:
                raise click.ClickException(f"workspace {name!r} already exists")
        with db.write() as s:
            ws = ws_repo.create_workspace(s, name)
            click.echo(ws.id)


@workspace.command("list")
@_store_options
def workspace_list(data_dir: str | None, config_file: str | None) -> None:
    with _store(data_dir, config_file) as (_, db), db.read() as s:
        for ws in ws_repo.list_workspaces(s):
            click.echo(f"{ws.id}\t{ws.name}{'  (default)' if ws.is_default else ''}")


@main.group()
def key() -> None:
    """API keys."""


@key.command("create")
@click.option("--workspace", help="Workspace id or name (default: the default workspace).")
@_store_options
def key_create(workspace: str | None, data_dir: str | None, config_file: str | None) -> None:
    """Create an API key; it is shown once and stored hashed."""
    with _store(data_dir, config_file) as (_, db):
        ws = _workspace_id(db, workspace)
        with db.write() as s:
            secret = ws_repo.create_key(s, ws)
        _note(f"API key for workspace {ws} (shown once; store it now):")
        click.echo(secret)


@main.group()
def app() -> None:
    """Apps."""


def _load_spec(path: str, settings: Settings) -> dict[str, Any]:
    try:
        spec = load_spec_file(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if spec.model not in settings.models:
        _note(f"warning: model {spec.model!r} is not configured here; calls will fail until it is")
    return spec.model_dump(mode="json", exclude_none=True)


@app.command("create")
@click.option("-f", "--file", "spec_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--workspace", help="Workspace id or name.")
@click.option("--publish", is_flag=True, help="Publish version 1 right away.")
@_store_options
def app_create(spec_file: str, workspace: str | None, publish: bool, data_dir: str | None, config_file: str | None) -> None:
    """Create an app from a YAML spec; prints the app id."""
    with _store(data_dir, config_file) as (settings, db):
        spec = _load_spec(spec_file, settings)
        ws = _workspace_id(db, workspace)
        with db.write() as s:
            new = app_repo.create_app(s, ws, spec)
            if publish:
                version = app_repo.publish(s, new)
                _note(f"published version {version}")
            click.echo(new.id)


@app.command("update")
@click.argument("app_id")
@click.option("-f", "--file", "spec_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--workspace", help="Workspace id or name.")
@_store_options
def app_update(app_id: str, spec_file: str, workspace: str | None, data_dir: str | None, config_file: str | None) -> None:
    """Replace an app's draft spec (calls keep using the published version until `app publish`)."""
    with _store(data_dir, config_file) as (settings, db):
        spec = _load_spec(spec_file, settings)
        ws = _workspace_id(db, workspace)
        with db.write() as s:
            found = app_repo.get_app(s, ws, app_id)
            if found is None:
                raise click.ClickException(f"no app {app_id} in workspace {ws}")
            app_repo.update_draft(s, found, spec)
        click.echo(app_id)


@app.command("publish")
@click.argument("app_id")
@click.option("--workspace", help="Workspace id or name.")
@_store_options
def app_publish(app_id: str, workspace: str | None, data_dir: str | None, config_file: str | None) -> None:
    """Publish the draft as a new immutable version; calls use the latest one."""
    with _store(data_dir, config_file) as (_, db):
        ws = _workspace_id(db, workspace)
        with db.write() as s:
            found = app_repo.get_app(s, ws, app_id)
            if found is None:
                raise click.ClickException(f"no app {app_id} in workspace {ws}")
            version = app_repo.publish(s, found)
        _note(f"published version {version}")
        click.echo(app_id)


@app.command("list")
@click.option("--workspace", help="Workspace id or name.")
@_store_options
def app_list(workspace: str | None, data_dir: str | None, config_file: str | None) -> None:
    with _store(data_dir, config_file) as (_, db):
        ws = _workspace_id(db, workspace)
        with db.read() as s:
            for a in app_repo.list_apps(s, ws):
                click.echo(f"{a.id}\t{a.type}\t{a.name}")


@main.command()
@_store_options
def models(data_dir: str | None, config_file: str | None) -> None:
    """List the configured models and whether each is ready."""
    from bailu.models.readiness import readiness

    settings = _settings(data_dir, config_file)
    for name, cfg in settings.models.items():
        ready, detail = readiness(cfg)
        click.echo(f"{name}\t{cfg.provider}\t{'ready' if ready else 'NOT READY'}\t{detail}")


@main.command()
@_store_options
@click.option("--url", default=DEFAULT_URL, show_default=True, help="The API base to print in the examples.")
def demo(data_dir: str | None, config_file: str | None, url: str) -> None:
    """Create (once) a demo workspace, key and agent app on the embedded model; print how to call it."""
    from bailu.demo import ensure_demo

    with _store(data_dir, config_file) as (settings, db):
        info = ensure_demo(settings, db, note=_note)
    click.echo(info.instructions(url))
    click.echo(info.app_id)


@main.command()
@click.argument("app_id")
@click.argument("prompt")
@click.option("--session-id", help="Continue a conversation.")
@click.option("--stream", is_flag=True, help="Print the answer as it streams.")
@click.option("--url", default=lambda: os.environ.get("DASHSCOPE_HTTP_BASE_URL", DEFAULT_URL), show_default=DEFAULT_URL,
              help="API base, as the SDK's base_http_api_url.")
@click.option("--api-key", default=lambda: os.environ.get("DASHSCOPE_API_KEY"), help="API key (default $DASHSCOPE_API_KEY).")
@click.option("--workspace", help="Workspace id (X-DashScope-WorkSpace).")
def call(app_id: str, prompt: str, session_id: str | None, stream: bool, url: str, api_key: str | None, workspace: str | None) -> None:
    """Call an app and print the answer (the session id goes to stderr)."""
    headers = {"Authorization": f"Bearer {api_key or ''}", "Content-Type": "application/json"}
    if workspace:
        headers["X-DashScope-WorkSpace"] = workspace
    body: dict[str, Any] = {"input": {"prompt": prompt}, "parameters": {}}
    if session_id:
        body["input"]["session_id"] = session_id
    endpoint = url.rstrip("/") + f"/apps/{app_id}/completion"
    try:
        with httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0)) as client:
            if stream:
                headers["X-DashScope-SSE"] = "enable"
                body["parameters"]["incremental_output"] = True
                _call_stream(client, endpoint, headers, body)
            else:
                resp = client.post(endpoint, headers=headers, json=body)
                data = _json(resp)
                if resp.status_code != 200:
                    _fail(data, resp)
                click.echo(data["output"]["text"])
                _note(f"session_id: {data['output']['session_id']}")
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {endpoint}: {exc}") from None


def _call_stream(client: httpx.Client, endpoint: str, headers: dict[str, str], body: dict[str, Any]) -> None:
    with client.stream("POST", endpoint, headers=headers, json=body) as resp:
        if resp.status_code != 200:
            resp.read()
            _fail(_json(resp), resp)
        event, session = "result", None
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:]
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if event == "error":
                    click.echo()
                    _fail(data, resp)
                click.echo(data["output"].get("text") or "", nl=False)
                sys.stdout.flush()
                session = data["output"].get("session_id")
        click.echo()
        _note(f"session_id: {session}")


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        return resp.json()
    except ValueError:
        return {"code": "Unknown", "message": resp.text}


def _fail(data: dict[str, Any], resp: httpx.Response) -> None:
    raise click.ClickException(
        f"request_id: {data.get('request_id')}, status_code: {resp.status_code}, "
        f"code: {data.get('code')}, message: {data.get('message')}"
    )


def _register_capabilities() -> None:
    from bailu.knowledge.cli import register as register_kb

    register_kb(main, _store_options, _store, _workspace_id)


_register_capabilities()

if __name__ == "__main__":  # pragma: no cover
    main()
