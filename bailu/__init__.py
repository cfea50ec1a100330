"""bailu: a self-hosted Bailian application platform speaking the DashScope application API."""

__version__ = "0.1.0"
