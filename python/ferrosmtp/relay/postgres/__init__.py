"""The shared queue: PostgreSQL, for several relay nodes (psycopg 3, async, with its pool).

Any node delivers any message, so a node that dies strands nothing: its leases expire and
the others take its messages over. One job a module:

- ``schema``: the tables and their versions (``relay_migrations`` and ``MIGRATIONS``);
- ``link``: the connection: the pool, group commit, LISTEN, losing the database and
  finding it again;
- ``queue``: ``PostgresQueue``, the queue interface on top.

**Group commit**: puts, records, renewals and releases wait in a list; one task runs
whatever is waiting as one transaction (pipelined: one round trip) and commits once, so
concurrent sessions share a commit and its WAL flush. A put returns, and the client gets
its 250, only after that commit.

**Bodies** are rows of ``relay_bodies`` of up to ``chunk_size`` octets. A body that fits
in one chunk stays in memory until its put and goes into the put's transaction. A bigger
one is written a chunk at a time while it arrives, each chunk in a short transaction with
``synchronous_commit = off`` (no flush of its own): the put's synchronous commit flushes
the WAL up to itself, and so every chunk written before it. Memory per message is one
chunk whatever its size. Why chunk rows rather than COPY or large objects: both of those
keep a transaction (and a pooled connection) open for as long as the client sends, which
rules out sharing commits and ties the pool to slow clients; chunk rows need neither, and
the put checks in the database that every chunk is there (a restart between the chunks
and the put cannot give a 250 for a body with holes).

**Leases**: ``lease`` takes due messages with ``SELECT ... FOR UPDATE SKIP LOCKED`` (nodes
never wait for each other nor take the same message), stamps them with an expiry from the
database's clock and this process's owner name, and ``renew`` extends them while they are
delivered. Every attempt is kept in ``relay_attempts`` (which node, which recipient, what
happened). New mail is announced with ``NOTIFY``: a node ``LISTEN``\\ s and its scheduler
wakes at once instead of polling quickly. Per-destination slots (``take_slots``) live in
``relay_slots`` so the concurrency limit of a next hop holds across nodes.

**A lost database**: new mail is answered ``451 4.3.0`` (the put raises QueueError) while a
task reconnects with backoff; a put whose commit was under way when the connection broke is
checked once the database is back: 250 if the row is there, 451 if not; an in-doubt row
that was answered 451 is deleted when the database answers again, so the client's retry
does not make a duplicate. Records wait for the database and are then written (a message
delivered meanwhile is not delivered again); the leases this node holds are renewed as soon
as it is back.
"""

from __future__ import annotations

from ferrosmtp.relay.postgres.queue import PostgresQueue
from ferrosmtp.relay.postgres.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresQueue"]
