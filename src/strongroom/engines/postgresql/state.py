"""What a PostgreSQL dump leaves out, recorded beside it: the database object and the roles.

``pg_dump`` without ``--create`` (the only form that can be restored under another name,
which a staged restore needs) drops everything attached to the database object itself: its
owner, ACL (``REVOKE CONNECT … FROM PUBLIC``), settings (``ALTER DATABASE … SET``, also per
role: ``ALTER ROLE … IN DATABASE … SET``), comment, connection limit, encoding and locale.
Roles are cluster objects and are never in a database dump, although its objects name them
as owners, grantees and policy roles. Both are read from the catalogs inside the dump's
snapshot (:func:`capture_state`) and stored in the backup's encrypted private section
(:meth:`DatabaseState.to_dict`); :mod:`strongroom.engines.postgresql.fidelity` puts them back.

Role passwords are never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

STATE_FORMAT = 1
PUBLIC = "PUBLIC"


@dataclass(frozen=True)
class RoleRecord:
    """A role the backup's objects refer to (owner, grantee, policy role, setting's role)."""

    name: str
    owns_objects: bool
    inherit: bool = True
    login: bool = False
    superuser: bool = False
    member_of: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "owns_objects": self.owns_objects,
            "inherit": self.inherit,
            "login": self.login,
            "superuser": self.superuser,
            "member_of": list(self.member_of),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoleRecord:
        return cls(
            name=str(data["name"]),
            owns_objects=bool(data.get("owns_objects", False)),
            inherit=bool(data.get("inherit", True)),
            login=bool(data.get("login", False)),
            superuser=bool(data.get("superuser", False)),
            member_of=tuple(str(m) for m in data.get("member_of", ())),
        )


@dataclass(frozen=True)
class Grant:
    """One privilege on the database: ``CONNECT`` to ``app``; grantee ``PUBLIC`` for all."""

    grantee: str
    privilege: str  # CONNECT, CREATE, TEMPORARY
    grantable: bool = False
    grantor: str = ""  # who granted it ("" in backups that did not record it: the owner)


@dataclass(frozen=True)
class RoleSetting:
    """``ALTER DATABASE … SET`` (role ``None``) or ``ALTER ROLE r IN DATABASE … SET``."""

    role: str | None
    settings: tuple[str, ...]  # "name=value" as pg_db_role_setting stores them


@dataclass(frozen=True)
class Extension:
    name: str
    version: str
    schema: str


@dataclass(frozen=True)
class DatabaseState:
    """The database object and the roles a PostgreSQL backup refers to.

    ``acl`` is ``None`` when the database has its default privileges (``datacl`` null)."""

    owner: str
    encoding: str
    collate: str
    ctype: str
    locale_provider: str | None = None  # "libc" or "icu" (PostgreSQL 15+)
    icu_locale: str | None = None
    connection_limit: int = -1
    comment: str | None = None
    acl: tuple[Grant, ...] | None = None
    settings: tuple[RoleSetting, ...] = ()
    roles: tuple[RoleRecord, ...] = ()
    extensions: tuple[Extension, ...] = ()
    event_triggers: tuple[str, ...] = ()

    def role(self, name: str) -> RoleRecord | None:
        return next((r for r in self.roles if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "owner": self.owner,
            "encoding": self.encoding,
            "collate": self.collate,
            "ctype": self.ctype,
            "locale_provider": self.locale_provider,
            "icu_locale": self.icu_locale,
            "connection_limit": self.connection_limit,
            "comment": self.comment,
            "acl": None
            if self.acl is None
            else [[g.grantee, g.privilege, g.grantable, g.grantor] for g in self.acl],
            "settings": [{"role": s.role, "settings": list(s.settings)} for s in self.settings],
            "roles": [r.to_dict() for r in self.roles],
            "extensions": [[e.name, e.version, e.schema] for e in self.extensions],
            "event_triggers": list(self.event_triggers),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatabaseState:
        acl = data.get("acl")
        return cls(
            owner=str(data["owner"]),
            encoding=str(data["encoding"]),
            collate=str(data["collate"]),
            ctype=str(data["ctype"]),
            locale_provider=data.get("locale_provider"),
            icu_locale=data.get("icu_locale"),
            connection_limit=int(data.get("connection_limit", -1)),
            comment=data.get("comment"),
            acl=None
            if acl is None
            else tuple(
                Grant(str(g[0]), str(g[1]), bool(g[2]), str(g[3]) if len(g) > 3 else "")
                for g in acl
            ),
            settings=tuple(
                RoleSetting(s.get("role"), tuple(str(v) for v in s.get("settings", ())))
                for s in data.get("settings", ())
            ),
            roles=tuple(RoleRecord.from_dict(r) for r in data.get("roles", ())),
            extensions=tuple(
                Extension(str(e[0]), str(e[1]), str(e[2])) for e in data.get("extensions", ())
            ),
            event_triggers=tuple(str(t) for t in data.get("event_triggers", ())),
        )


_DATABASE_SQL = """
    SELECT pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate,
           d.datctype, d.datconnlimit, shobj_description(d.oid, 'pg_database'),
           d.datacl IS NULL, {provider}
    FROM pg_database d WHERE d.datname = current_database()
