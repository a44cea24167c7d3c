"""Alembic migrations of the gateway's tables (run by `init_gateway_db`; version table `gateway_alembic_version`)."""
