"""The users' shape of a PostgreSQL database for the dump-layout and dedup tests: quoted
CamelCase tables, an enum column, a foreign key, and an app role that owns the objects."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

FILL = """
SELECT setseed({seed});
INSERT INTO "Customers" ("FullName", "Email")
  SELECT 'Customer ' || g, 'c' || g || '@example.com' FROM generate_series({first}, {last}) g;
INSERT INTO "OrderLines" ("CustomerId", "State", "Note", "Amount")
  SELECT {first} + (random() * ({last} - {first}))::int,
         (ARRAY['new', 'paid', 'shipped']::"OrderState"[])[1 + (g % 3)],
         md5(random()::text) || ' ' || md5(random()::text),
         round((random() * 1000)::numeric, 2)
  FROM generate_series(1, 4 * ({last} - {first} + 1)) g;
"""


def users_shape_database(server: Any, dbname: str, customers: int = 4000) -> str:
    """Fill ``dbname`` (on a ``PgServer``) with the users' shape, owned by a new role
    ``app_<hex>``; ``customers`` customers and 4 order lines each (4000: a ~1.8 MiB dump).
    Returns the role's name."""
    role = f"app_{uuid.uuid4().hex[:8]}"
    server.psql(
        dbname,
        f"""
        CREATE ROLE {role} LOGIN;
        CREATE TYPE "OrderState" AS ENUM ('new', 'paid', 'shipped');
        CREATE TABLE "Customers" ("Id" serial PRIMARY KEY, "FullName" text, "Email" text);
        CREATE TABLE "OrderLines" (
            "Id" bigserial PRIMARY KEY,
            "CustomerId" int REFERENCES "Customers",
            "State" "OrderState" NOT NULL,
            "Note" text,
            "Amount" numeric(10, 2));
        CREATE INDEX "OrderLines_State" ON "OrderLines" ("State");
        ALTER TYPE "OrderState" OWNER TO {role};
        ALTER TABLE "Customers" OWNER TO {role};
        ALTER TABLE "OrderLines" OWNER TO {role};
        """,
    )
    server.psql(dbname, FILL.format(seed=0.3, first=1, last=customers))
    return role


def dump(server: Any, dbname: str, *extra: str) -> bytes:
    """``pg_dump -Fc -Z0`` of ``dbname`` to a pipe (as the backup runs it), as bytes."""
    return subprocess.run(
        [str(server.bin_dir / "pg_dump"), "-Fc", "-Z0", *extra, "-d", server.url(dbname)],
        check=True,
        capture_output=True,
    ).stdout
