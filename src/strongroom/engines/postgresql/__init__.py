"""The PostgreSQL engine, one module per job.

``connection`` (URL, connections, client tools), ``dump`` (pg_dump on a snapshot shared with
the row counts), ``stats`` (portable table checksums), ``state`` (the database object and
roles a dump leaves out, recorded), ``fidelity`` (checks before a restore, roles, the
database object put back, pg_restore's errors judged), ``restore`` (pg_restore runs),
``swap`` (the staged database into the target's place), ``toc`` and ``tables`` (one table),
``engine`` (the ``Engine`` protocol, tying them together).
"""

from strongroom.engines.postgresql.engine import DUMP_FORMAT, KIND, PostgresEngine

__all__ = ["DUMP_FORMAT", "KIND", "PostgresEngine"]