"""

_ACL_SQL = """
    SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
           a.privilege_type, a.is_grantable, pg_get_userbyid(a.grantor)
    FROM pg_database d, aclexplode(d.datacl) a
    WHERE d.datname = current_database()
    ORDER BY 1, 2
"""

_SETTINGS_SQL = """
    SELECT r.rolname, s.setconfig
    FROM pg_db_role_setting s
    JOIN pg_database d ON d.oid = s.setdatabase AND d.datname = current_database()
    LEFT JOIN pg_roles r ON r.oid = s.setrole
    ORDER BY r.rolname NULLS FIRST
"""

# Roles owning something in this database, or named by its ACLs, policies and settings.
# pg_shdepend records all of these except dependencies on pinned roles (the bootstrap
# superuser, predefined pg_* roles), which the owner and ACL columns of the objects
# pg_dump writes out also give.
_ROLES_SQL = """
    WITH db AS (SELECT oid, datdba, datacl FROM pg_database WHERE datname = current_database()),
    ns AS (SELECT oid FROM pg_namespace
           WHERE nspname NOT IN ('pg_catalog', 'information_schema')
             AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp\\_%'),
    -- Objects pg_dump does not write out on their own: members of extensions ('e') and
    -- objects made with another (array and multirange types, range constructors: 'i').
    hidden AS (SELECT classid, objid FROM pg_depend WHERE deptype IN ('e', 'i')),
    owners(roleid) AS (
        SELECT datdba FROM db
        UNION SELECT sd.refobjid FROM pg_shdepend sd, db
              WHERE sd.dbid = db.oid AND sd.refclassid = 'pg_authid'::regclass
                AND sd.deptype = 'o'
                AND NOT EXISTS (SELECT 1 FROM hidden h
                                WHERE h.classid = sd.classid AND h.objid = sd.objid)
        UNION SELECT nspowner FROM pg_namespace WHERE oid IN (SELECT oid FROM ns)
        UNION SELECT relowner FROM pg_class c WHERE relnamespace IN (SELECT oid FROM ns)
              AND NOT EXISTS (SELECT 1 FROM hidden h
                              WHERE h.classid = 'pg_class'::regclass AND h.objid = c.oid)
        UNION SELECT typowner FROM pg_type t WHERE typnamespace IN (SELECT oid FROM ns)
              AND NOT EXISTS (SELECT 1 FROM hidden h
                              WHERE h.classid = 'pg_type'::regclass AND h.objid = t.oid)
        UNION SELECT proowner FROM pg_proc p WHERE pronamespace IN (SELECT oid FROM ns)
              AND NOT EXISTS (SELECT 1 FROM hidden h
                              WHERE h.classid = 'pg_proc'::regclass AND h.objid = p.oid)
        UNION SELECT lomowner FROM pg_largeobject_metadata
    ),
    others(roleid) AS (
        SELECT (aclexplode(datacl)).grantee FROM db
        UNION SELECT setrole FROM pg_db_role_setting, db WHERE setdatabase = db.oid
        UNION SELECT sd.refobjid FROM pg_shdepend sd, db
              WHERE sd.dbid = db.oid AND sd.refclassid = 'pg_authid'::regclass
                AND NOT EXISTS (SELECT 1 FROM hidden h
                                WHERE h.classid = sd.classid AND h.objid = sd.objid)
        UNION SELECT (aclexplode(relacl)).grantee FROM pg_class
              WHERE relnamespace IN (SELECT oid FROM ns)
        UNION SELECT (aclexplode(nspacl)).grantee FROM pg_namespace
              WHERE oid IN (SELECT oid FROM ns)
        UNION SELECT (aclexplode(lomacl)).grantee FROM pg_largeobject_metadata
        UNION SELECT defaclrole FROM pg_default_acl
        UNION SELECT unnest(polroles) FROM pg_policy
    )
    SELECT r.rolname, r.oid IN (SELECT roleid FROM owners), r.rolinherit, r.rolcanlogin,
           r.rolsuper,
           ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                 WHERE m.member = r.oid ORDER BY 1)
    FROM pg_roles r
    WHERE r.oid IN (SELECT roleid FROM owners UNION SELECT roleid FROM others)
    ORDER BY 1
