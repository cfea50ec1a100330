"""Settings: one typed object built from the data directory, the TOML config and env.

Nothing reads configuration from globals; ``create_app(settings)`` and the CLI
receive a :class:`Settings`. Tests build their own.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bailu.errors import ConfigError

PROVIDERS = ("openai", "llama-cpp", "scripted")
DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class ModelConfig:
    """One entry of ``[models.NAME]``. ``name`` is what apps use and what usage reports."""

    name: str
    provider: str
    base_url: str | None = None
    model: str | None = None  # the name sent upstream; defaults to ``name``
    api_key: str | None = None
    timeout: float = 300.0
    connect_timeout: float = 10.0
    options: dict[str, Any] = field(default_factory=dict)  # provider-specific extras

    @property
    def upstream_model(self) -> str:
        return self.model or self.name


@dataclass(frozen=True)
class SessionSettings:
    ttl_seconds: int = 3600
    max_turns: int = 50


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    models: dict[str, ModelConfig]
    sessions: SessionSettings = SessionSettings()
    host: str = "127.0.0.1"
    port: int = 8080
    config_file: Path | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def default_data_dir() -> Path:
    return Path(os.environ.get("BAILU_DATA_DIR") or ".bailu")


def _model_config(name: str, raw: Any) -> ModelConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"[models.{name}] must be a table")
    raw = dict(raw)
    provider = raw.pop("provider", None)
    if provider not in PROVIDERS:
        raise ConfigError(f"[models.{name}] provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    api_key = raw.pop("api_key", None)
    api_key_env = raw.pop("api_key_env", None)
    if api_key is None and api_key_env:
        api_key = os.environ.get(str(api_key_env))
    base_url = raw.pop("base_url", None)
    if provider == "openai" and not base_url:
        raise ConfigError(f"[models.{name}] provider 'openai' needs base_url")
    try:
        timeout = float(raw.pop("timeout", 300.0))
        connect_timeout = float(raw.pop("connect_timeout", 10.0))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[models.{name}] timeout must be a number of seconds") from exc
    return ModelConfig(
        name=name,
        provider=provider,
        base_url=base_url,
        model=raw.pop("model", None),
        api_key=api_key,
        timeout=timeout,
        connect_timeout=connect_timeout,
        options=raw,
    )


def load_settings(
    data_dir: str | Path | None = None,
    config_file: str | Path | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
) -> Settings:
    """Build settings from ``--data-dir``/``BAILU_DATA_DIR``, ``--config``/``DIR/bailu.toml`` and env."""
    ddir = Path(data_dir) if data_dir else default_data_dir()
    cfg_path: Path | None = Path(config_file) if config_file else ddir / "bailu.toml"
    raw: dict[str, Any] = {}
    if cfg_path is not None and cfg_path.exists():
        try:
            raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{cfg_path}: {exc}") from exc
    elif config_file:
        raise ConfigError(f"config file {cfg_path} does not exist")
    else:
        cfg_path = None

    models: dict[str, ModelConfig] = {}
    for name, entry in (raw.get("models") or {}).items():
        models[name] = _model_config(name, entry)
    if DEFAULT_MODEL not in models:
        models[DEFAULT_MODEL] = ModelConfig(name=DEFAULT_MODEL, provider="llama-cpp")

    sess = raw.get("sessions") or {}
    if int(sess.get("ttl_seconds", 3600)) < 1 or int(sess.get("max_turns", 50)) < 1:
        raise ConfigError("[sessions] ttl_seconds and max_turns must be at least 1")
    server = raw.get("server") or {}
    db_url = os.environ.get("BAILU_DATABASE_URL") or raw.get("database_url") or f"sqlite:///{(ddir / 'bailu.db').resolve()}"
    return Settings(
        data_dir=ddir,
        database_url=normalize_database_url(db_url),
        models=models,
        sessions=SessionSettings(
            ttl_seconds=int(sess.get("ttl_seconds", 3600)),
            max_turns=int(sess.get("max_turns", 50)),
        ),
        host=host or server.get("host", "127.0.0.1"),
        port=int(port if port is not None else server.get("port", 8080)),
        config_file=cfg_path,
    )


def normalize_database_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (the driver we depend on), not psycopg2."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url
