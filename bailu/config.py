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


EMBEDDER_PROVIDERS = ("openai",)
RERANKER_PROVIDERS = ("rerank-api", "tei", "dashscope")


@dataclass(frozen=True)
class ServiceConfig:
    """One ``[embedders.NAME]`` or ``[rerankers.NAME]`` entry: a remote embedding or rerank endpoint."""

    name: str
    provider: str
    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    batch_size: int = 16  # embedders: texts per request
    dimensions: int | None = None  # embedders: sent as ``dimensions`` when set


@dataclass(frozen=True)
class KnowledgeSettings:
    """``[knowledge]``: the embedder and reranker new knowledge bases get, and the configured ones."""

    embedder: str | None = None  # None: all-MiniLM-L6-v2 when installed, else "none"
    reranker: str | None = None  # None: no reranking
    embedders: dict[str, ServiceConfig] = field(default_factory=dict)
    rerankers: dict[str, ServiceConfig] = field(default_factory=dict)


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
    knowledge: KnowledgeSettings = KnowledgeSettings()
    host: str = "127.0.0.1"
    port: int = 8080
    config_file: Path | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def default_data_dir() -> Path:
    return Path(os.environ.get("BAILU_DATA_DIR") or ".bailu")


def _table(where: str, raw: Any, providers: tuple[str, ...]) -> tuple[dict[str, Any], str, str | None]:
    """A provider table's remaining keys, its provider (checked) and its key: ``api_key``, else the
    variable ``api_key_env`` names (None when unset: the endpoint then answers 401, named)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    raw = dict(raw)
    provider = raw.pop("provider", None)
    if provider not in providers:
        raise ConfigError(f"{where} provider must be one of {', '.join(providers)}, got {provider!r}")
    api_key = raw.pop("api_key", None)
    api_key_env = raw.pop("api_key_env", None)
    if api_key is None and api_key_env:
        api_key = os.environ.get(str(api_key_env))
    return raw, provider, api_key


def _model_config(name: str, raw: Any) -> ModelConfig:
    raw, provider, api_key = _table(f"[models.{name}]", raw, PROVIDERS)
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


def _service_config(section: str, name: str, raw: Any, providers: tuple[str, ...]) -> ServiceConfig:
    where = f"[{section}.{name}]"
    raw, provider, api_key = _table(where, raw, providers)
    base_url, model = raw.pop("base_url", None), raw.pop("model", None)
    if not base_url or not model:
        raise ConfigError(f"{where} needs base_url and model")
    try:
        timeout = float(raw.pop("timeout", 60.0))
        batch_size = int(raw.pop("batch_size", 16))
        dimensions = raw.pop("dimensions", None)
        dimensions = int(dimensions) if dimensions is not None else None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where} timeout, batch_size and dimensions must be numbers") from exc
    if timeout <= 0 or batch_size < 1 or (dimensions is not None and dimensions < 1):
        raise ConfigError(f"{where} timeout, batch_size and dimensions must be positive")
    if raw:
        raise ConfigError(f"{where} has unknown keys: {', '.join(sorted(raw))}")
    return ServiceConfig(name=name, provider=provider, base_url=str(base_url), model=str(model), api_key=api_key,
                         timeout=timeout, batch_size=batch_size, dimensions=dimensions)


def _knowledge_settings(raw: dict[str, Any]) -> KnowledgeSettings:
    from bailu.knowledge.embedders import BUILTIN_EMBEDDERS  # names reserved by the built-in embedders

    for table in ("embedders", "rerankers", "knowledge"):
        if not isinstance(raw.get(table) or {}, dict):
            raise ConfigError(f"[{table}] must be a table")
    embedders = {n: _service_config("embedders", n, e, EMBEDDER_PROVIDERS) for n, e in (raw.get("embedders") or {}).items()}
    rerankers = {n: _service_config("rerankers", n, e, RERANKER_PROVIDERS) for n, e in (raw.get("rerankers") or {}).items()}
    for name in embedders:
        if name in BUILTIN_EMBEDDERS:
            raise ConfigError(f"[embedders.{name}]: {name!r} is the name of a built-in embedder; choose another")
    section = raw.get("knowledge") or {}
    unknown = set(section) - {"embedder", "reranker"}
    if unknown:
        raise ConfigError(f"[knowledge] has unknown keys: {', '.join(sorted(unknown))}")
    embedder, reranker = section.get("embedder"), section.get("reranker")
    if reranker == "none":
        reranker = None
    if embedder is not None and embedder not in embedders and embedder not in BUILTIN_EMBEDDERS:
        raise ConfigError(f"[knowledge] embedder {embedder!r} is neither built in ({', '.join(BUILTIN_EMBEDDERS)}) nor configured in [embedders]")
    if reranker is not None and reranker not in rerankers:
        raise ConfigError(f"[knowledge] reranker {reranker!r} is not configured in [rerankers]")
    return KnowledgeSettings(embedder=embedder, reranker=reranker, embedders=embedders, rerankers=rerankers)


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
        knowledge=_knowledge_settings(raw),
        host=host or server.get("host", "127.0.0.1"),
        port=int(port if port is not None else server.get("port", 8080)),
        config_file=cfg_path,
    )


def normalize_database_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (the driver we depend on), not psycopg2."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url
