"""Identifier formats, in the shapes Bailian uses."""

from __future__ import annotations

import secrets
import string
import uuid

_ALNUM = string.ascii_lowercase + string.digits


def workspace_id() -> str:
    """``llm-`` + 16 lowercase alphanumerics, like Bailian workspace ids."""
    return "llm-" + "".join(secrets.choice(_ALNUM) for _ in range(16))


def app_id() -> str:
    """32 hex digits, like Bailian app ids."""
    return uuid.uuid4().hex


def session_id() -> str:
    return uuid.uuid4().hex


def request_id() -> str:
    return str(uuid.uuid4())


def api_key() -> str:
    """``sk-`` + 32 hex digits (128 bits of entropy)."""
    return "sk-" + secrets.token_hex(16)