"""

_EXTENSIONS_SQL = """
    SELECT e.extname, e.extversion, n.nspname
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname <> 'plpgsql'
    ORDER BY 1
"""


def _provider_columns(server_version: int) -> str:
    if server_version >= 170000:
        return "d.datlocprovider::text, d.datlocale"
    if server_version >= 150000:
        return "d.datlocprovider::text, d.daticulocale"
    return "NULL::text, NULL::text"


def capture_state(conn: psycopg.Connection[Any]) -> DatabaseState:
    """Read the database object, its roles, extensions and event triggers on ``conn``
    (inside the caller's transaction: the dump's snapshot). Raises ``psycopg.Error``."""
    version = conn.info.server_version
    row = conn.execute(_DATABASE_SQL.format(provider=_provider_columns(version))).fetchone()
    if row is None:  # pragma: no cover - current_database() always exists
        raise psycopg.DataError("the current database is not in pg_database")
    owner, encoding, collate, ctype, connlimit, comment, default_acl, provider, icu = row
    acl: tuple[Grant, ...] | None = None
    if not default_acl:
        acl = tuple(
            Grant(str(g), str(p), bool(o), str(by))
            for g, p, o, by in conn.execute(_ACL_SQL).fetchall()
        )
    settings = tuple(
        RoleSetting(role, tuple(config or ()))
        for role, config in conn.execute(_SETTINGS_SQL).fetchall()
    )
    roles = tuple(
        RoleRecord(
            name=str(name),
            owns_objects=bool(owns),
            inherit=bool(inherit),
            login=bool(login),
            superuser=bool(superuser),
            member_of=tuple(member_of or ()),
        )
        for name, owns, inherit, login, superuser, member_of in conn.execute(_ROLES_SQL).fetchall()
    )
    extensions = tuple(
        Extension(str(n), str(v), str(s)) for n, v, s in conn.execute(_EXTENSIONS_SQL).fetchall()
    )
    triggers = tuple(
        str(r[0])
        for r in conn.execute("SELECT evtname FROM pg_event_trigger ORDER BY 1").fetchall()
    )
    providers = {"c": "libc", "i": "icu", "b": "builtin"}
    return DatabaseState(
        owner=str(owner),
        encoding=str(encoding),
        collate=str(collate),
        ctype=str(ctype),
        locale_provider=providers.get(str(provider)) if provider else None,
        icu_locale=str(icu) if icu else None,
        connection_limit=int(connlimit),
        comment=str(comment) if comment is not None else None,
        acl=acl,
        settings=settings,
        roles=roles,
        extensions=extensions,
        event_triggers=triggers,
    )


@dataclass(frozen=True)
class RestoreChecks:
    """What a restore of this backup onto this server needs that the server lacks.

    Found before anything is created; the plan shows it and the restore refuses until the
    user chooses what to do (see :class:`strongroom.engines.base.RestoreOptions`)."""

    missing_roles: tuple[str, ...] = ()  # named by the backup, absent on the server
    unassignable_owners: tuple[str, ...] = ()  # exist, but the restoring role cannot own as
    superuser_objects: tuple[str, ...] = ()  # "event trigger x", "extension plperlu"
    unavailable_extensions: tuple[str, ...] = ()  # not installable on the server at all
    restoring_role: str = ""
    restoring_superuser: bool = False
    can_create_roles: bool = False
