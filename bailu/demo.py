"""The first-run demo: a workspace, a key and an agent app on the default model.

Created once and reused: the key is kept in ``DATA_DIR/demo.json`` (mode 0600)
because a key is otherwise only ever shown at creation; delete that file to
get a new demo key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bailu.config import DEFAULT_MODEL, Settings
from bailu.store import apps as app_repo
from bailu.store import workspaces as ws_repo
from bailu.store.db import Database

DEMO_WORKSPACE = "demo"
DEMO_SPEC = {
    "name": "bailu demo",
    "type": "agent",
    "model": DEFAULT_MODEL,
    "instructions": "You are a helpful assistant. Answer briefly, in the language of the question.",
    "parameters": {"temperature": 0.7, "max_tokens": 512},
}


@dataclass(frozen=True)
class DemoInfo:
    workspace_id: str
    api_key: str
    app_id: str

    def instructions(self, url: str) -> str:
        return f"""
Demo workspace {self.workspace_id}
  API key: {self.api_key}
  App id:  {self.app_id}

Call it with the official dashscope SDK (pip install dashscope):

import dashscope
from dashscope import Application
dashscope.base_http_api_url = "{url}"
r = Application.call(api_key="{self.api_key}", workspace="{self.workspace_id}",
                     app_id="{self.app_id}", prompt="你好，请介绍一下你自己")
print(r.output.text)

or with curl:

curl {url}/apps/{self.app_id}/completion -H "Authorization: Bearer {self.api_key}" -H "X-DashScope-WorkSpace: {self.workspace_id}" -H "Content-Type: application/json" -d '{{"input": {{"prompt": "Hello, who are you?"}}}}'
"""


def _demo_file(settings: Settings) -> Path:
    return settings.data_dir / "demo.json"


def _still_valid(db: Database, info: DemoInfo) -> bool:
    with db.read() as s:
        owner = ws_repo.key_owner(s, info.api_key)
        return (
            owner is not None
            and owner.workspace_id == info.workspace_id
            and app_repo.latest_published(s, info.workspace_id, info.app_id) is not None
        )


def ensure_demo(settings: Settings, db: Database, note: Callable[[str], None] = lambda _m: None) -> DemoInfo:
    path = _demo_file(settings)
    if path.exists():
        try:
            info = DemoInfo(**json.loads(path.read_text(encoding="utf-8")))
            if _still_valid(db, info):
                note("reusing the demo workspace, key and app")
                _prepare_model(settings, note)
                return info
        except (ValueError, TypeError):
            pass
    with db.write() as s:
        ws = ws_repo.find_workspace(s, DEMO_WORKSPACE) or ws_repo.create_workspace(s, DEMO_WORKSPACE)
        key = ws_repo.create_key(s, ws.id)
        app = app_repo.create_app(s, ws.id, dict(DEMO_SPEC))
        app_repo.publish(s, app)
        info = DemoInfo(workspace_id=ws.id, api_key=key, app_id=app.id)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(info.__dict__, f)
    note("created the demo workspace, key and app")
    _prepare_model(settings, note)
    return info


def _prepare_model(settings: Settings, note: Callable[[str], None]) -> None:
    """Join and verify the embedded weights now, so the first call does not wait for it."""
    cfg = settings.models.get(DEFAULT_MODEL)
    if cfg is None or cfg.provider != "llama-cpp" or cfg.options.get("model_path"):
        return
    from bailu.errors import ModelUnavailable
    from bailu.models import embedded

    if embedded.is_ready():
        return
    try:
        note("preparing the embedded model (once)…")
        embedded.ensure_model_file()
    except ModelUnavailable as exc:
        note(f"warning: {exc.message}")
