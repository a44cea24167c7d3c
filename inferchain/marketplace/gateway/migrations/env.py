"""Alembic environment of the gateway's tables: runs on the connection `init_gateway_db` hands over, and keeps
its own version table so it never touches the market book's tables on the same database.

To add a revision: `alembic -x url=sqlite:///gw.sqlite revision -m "what" --autogenerate` with
`script_location` pointing here, then read and edit the generated file.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine

from inferchain.marketplace.gateway.db import VERSION_TABLE, GatewayBase

config = context.config


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=GatewayBase.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # the alembic command line: -x url=...
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database as: alembic -x url=<SQLAlchemy URL> ...")
    with create_engine(url).begin() as conn:
        _run(conn)
