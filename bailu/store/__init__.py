"""Storage: SQLAlchemy 2 tables, Alembic migrations and plain repository functions."""
