"""PostgreSQL for tests: a fresh database on the session's server (``postgres_server``)."""

from __future__ import annotations


def fresh_postgres_database(server_url: str) -> str:
    """A new, empty database on the test server; its URL."""
    import uuid

    import psycopg2
    import sqlalchemy as sa

    name = f"records_{uuid.uuid4().hex[:12]}"
    url = sa.engine.make_url(server_url)
    connection = psycopg2.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database
    )
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
    finally:
        connection.close()
    return str(url.set(database=name))
