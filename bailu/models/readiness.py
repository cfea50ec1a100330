"""Whether each configured model can answer now (``bailu models``)."""

from __future__ import annotations

import httpx

from bailu.config import ModelConfig
from bailu.models import embedded
from bailu.models.llama_cpp import llama_cpp_installed


def readiness(config: ModelConfig, *, timeout: float = 2.0) -> tuple[bool, str]:
    """``(ready, detail)``; probes an ``openai`` upstream with ``GET /models``."""
    if config.provider == "scripted":
        return True, "scripted replies"
    if config.provider == "llama-cpp":
        if not llama_cpp_installed():
            return False, f"llama-cpp-python not installed: {embedded.INSTALL_HINT}"
        path = config.options.get("model_path")
        if path:
            from pathlib import Path

            return (True, str(path)) if Path(path).is_file() else (False, f"no model file at {path}")
        if embedded.is_ready():
            return True, f"embedded {embedded.MODEL_NAME}"
        try:
            embedded.locate_parts()
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return False, str(exc)
        return True, f"embedded {embedded.MODEL_NAME} (joined on first use)"
    url = (config.base_url or "").rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    try:
        resp = httpx.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return False, f"{config.base_url} unreachable: {type(exc).__name__}"
    if resp.status_code >= 400:
        return False, f"{config.base_url} answered HTTP {resp.status_code}"
    return True, f"{config.base_url} ({config.upstream_model})"
