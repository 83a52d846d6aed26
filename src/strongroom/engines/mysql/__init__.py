"""The MySQL/MariaDB engine, one module per job (each imports only those listed before it):

``tools``       client tools (found, versioned, fed a stream), error helpers, names
``connection``  the URL, connections, the option file, tool lookup (``MysqlConnection``)
``stats``       row counts and checksums of tables
``restore``     a dump fed through the client; creating, inspecting, dropping databases
``dump``        the dump, with statistics from its own snapshot
``swap``        moving tables and objects between databases (safe restore)
``engine``      ``MysqlEngine``, the ``Engine`` protocol on top of the above
``tables``      restoring selected tables of a dump
"""

from __future__ import annotations

from strongroom.engines.mysql.connection import ConnParams, MysqlConnection, parse_url
from strongroom.engines.mysql.engine import MysqlEngine

__all__ = ["ConnParams", "MysqlConnection", "MysqlEngine", "parse_url"]
