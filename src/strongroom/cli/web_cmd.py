"""strongroom serve / user … / token … / reindex"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from strongroom.cli.options import ConfigOption
from strongroom.cli.output import stderr, stdout
from strongroom.errors import UsageError

if TYPE_CHECKING:
    from strongroom.web.accounts import Actor
    from strongroom.web.db import ServiceDatabase

PASSWORD_ENV = "STRONGROOM_USER_PASSWORD"

ServiceDbOption = Annotated[
    str | None,
    typer.Option(
        "--service-db",
        envvar="STRONGROOM_SERVICE_DB",
        show_envvar=True,
        help="Service database: a SQLite path or URL, or postgresql://… "
        "(default: ~/.local/share/strongroom/service.db).",
    ),
]
RoleOption = Annotated[
    str, typer.Option("--role", help="admin (everything) or viewer (read-only).")
]

user_app = typer.Typer(help="Manage the web service's users.", no_args_is_help=True)
token_app = typer.Typer(help="Manage API tokens for scripts.", no_args_is_help=True)


def _service_db(url: str | None) -> str:
    from strongroom.web.db import default_service_db

    return url or default_service_db()


def _database(url: str | None, create: bool = False) -> ServiceDatabase:
    """The service database, migrated to the newest schema. Only ``create`` (``user add``,
    ``token create``, ``reindex``) makes a SQLite one that is not there yet: a mistyped
    path is an error, not a new empty database. One that cannot be opened: one line, exit 5."""
    from sqlalchemy.exc import SQLAlchemyError

    from strongroom.errors import DatabaseUnreachable
    from strongroom.redaction import redact_url
    from strongroom.web.db import ServiceDatabase

    where = _service_db(url)
    if not create and "://" not in where and not Path(where).expanduser().exists():
        raise UsageError(
            f"no service database at {where}; `strongroom user add NAME --role admin` "
            "creates it with the first admin (or give --service-db)"
        )
    try:
        db = ServiceDatabase(where)
        db.upgrade()
    except (SQLAlchemyError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        shown = redact_url(where) if "://" in where else where
        raise DatabaseUnreachable(f"service database {shown}: {reason}") from exc
    return db


def serve_banner(host: str, port: int) -> str:
    """The line ``serve`` prints: the UI, the API documentation and the OpenAPI schema,
    as URLs (an IPv6 address in brackets)."""
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    return (
        f"strongroom serve: {base}/ (API documentation {base}/docs, "
        f"OpenAPI schema {base}/openapi.json)"
    )


def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    service_db: ServiceDbOption = None,
    no_scheduler: Annotated[
        bool,
        typer.Option(
            "--no-scheduler",
            help="Serve only: no scheduled jobs, and no uploader for the [wal] spool.",
        ),
    ] = False,
    secure_cookies: Annotated[
        bool,
        typer.Option(
            "--secure-cookies",
            envvar="STRONGROOM_SECURE_COOKIES",
            help="Mark the session cookie Secure (when served over https, e.g. behind a proxy).",
        ),
    ] = False,
) -> None:
    """Run the REST API, the admin UI and the scheduler of `strongroom run` in one process."""
    import uvicorn

    from strongroom.services.settings_sources import load_settings
    from strongroom.web.app import SERVER_OPTIONS, create_app, keep_info_records

    settings = load_settings(config)
    app = create_app(
        settings,
        _service_db(service_db),
        scheduler=not no_scheduler,
        secure_cookies=secure_cookies,
    )
    keep_info_records()  # each job keeps its INFO lines; the console shows what it did
    stdout.print(serve_banner(host, port))
    # forwarded headers only from settings.web.trusted_proxies (the app reads them)
    uvicorn.run(app, host=host, port=port, log_config=None, **SERVER_OPTIONS)


PasswordStdinOption = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input."
    ),
]
NameArg = Annotated[str, typer.Argument(help="The user's sign-in name.")]
TokenNameArg = Annotated[str, typer.Argument(help="The token's name, e.g. github-actions.")]


def _password(from_stdin: bool = False) -> str:
    """From stdin (``--password-stdin``), STRONGROOM_USER_PASSWORD, or typed twice; never
    from the command line."""
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise UsageError("--password-stdin: standard input held no password")
        return line
    given = os.environ.get(PASSWORD_ENV)
    if given:
        return given
    if not sys.stdin.isatty():
        raise UsageError(
            f"use --password-stdin, set {PASSWORD_ENV}, or run on a terminal to type the password"
        )
    first = typer.prompt("Password", hide_input=True)
    if typer.prompt("Password again", hide_input=True) != first:
        raise UsageError("the passwords differ; nothing was changed")
    return str(first)


def _actor() -> Actor:
    """``cli:<os user>`` in the audit log."""
    from strongroom.web.accounts import Actor

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = f"uid {os.getuid()}"
    return Actor(f"cli:{who}", "local")


def _when(iso: str | None) -> str:
    return iso[:16].replace("T", " ") + " UTC" if iso else "-"


@user_app.command("add")
def user_add(
    name: NameArg,
    role: RoleOption = "viewer",
    password_stdin: PasswordStdinOption = False,
    service_db: ServiceDbOption = None,
) -> None:
    """Add a user (password typed twice, from --password-stdin or STRONGROOM_USER_PASSWORD)."""
    from strongroom.web.accounts import add

    db = _database(service_db, create=True)
    add(db, _actor(), name, role, _password(password_stdin))
    stdout.print(f"user {name} added ({role})", markup=False)


@user_app.command("list")
def user_list(service_db: ServiceDbOption = None) -> None:
    """List the users: name, role, state, created."""
    from strongroom.web.accounts import list_users

    users = list_users(_database(service_db))
    width = max([4, *(len(u.name) for u in users)])
    stdout.print(f"{'NAME':<{width}}  {'ROLE':<8}  {'STATE':<8}  CREATED", markup=False)
    for u in users:
        state = "disabled" if u.disabled else "active"
        stdout.print(
            f"{u.name:<{width}}  {u.role:<8}  {state:<8}  {_when(u.created_at)}", markup=False
        )


@user_app.command("disable")
def user_disable(name: NameArg, service_db: ServiceDbOption = None) -> None:
    """Disable a user: they cannot sign in, and their sessions end now."""
    from strongroom.web.accounts import set_disabled

    ended = set_disabled(_database(service_db), _actor(), name, True)
    stdout.print(f"user {name} disabled ({ended} session(s) ended)", markup=False)


@user_app.command("enable")
def user_enable(name: NameArg, service_db: ServiceDbOption = None) -> None:
    """Enable a disabled user again."""
    from strongroom.web.accounts import set_disabled

    set_disabled(_database(service_db), _actor(), name, False)
    stdout.print(f"user {name} enabled", markup=False)


@user_app.command("remove")
def user_remove(name: NameArg, service_db: ServiceDbOption = None) -> None:
    """Remove a user; their sessions end (the audit log keeps their name)."""
    from strongroom.web.accounts import remove

    remove(_database(service_db), _actor(), name)
    stdout.print(f"user {name} removed", markup=False)


@user_app.command("passwd")
def user_passwd(
    name: NameArg, password_stdin: PasswordStdinOption = False, service_db: ServiceDbOption = None
) -> None:
    """Set a user's password; their sessions end."""
    from strongroom.web.accounts import set_password

    db = _database(service_db)
    set_password(db, _actor(), name, _password(password_stdin))
    stdout.print(f"password of {name} changed; their sessions ended", markup=False)


