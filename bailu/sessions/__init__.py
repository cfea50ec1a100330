"""Server-stored multi-turn history (``session_id``)."""

from bailu.sessions.store import SessionStore

__all__ = ["SessionStore"]
