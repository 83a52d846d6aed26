"""strongroom serve / user add / token create / reindex"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from strongroom.cli.options import ConfigOption
from strongroom.cli.output import stderr, stdout
from strongroom.errors import UsageError

if TYPE_CHECKING:
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


def _database(url: str | None) -> ServiceDatabase:
    from strongroom.web.db import ServiceDatabase

    db = ServiceDatabase(_service_db(url))
    db.upgrade()
    return db


def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    service_db: ServiceDbOption = None,
    no_scheduler: Annotated[
        bool, typer.Option("--no-scheduler", help="Serve only; do not run scheduled jobs.")
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
    from strongroom.web.app import SERVER_OPTIONS, create_app

    settings = load_settings(config)
    app = create_app(
        settings,
        _service_db(service_db),
        scheduler=not no_scheduler,
        secure_cookies=secure_cookies,
    )
    stdout.print(f"strongroom serve: http://{host}:{port}/ (API at /api/, schema /openapi.json)")
    # forwarded headers only from settings.web.trusted_proxies (the app reads them)
    uvicorn.run(app, host=host, port=port, log_config=None, **SERVER_OPTIONS)


def _password() -> str:
    given = os.environ.get(PASSWORD_ENV)
    if given:
        return given
    if not sys.stdin.isatty():
        raise UsageError(f"set {PASSWORD_ENV}, or run on a terminal to type the password")
    first = typer.prompt("Password", hide_input=True)
    if typer.prompt("Password again", hide_input=True) != first:
        raise UsageError("the passwords differ; nothing was changed")
    return str(first)


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The user's sign-in name.")],
    role: RoleOption = "viewer",
    service_db: ServiceDbOption = None,
) -> None:
    """Add a user (password from STRONGROOM_USER_PASSWORD, or typed twice)."""
    from strongroom.web.auth import ROLES, add_user

    if role not in ROLES:
        raise UsageError(f"--role must be one of {', '.join(ROLES)}")
    db = _database(service_db)
    add_user(db, name, role, _password())
    stdout.print(f"user {name} added ({role})", markup=False)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name for the token, e.g. github-actions.")],
    role: RoleOption = "viewer",
    service_db: ServiceDbOption = None,
) -> None:
    """Create an API token; it is printed once (only its hash is stored)."""
    from strongroom.web.auth import create_token

    db = _database(service_db)
    token = create_token(db, name, role)
    stdout.print(token, markup=False)
    stderr.print(
        f"token {name} ({role}) created; use it as: Authorization: Bearer <token>", markup=False
    )


def reindex(config: ConfigOption = None, service_db: ServiceDbOption = None) -> None:
    """Rebuild the web service's manifest index from the repository."""
    from strongroom.services.settings_sources import load_settings, open_configured
    from strongroom.web.index import ManifestIndex

    settings = load_settings(config)
    report = ManifestIndex(_database(service_db)).rebuild(open_configured(settings))
    stdout.print(f"indexed {report.total} backups")
