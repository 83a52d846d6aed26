"""Database URLs as frameworks and hosts write them (issue 16, README "Database URLs"):
parsed once into a ``DatabaseUrl``; pure parsing, no server."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict

from strongroom.engines import open_engine
from strongroom.engines.mysql.connection import MysqlConnection, conn_params, tls_options
from strongroom.engines.postgresql.connection import PostgresServer
from strongroom.engines.url_params import POOLER_ENV
from strongroom.engines.urls import (
    DatabaseUrl,
    EngineKind,
    engine_kind,
    parse_database_url,
    sqlite_path,
)
from strongroom.errors import UnsupportedDatabaseUrl
from strongroom.redaction import Secret, redact_text

PG, MY, LITE = EngineKind.POSTGRESQL, EngineKind.MYSQL, EngineKind.SQLITE
RAW_AT = "Secr@tPart2@x:y/z#q?%41"

NASTY = [
    RAW_AT,
    "Secr@tPart2",
    "p@ss:w/rd%",
    'it\'s "quoted"',
    "with space s",
    "ünïcödé€中",
    "100%",
    "***",
    "a",
    "percent",
    "#?/:@",
    "%41%42",
]


def _pw(url: DatabaseUrl) -> str | None:
    return url.password.reveal() if url.password is not None else None


# --- the table -------------------------------------------------------------------
def test_prisma_postgresql_schema_is_dropped_and_explained(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="strongroom.engines.urls"):
        url = parse_database_url("postgresql://u:p@host:5432/shop?schema=public")
    assert (url.kind, url.host, url.port, url.user, url.database) == (PG, "host", 5432, "u", "shop")
    assert url.params == {}
    assert "schema=public" in caplog.text and "whole database" in caplog.text
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)


def test_prisma_pool_parameters_are_dropped_with_an_info_line(caplog: pytest.LogCaptureFixture):
    text = "postgresql://u:p@h/shop?schema=s&connection_limit=5&pool_timeout=10&sslaccept=strict"
    with caplog.at_level(logging.INFO, logger="strongroom.engines.urls"):
        url = parse_database_url(text)
    assert url.params == {}
    assert "connection_limit=5" in caplog.text and "pool_timeout=10" in caplog.text
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)
    # libpq accepts what is left
    assert "schema" not in PostgresServer(url).conninfo(with_password=True)


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://u:p@host:5432/shop?schema=public&connection_limit=5&pgbouncer=true",
        "postgresql://u:p@host:6543/shop",
        "postgres://u:p@host:6543/shop?sslmode=require",
    ],
)
def test_transaction_poolers_are_refused_naming_the_direct_connection(text, monkeypatch):
    monkeypatch.delenv(POOLER_ENV, raising=False)
    with pytest.raises(UnsupportedDatabaseUrl) as info:
        parse_database_url(text)
    message = str(info.value)
    assert "pooler" in message and "pg_dump" in message and "host:5432" in message
    assert "strongroom_allow_pooler=1" in message and POOLER_ENV in message
    assert "\n" not in message and ":p@" not in message


def test_supabase_pooler_names_the_projects_direct_host(monkeypatch):
    monkeypatch.delenv(POOLER_ENV, raising=False)
    text = (
        "postgresql://postgres.abcdefghij:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"
    )
    with pytest.raises(UnsupportedDatabaseUrl, match=r"db\.abcdefghij\.supabase\.co:5432"):
        parse_database_url(text)
    # the session pooler (port 5432) runs pg_dump fine
    session = text.replace(":6543/", ":5432/")
    assert parse_database_url(session).port == 5432


def test_the_pooler_refusal_can_be_overridden(monkeypatch):
    monkeypatch.delenv(POOLER_ENV, raising=False)
    url = parse_database_url("postgresql://u:p@h:6543/db?pgbouncer=true&strongroom_allow_pooler=1")
    assert url.port == 6543 and "strongroom_allow_pooler" not in url.params
    monkeypatch.setenv(POOLER_ENV, "1")
    assert parse_database_url("postgresql://u:p@h:6543/db").port == 6543


@pytest.mark.parametrize(
    "scheme",
    ["postgresql+psycopg2", "postgresql+psycopg", "postgresql+asyncpg", "postgresql+pg8000"],
)
def test_sqlalchemy_postgresql_dialects(scheme):
    url = parse_database_url(f"{scheme}://app:pw@db.example:5433/shop")
    assert (url.kind, url.host, url.port, url.database, _pw(url)) == (
        PG,
        "db.example",
        5433,
        "shop",
        "pw",
    )
    assert url.redacted() == f"{scheme}://app:***@db.example:5433/shop"
    assert engine_kind(f"{scheme}://x/y") is PG


@pytest.mark.parametrize(
    ("text", "password", "host"),
    [
        ("postgresql://app:Secr@tPart2@host/db", "Secr@tPart2", "host"),
        (f"postgresql://app:{RAW_AT}@db.example:5432/db", RAW_AT, "db.example"),
        ("postgresql://app:p@ss:w/rd%@h/db", "p@ss:w/rd%", "h"),
        ("mysql://app:Secr@tPart2@host/db", "Secr@tPart2", "host"),
        (f"mysql://app:{RAW_AT}@host:3307/db", RAW_AT, "host"),
        ("postgresql://app:with space@h/db", "with space", "h"),
        ("postgresql://app:50%off@h/db", "50%off", "h"),
    ],
)
def test_a_raw_password_is_read_whole(text, password, host):
    url = parse_database_url(text)
    assert (_pw(url), url.host, url.database, url.user) == (password, host, "db", "app")
    assert password not in url.redacted() and password not in repr(url)
    assert "Part2" not in url.redacted()


@pytest.mark.parametrize("password", NASTY)
def test_a_percent_encoded_password_is_decoded(password):
    for scheme in ("postgresql", "mysql"):
        url = parse_database_url(f"{scheme}://app:{quote(password, safe='')}@h:1/db")
        assert _pw(url) == password
        shown = url.redacted() + repr(url) + str(url)
        assert ":***@h:1/db" in shown
        if len(password) > 1:
            assert password not in shown.replace("***", "")
            assert quote(password, safe="") not in shown.replace("***", "")


def test_a_raw_percent_password_stays_raw_only_when_it_cannot_be_encoded():
    assert _pw(parse_database_url("postgresql://u:ab%41@h/db")) == "abA"  # a valid escape
    assert _pw(parse_database_url("postgresql://u:a@b%41@h/db")) == "a@b%41"  # raw '@'
    assert _pw(parse_database_url("postgresql://u:100%@h/db")) == "100%"


@pytest.mark.parametrize(
    "text",
    [
        "postgres://u:p@h/db",  # Rails, Heroku
        "postgresql://u:p@h/db",
        "pgsql://u:p@h/db",  # dj-database-url
        "postgis://u:p@h/db",
        "host=h dbname=db user=u password=p",
    ],
)
def test_postgresql_spellings(text):
    url = parse_database_url(text)
    assert (url.kind, url.host, url.user, _pw(url), url.database) == (PG, "h", "u", "p", "db")


@pytest.mark.parametrize(
    "scheme",
    [
        "mysql",
        "mariadb",
        "mysql2",  # Rails
        "mysql+pymysql",
        "mysql+mysqldb",
        "mysql+aiomysql",
        "mysql+mysqlconnector",
        "mariadb+mariadbconnector",
        "mariadb+pymysql",
    ],
)
def test_mysql_spellings(scheme):
    url = parse_database_url(f"{scheme}://app:pw@db.example:3307/shop")
    assert (url.kind, url.host, url.port, _pw(url), url.database) == (
        MY,
        "db.example",
        3307,
        "pw",
        "shop",
    )
    assert url.redacted() == f"{scheme}://app:***@db.example:3307/shop"
    assert engine_kind(f"{scheme}://x/y") is MY


def test_libpq_key_value_strings():
    text = "host=db.example port=5433 dbname=shop user=app password='a b\\'c' sslmode=require"
    url = parse_database_url(text)
    assert (url.host, url.port, url.database, url.user, _pw(url)) == (
        "db.example",
        5433,
        "shop",
        "app",
        "a b'c",
    )
    assert url.conninfo and url.params == {"sslmode": "require"}
    assert (
        url.redacted()
        == "host=db.example port=5433 dbname=shop user=app password=*** sslmode=require"
    )
    with pytest.raises(UnsupportedDatabaseUrl, match="invalid libpq connection string"):
        parse_database_url("host=h nosuchoption=1 password=hunter22")


def test_postgresql_tls_parameters_reach_libpq_and_the_tools():
    text = (
        "postgresql://u:p@h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem&sslcert=/c.pem"
        "&sslkey=/k.pem&sslcrl=/crl.pem&sslnegotiation=postgres&channel_binding=require"
    )
    server = PostgresServer(text)
    tool_conninfo = server.conninfo(with_password=False)
    for part in (
        "sslmode=verify-full",
        "sslrootcert=/etc/ca.pem",
        "sslcert=/c.pem",
        "sslkey=/k.pem",
        "sslcrl=/crl.pem",
        "sslnegotiation=postgres",
    ):
        assert part in tool_conninfo
    assert "password" not in tool_conninfo and "password=p" in server.conninfo(with_password=True)
    assert server.child_env()["PGPASSWORD"] == "p"


@pytest.mark.parametrize(
    ("query", "mode"),
    [("ssl=true", "require"), ("ssl=false", "disable"), ("sslmode=no-verify", "require")],
)
def test_driver_ssl_spellings_become_sslmode(query, mode):
    assert parse_database_url(f"postgresql://u@h/db?{query}").params["sslmode"] == mode


def test_raw_at_password_reaches_libpq_whole():
    server = PostgresServer(f"postgresql://app:{RAW_AT}@db.example:5432/shop")
    assert server.host_port() == "db.example:5432" and server.database_name() == "shop"
    assert server.child_env()["PGPASSWORD"] == RAW_AT
    assert conninfo_to_dict(server.conninfo(with_password=True))["password"] == RAW_AT
    sibling = open_engine(f"postgresql://app:{RAW_AT}@db.example:5432/shop").sibling("other")
    assert sibling.describe() == "postgresql://app:***@db.example:5432/other"


def test_postgresql_hosts_sockets_and_ipv6():
    multi = parse_database_url("postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write")
    assert multi.host == "h1,h2" and multi.params["port"] == "5432,5433"
    assert parse_database_url("postgresql:///db?host=/var/run/postgresql").socket == (
        "/var/run/postgresql"
    )
    assert parse_database_url("postgresql://%2Ftmp/db").socket == "/tmp"
    v6 = parse_database_url("postgresql://u:p@[::1]:5433/db")
    assert (v6.host, v6.port) == (
        "::1",
        5433,
    ) and v6.redacted() == "postgresql://u:***@[::1]:5433/db"


def test_unknown_and_framework_parameters_never_fail(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="strongroom.engines.urls"):
        url = parse_database_url("postgres://u:p@h/db?pool=5&prepared_statements=false&bogus=1")
    assert url.params == {}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned and "bogus" in warned[0] and "pool" not in warned[0]
    assert any("pool=5" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


# --- MySQL parameters --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "mode"),
    [
        ("ssl-mode=REQUIRED", "REQUIRED"),
        ("sslmode=verify_identity", "VERIFY_IDENTITY"),
        ("ssl-mode=verify-ca", "VERIFY_CA"),
        ('ssl={"rejectUnauthorized":true}', "VERIFY_IDENTITY"),
        ('ssl={"rejectUnauthorized":false}', "REQUIRED"),
        ("ssl=true", "REQUIRED"),
        ("ssl=0", "DISABLED"),
        ("sslaccept=strict", "VERIFY_IDENTITY"),
        ("ssl-ca=/etc/ca.pem", "VERIFY_CA"),
        ("ssl_ca=/etc/ca.pem", "VERIFY_CA"),
    ],
)
def test_mysql_tls_parameters(query, mode):
    params = conn_params(parse_database_url(f"mysql://u:p@h/db?{query}"))
    assert params.ssl_mode == mode
    if "_ca=" in query or "-ca=" in query:
        assert params.ssl_ca == "/etc/ca.pem"


def test_mysql_tls_options_in_each_clients_dialect():
    params = conn_params(parse_database_url("mysql://u:p@h/db?ssl-mode=VERIFY_IDENTITY&ssl-ca=/c"))
    assert tls_options(params, mariadb=False) == ['ssl-ca="/c"', "ssl-mode=VERIFY_IDENTITY"]
    assert tls_options(params, mariadb=True) == ['ssl-ca="/c"', "ssl", "ssl-verify-server-cert"]
    required = conn_params(parse_database_url("mysql://u:p@h/db?ssl=true"))
    assert tls_options(required, mariadb=True) == ["ssl", "skip-ssl-verify-server-cert"]


def test_mysql_other_parameters_are_ignored_with_an_info_line(caplog: pytest.LogCaptureFixture):
    text = "mysql://u:p@h/db?charset=utf8mb4&timezone=Z&connectTimeout=10000&waitForConnections=1"
    with caplog.at_level(logging.INFO, logger="strongroom.engines.urls"):
        params = conn_params(parse_database_url(text))
    assert params.connect_timeout == 10  # Node's milliseconds
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("charset=utf8mb4" in m and "timezone=Z" in m for m in info), info
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)
    assert conn_params(parse_database_url("mysql://u@h/db?connect_timeout=5")).connect_timeout == 5


# --- SQLite ------------------------------------------------------------------------------
def test_sqlalchemy_absolute_sqlite():
    assert sqlite_path("sqlite:////srv/app/app.db") == Path("/srv/app/app.db")
    assert parse_database_url("sqlite:////srv/app/app.db").kind is LITE


def test_three_slashes_keep_the_absolute_meaning_where_it_is_unambiguous(tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    target = tmp_path / "app.db"
    written = f"sqlite://{target}"  # sqlite:///tmp/…/app.db
    # neither file exists; the absolute folder does, the relative one does not
    assert sqlite_path(written) == target
    target.write_bytes(b"")
    assert sqlite_path(written) == target  # the absolute file exists
    # SQLAlchemy's relative meaning: the file exists in the working directory
    (elsewhere / "rel.db").write_bytes(b"")
    assert sqlite_path("sqlite:///rel.db") == elsewhere / "rel.db"
    # a new file in the working directory: both folders exist -> relative
    assert sqlite_path("sqlite:///new.db") == elsewhere / "new.db"
    assert sqlite_path("sqlite:///./x/y.db") == elsewhere / "x" / "y.db"


def test_prisma_rails_and_plain_sqlite_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sqlite_path("file:./dev.db") == tmp_path / "dev.db"
    assert sqlite_path("file:dev.db?connection_limit=1") == tmp_path / "dev.db"
    assert sqlite_path("file:/abs/dev.db") == Path("/abs/dev.db")
    assert sqlite_path("file:///abs/dev.db") == Path("/abs/dev.db")
    assert sqlite_path("sqlite3:db/development.sqlite3") == tmp_path / "db/development.sqlite3"
    assert sqlite_path("sqlite+pysqlite:////abs/a.db") == Path("/abs/a.db")
    assert sqlite_path("data/app.sqlite3") == tmp_path / "data/app.sqlite3"
    assert engine_kind("file:./dev.db") is LITE and engine_kind("./x.sqlite") is LITE


@pytest.mark.parametrize("text", ["sqlite://", "sqlite:///:memory:", "sqlite:///", "file:"])
def test_in_memory_sqlite_is_refused(text):
    with pytest.raises(UnsupportedDatabaseUrl, match="names no file"):
        parse_database_url(text)


def test_unknown_schemes_name_the_accepted_forms():
    with pytest.raises(UnsupportedDatabaseUrl, match=r"postgresql://.*file:\./dev\.db") as info:
        parse_database_url("mongodb://u:hunter22@h/db")
    assert "hunter22" not in str(info.value)


# --- secrets and redaction ---------------------------------------------------------------
def test_the_secret_type_never_shows_its_value():
    secret = Secret("s3cr3t-value")
    assert str(secret) == "***" and "s3cr3t" not in repr(secret)
    assert secret.reveal() == "s3cr3t-value"
    assert f"{secret}" == "***"


def test_redaction_replaces_registered_secrets_exactly_and_mangles_no_words():
    parse_database_url("postgresql://u:percent@h/db")
    parse_database_url("postgresql://u:a@h/db")
    text = "12 percent; 3 percentage points; a cat at a place; decomposition: postgresql://u:x@h"
    out = redact_text(text)
    assert (
        out
        == "12 ***; 3 percentage points; *** cat at *** place; decomposition: postgresql://u:***@h"
    )
    assert "***ercent" not in redact_text("percent")
    assert not re.search(r"\w\*\*\*|\*\*\*\w", out)


@pytest.mark.parametrize("password", NASTY)
def test_every_form_of_a_parsed_password_is_redacted(password):
    encoded = quote(password, safe="")
    parse_database_url(f"postgresql://app:{encoded}@h/db")
    for form in (password, encoded, quote(password)):
        out = redact_text(f"failed ({form}) for postgresql://app:{encoded}@h/db")
        assert form not in out.replace("***", "") or (len(form) == 1 and form not in out.split())


def test_the_display_form_shows_no_secret_parameters():
    url = parse_database_url("postgresql://u@h/db?sslpassword=keypass99&sslmode=require")
    assert "keypass99" not in url.redacted() and "keypass99" not in redact_text("x keypass99 y")
    assert url.params["sslpassword"] == "keypass99"


def test_engines_take_the_parsed_value(tmp_path):
    parsed = parse_database_url(f"sqlite:///{tmp_path}/x.db")
    assert open_engine(parsed).describe() == str(tmp_path / "x.db")
    mysql = parse_database_url("mysql://app:Secr@tPart2@h:3307/shop")
    conn = MysqlConnection(mysql)
    assert (conn.params.password, conn.params.host, conn.params.port) == ("Secr@tPart2", "h", 3307)
    assert 'password="Secr@tPart2"' in conn.option_file_text()
    assert conn.sibling("other").describe() == "mysql://app:***@h:3307/other"
    assert os.path.basename(conn.describe()) == "shop"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("running PGPASSWORD=Pw1x pg_dump -h db", "running PGPASSWORD=*** pg_dump -h db"),
        ("MYSQL_PWD='a b' mariadb-dump", "MYSQL_PWD=*** mariadb-dump"),
        ("AWS_SECRET_ACCESS_KEY=abc/def+g", "AWS_SECRET_ACCESS_KEY=***"),
        (
            'answer {"user": "app", "password": "p\\"w"}',
            'answer {"user": "app", "password": "***"}',
        ),
        ('{"api_token":"sr_x1"}', '{"api_token":"***"}'),
        ("Authorization: Bearer sr_abcdef123456", "Authorization: Bearer ***"),
        ("authorization: Basic dXNlcjpwYXNz", "authorization: Basic ***"),
        # ordinary words stay
        ("the basic settings of token create ci", "the basic settings of token create ci"),
        ("no such token: ci", "no such token: ci"),
    ],
)
def test_secrets_written_as_variables_json_or_http_credentials_are_redacted(text, shown):
    assert redact_text(text) == shown


def test_a_configured_webhook_url_is_redacted_from_any_text_once_the_settings_are_read():
    from strongroom.config import NotificationSettings
    from strongroom.services.notifications import register_channel_secrets

    token = "T0K3Nwebhookpath42"
    settings = NotificationSettings.model_validate(
        {"channels": [{"type": "slack", "webhook_url_env": "HOOK"}]}
    )
    register_channel_secrets(settings, {"HOOK": f"https://hooks.example/services/T1/B2/{token}"})
    assert token not in redact_text(f"POST https://hooks.example/services/T1/B2/{token} failed")
    assert redact_text("services and other words") == "services and other words"
