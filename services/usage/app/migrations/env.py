"""Alembic environment: migrations run inside the service's lifespan on the connection it hands
over (``config.attributes["connection"]``), so there is no second engine and no URL here.

By hand, from the service directory: ``python -m app.migrate`` (upgrade to head).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from app.models import Base


def run_migrations_online() -> None:
    connection: Connection = context.config.attributes["connection"]
    schema = context.config.attributes.get("schema")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table_schema=schema,
        include_schemas=bool(schema),
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():  # pragma: no cover - offline SQL generation is not supported
    raise SystemExit("offline migrations are not supported; run against a database")
run_migrations_online()