@user_app.command("role")
def user_role(
    name: NameArg,
    role: Annotated[str, typer.Argument(help="admin or viewer.")],
    service_db: ServiceDbOption = None,
) -> None:
    """Give a user another role."""
    from strongroom.web.accounts import set_role

    set_role(_database(service_db), _actor(), name, role)
    stdout.print(f"user {name} is now {role}", markup=False)


@token_app.command("create")
def token_create(
    name: TokenNameArg,
    role: RoleOption = "viewer",
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="Expire after e.g. 90m, 12h, 30d or 2w (default never)."),
    ] = None,
    service_db: ServiceDbOption = None,
) -> None:
    """Create an API token; it is printed once (only its hash is stored)."""
    from strongroom.web.accounts import new_token

    db = _database(service_db, create=True)
    token = new_token(db, _actor(), name, role, expires)
    stdout.print(token, markup=False)
    stderr.print(
        f"token {name} ({role}, expires {expires or 'never'}) created; "
        "use it as: Authorization: Bearer <token>",
        markup=False,
    )


@token_app.command("list")
def token_list(service_db: ServiceDbOption = None) -> None:
    """List the API tokens (never the tokens themselves): role, state, last use, expiry."""
    from strongroom.web.accounts import list_tokens

    tokens = list_tokens(_database(service_db))
    width = max([4, *(len(t.name) for t in tokens)])
    head = f"{'NAME':<{width}}  {'ROLE':<8}  {'STATE':<8}  {'LAST USED':<20}  EXPIRES"
    stdout.print(head, markup=False)
    for t in tokens:
        stdout.print(
            f"{t.name:<{width}}  {t.role:<8}  {t.state:<8}  {_when(t.last_used_at):<20}  "
            f"{_when(t.expires_at) if t.expires_at else 'never'}",
            markup=False,
        )


@token_app.command("revoke")
def token_revoke(name: TokenNameArg, service_db: ServiceDbOption = None) -> None:
    """Revoke an API token: it answers 401 from now on."""
    from strongroom.web.accounts import revoke

    revoke(_database(service_db), _actor(), name)
    stdout.print(f"token {name} revoked", markup=False)


def reindex(config: ConfigOption = None, service_db: ServiceDbOption = None) -> None:
    """Rebuild the web service's manifest index from the repository."""
    from strongroom.services.settings_sources import load_settings, open_configured
    from strongroom.web.index import ManifestIndex

    settings = load_settings(config)
    report = ManifestIndex(_database(service_db, create=True)).rebuild(open_configured(settings))
    stdout.print(f"indexed {report.total} backups")
