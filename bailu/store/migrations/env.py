"""Alembic environment: runs on the connection bailu hands it (``Database.migrate``)."""

from alembic import context

from bailu.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - bailu always passes a connection
    raise RuntimeError("bailu migrations run through bailu.store.db.Database.migrate()")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
