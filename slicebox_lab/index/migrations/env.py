"""Alembic environment of the index, run by :func:`slicebox_lab.index.database.upgrade`.

The caller passes an open connection in ``config.attributes["connection"]`` (no ``alembic.ini``
at runtime).  For the alembic command line (writing a new revision), use an ini file with
``script_location = slicebox_lab/index/migrations`` and ``sqlalchemy.url = <a database>``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from slicebox_lab.index.database import create_engine
from slicebox_lab.index.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: later migrations use batch mode there
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url, or pass a connection in config.attributes")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
