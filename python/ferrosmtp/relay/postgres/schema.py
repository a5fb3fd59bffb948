"""The queue's tables in PostgreSQL, and their versions.

``relay_migrations`` lists the steps applied to a database; ``MIGRATIONS`` the steps this
ferrosmtp knows. ``migrate`` applies the missing ones in order, in one transaction, under
an advisory lock (nodes starting together do not race), and refuses a database whose
schema is newer than this ferrosmtp. A later version appends a step; a released step is
never changed.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from ferrosmtp.relay.queue import QueueError

__all__ = ["MIGRATIONS", "NOW", "SCHEMA_VERSION", "migrate"]

log: logging.Logger = logging.getLogger("ferrosmtp.relay.queue")

NOW = "extract(epoch from now())"  # the database's clock: leases do not depend on the nodes'
MIGRATION_LOCK = 0x6665_7272_6F73  # pg_advisory_xact_lock key ("ferros")

# (version, what it does, statements).
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "messages, body chunks, attempts, destination slots",
        (
            """CREATE TABLE relay_messages (
                id text PRIMARY KEY,
                sender text NOT NULL,
                envelope text NOT NULL,
                size bigint NOT NULL,
                chunks integer NOT NULL,
                arrival double precision NOT NULL,
                attempts integer NOT NULL DEFAULT 0,
                next_attempt double precision NOT NULL,
                lease_until double precision NOT NULL DEFAULT 0,
                lease_owner text,
                last_error text,
                corrupt text
            )""",
            "CREATE INDEX relay_messages_due ON relay_messages (next_attempt)"
            " WHERE corrupt IS NULL",
            """CREATE TABLE relay_bodies (
                message_id text NOT NULL,
                seq integer NOT NULL,
                data bytea NOT NULL,
                written double precision NOT NULL DEFAULT extract(epoch from now()),
                PRIMARY KEY (message_id, seq)
            )""",
            # Mail compresses poorly and pglz costs the database CPU: store as is.
            "ALTER TABLE relay_bodies ALTER COLUMN data SET STORAGE EXTERNAL",
            """CREATE TABLE relay_attempts (
                message_id text NOT NULL,
                at double precision NOT NULL DEFAULT extract(epoch from now()),
                node text NOT NULL,
                recipient text NOT NULL,
                outcome text NOT NULL,
                status text,
                diagnostic text,
                remote_mta text
            )""",
            "CREATE INDEX relay_attempts_message ON relay_attempts (message_id)",
            "CREATE INDEX relay_attempts_at ON relay_attempts USING brin (at)",
            """CREATE TABLE relay_slots (
                destination text NOT NULL,
                slot integer NOT NULL,
                owner text,
                lease_until double precision NOT NULL DEFAULT 0,
                PRIMARY KEY (destination, slot)
            )""",
            """CREATE FUNCTION relay_check_body(message text, expected integer)
            RETURNS void LANGUAGE plpgsql AS $$
            DECLARE
                stored integer;
            BEGIN
                SELECT count(*) INTO stored FROM relay_bodies WHERE message_id = message;
                IF stored <> expected THEN
                    RAISE EXCEPTION 'message %: % body chunk(s) stored, % expected',
                        message, stored, expected USING ERRCODE = 'data_corrupted';
                END IF;
            END $$""",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


async def migrate(conn: psycopg.AsyncConnection[Any]) -> None:
    """Bring the schema of ``conn``'s database (its search_path) to ``SCHEMA_VERSION``."""
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS relay_migrations (version integer PRIMARY KEY,"
                " description text NOT NULL, applied timestamptz NOT NULL DEFAULT now())"
            )
            current = await version(conn)
            if current > SCHEMA_VERSION:
                raise QueueError(
                    f"the queue's schema is version {current}; this ferrosmtp knows up to"
                    f" {SCHEMA_VERSION}: upgrade ferrosmtp"
                )
            for step, description, statements in MIGRATIONS:
                if step <= current:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO relay_migrations (version, description) VALUES (%s, %s)",
                    (step, description),
                )
                log.info("queue schema: applied step %d (%s)", step, description)
    except psycopg.Error as error:
        raise QueueError(f"cannot set up the queue's schema: {error}") from error


async def version(conn: psycopg.AsyncConnection[Any]) -> int:
    """The highest step applied (0 before the first)."""
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM relay_migrations")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
