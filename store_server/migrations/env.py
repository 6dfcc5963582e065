"""Alembic environment: runs migrations against the URL the caller configured."""

from __future__ import annotations

from alembic import context

import analytics.models  # noqa: F401 - registers report tables on Base.metadata
import store_server.optin.models  # noqa: F401 - registers its tables on Base.metadata
from store_server.db import make_engine
from store_server.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """Emit SQL without a database connection."""
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations on a live connection (batch mode lets SQLite alter tables)."""
    connectable = make_engine(config.get_main_option("sqlalchemy.url"), pooled=False)
    with connectable.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
