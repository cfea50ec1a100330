"""Runtimes: given an AppCall and a published app, yield events (bailu.events)."""
