"""Alembic environment: runs the migrations on the connection that ``instructrl.web.migrate`` hands over."""

from alembic import context

from instructrl.web.models import Base

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER most things, so later migrations rebuild tables in batches there
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
