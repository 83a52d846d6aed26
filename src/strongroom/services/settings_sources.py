"""Where every command finds its settings, in one order (docs/configuration.md):

1. the command's own flags and arguments (``--repo``, ``--s3-endpoint``, ``--key-file``, a
   database URL, ``--keep-*``);
2. strongroom's variables (``STRONGROOM_REPO``, ``STRONGROOM_S3_ENDPOINT``, ...);
3. the configuration file: ``--config``, else ``STRONGROOM_CONFIG``, else ``strongroom.toml``
   in the working directory when there is one;
4. the variables of the scripts strongroom replaces (``DATABASE_URL``, ``BACKUP_DIR``,
   ``BACKUP_S3_BUCKET``, ``AWS_ENDPOINT_URL``, ``SLACK_WEBHOOK_URL``, ...).

The first source that gives a value wins, field by field. ``ENVIRONMENT_VARIABLES`` lists
every variable strongroom reads; docs/configuration.md documents each one (a test checks).

The S3 endpoint is not stored in the repository (it is needed to reach the repository in
the first place): every command takes it from these sources, so put it where every
command sees it (``s3_endpoint`` in strongroom.toml, ``STRONGROOM_S3_ENDPOINT``,
``AWS_ENDPOINT_URL`` or, for R2, ``CLOUDFLARE_ACCOUNT_ID``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.errors import UsageError
from strongroom.redaction import redact_url, register_secret
from strongroom.services.repository_access import (
    NO_REPOSITORY,
    RepositoryFields,
    RepositoryLocation,
    plain_repository,
)

if TYPE_CHECKING:
    from strongroom.config import NotificationSettings, RepositorySettings, Settings
    from strongroom.repository.repository import Repository
    from strongroom.retention import RetentionPolicy

log = logging.getLogger("strongroom.settings")

CONFIG_FILE = "strongroom.toml"
CONFIG_VARIABLE = "STRONGROOM_CONFIG"
REPO_VARIABLE = "STRONGROOM_REPO"
S3_ENDPOINT_VARIABLE = "STRONGROOM_S3_ENDPOINT"
KEY_FILE_VARIABLE = "STRONGROOM_KEY_FILE"
PASSPHRASE_VARIABLE = "STRONGROOM_PASSPHRASE"
DEADLINE_VARIABLE = "STRONGROOM_STORAGE_DEADLINE"
TRUSTED_PROXIES_VARIABLE = "STRONGROOM_TRUSTED_PROXIES"
SPOOL_VARIABLE = "STRONGROOM_WAL_SPOOL"
# the scripts' names, first set wins
DIRECTORY_VARIABLES = ("BACKUP_DIR", "BACKUP_PATH")
BUCKET_VARIABLES = ("BACKUP_S3_BUCKET", "S3_BUCKET", "S3_BACKUP_BUCKET")
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
R2_ACCOUNT_VARIABLE = "CLOUDFLARE_ACCOUNT_ID"
R2_KEY_VARIABLE, R2_SECRET_VARIABLE = "CLOUDFLARE_ACCESS_KEY_ID", "CLOUDFLARE_SECRET_ACCESS_KEY"
AWS_KEY_VARIABLE, AWS_SECRET_VARIABLE = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
REGION_VARIABLES = ("AWS_DEFAULT_REGION", "AWS_REGION")
DATABASE_VARIABLE = "DATABASE_URL"
SLACK_VARIABLES = ("SLACK_WEBHOOK_URL", "SLACK_WEBHOOK")
EMAIL_VARIABLE = "BACKUP_NOTIFICATION_EMAIL"
SMTP_HOST, SMTP_PORT, SMTP_USER, SMTP_FROM = "SMTP_HOST", "SMTP_PORT", "SMTP_USER", "SMTP_FROM"
SMTP_PASSWORD_VARIABLES = ("SMTP_PASSWORD", "SMTP_PASS")

# Every environment variable strongroom reads (docs/configuration.md has a row for each;
# tests/docs/test_configuration_reference.py fails when one is missing there, or when the
# code reads a STRONGROOM_* or scripts' variable that is not listed here).
ENVIRONMENT_VARIABLES: tuple[str, ...] = (
    # strongroom's own (level 2)
    "STRONGROOM_CONFIG",
    "STRONGROOM_REPO",
    "STRONGROOM_S3_ENDPOINT",
    "STRONGROOM_KEY_FILE",
    "STRONGROOM_PASSPHRASE",
    "STRONGROOM_STORAGE_DEADLINE",
    "STRONGROOM_STORAGE_ATTEMPTS",
    "STRONGROOM_STORAGE_BASE_DELAY",
    "STRONGROOM_LOG_FORMAT",
    "STRONGROOM_ALLOW_POOLER",
    "STRONGROOM_RESTORE_JOBS",
    "STRONGROOM_PG_BINDIR",
    "STRONGROOM_PG_CHECKSUMS",
    "STRONGROOM_MYSQL_BINDIR",
    "STRONGROOM_SERVICE_DB",
    "STRONGROOM_SESSION_SECRET",
    "STRONGROOM_SECURE_COOKIES",
    "STRONGROOM_TRUSTED_PROXIES",
    "STRONGROOM_USER_PASSWORD",
    "STRONGROOM_WAL_SPOOL",
    "STRONGROOM_CACHE_DIR",
    # the scripts' (level 4)
    "DATABASE_URL",
    "BACKUP_DIR",
    "BACKUP_PATH",
    "BACKUP_S3_BUCKET",
    "S3_BUCKET",
    "S3_BACKUP_BUCKET",
    "BACKUP_RETENTION_DAYS",
    "RETENTION_DAYS",
    "SLACK_WEBHOOK_URL",
    "SLACK_WEBHOOK",
    "BACKUP_NOTIFICATION_EMAIL",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_USER",
    "SMTP_PASSWORD",
    "SMTP_PASS",
    "SMTP_FROM",
    "CRON_SECRET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "CLOUDFLARE_ACCESS_KEY_ID",
    "CLOUDFLARE_SECRET_ACCESS_KEY",
    "CLOUDFLARE_ACCOUNT_ID",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
)


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def config_path(given: str | None, env: Mapping[str, str], cwd: Path | None = None) -> str | None:
    """The configuration file: ``--config``, ``STRONGROOM_CONFIG``, else ``strongroom.toml``
    in the working directory when it exists."""
    chosen = (given or "").strip() or env.get(CONFIG_VARIABLE, "").strip()
    if chosen:
        return chosen
    default = (cwd or Path.cwd()) / CONFIG_FILE
    return str(default) if default.is_file() else None


# a bucket name as boto3 accepts it (AWS's rules are stricter, but buckets made before 2018
# and other stores allow capitals and "_": the store decides those)
_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")
_S3_PREFIX = re.compile(r"^s3://", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _bucket_location(name: str, value: str) -> str:
    """``s3://BUCKET[/PREFIX]`` of a bucket variable (``bucket``, ``s3://bucket``,
    ``bucket/prefix/``); a value that is no bucket is refused in one line naming it."""
    rest = _S3_PREFIX.sub("", value).strip("/")
    bucket = rest.split("/", 1)[0]
    if not _BUCKET.fullmatch(bucket):
        raise UsageError(
            f"{name}={redact_url(value)!r} is not an S3 bucket: give the bucket's name, "
            "s3://BUCKET or BUCKET/PREFIX (an endpoint URL goes in AWS_ENDPOINT_URL or "
            f"{S3_ENDPOINT_VARIABLE})"
        )
    return "s3://" + rest


def _set(env: Mapping[str, str], name: str) -> bool:
    """Whether a variable is set to something (``NAME=`` or blanks: unset)."""
    return bool(env.get(name, "").strip())


def _shown(path: str, found: bool) -> str:
    return f"{path} (found in the working directory)" if found else path


def _same_location(a: str, b: str) -> bool | None:
    """Whether two locations name the same repository (``None``: cannot tell)."""
    if _SCHEME.match(a) or _SCHEME.match(b):
        return a.rstrip("/") == b.rstrip("/")
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):
        return None


def _r2_in_use(env: Mapping[str, str]) -> bool:
    return _set(env, R2_KEY_VARIABLE) and not _set(env, AWS_KEY_VARIABLE)


def _script_repository(env: Mapping[str, str], location: bool = True) -> dict[str, Any]:
    """Level 4: the scripts' folder or bucket (``location``: when nothing before gives
    one), and the S3 endpoint of the AWS or R2 names."""
    table: dict[str, Any] = {}
    directory = _first(env, DIRECTORY_VARIABLES) if location else None
    bucket = _first(env, BUCKET_VARIABLES) if location else None
    if directory is not None:
        table["location"] = directory[1]
        if bucket is not None:
            log.info("both %s and %s are set: the repository is %s", directory[0], bucket[0],
                     directory[1])  # fmt: skip
    elif bucket is not None:
        table["location"] = _bucket_location(*bucket)
    endpoint = _first(env, ENDPOINT_VARIABLES)
    if endpoint is not None:
        table["s3_endpoint"] = endpoint[1]
    elif _r2_in_use(env) and env.get(R2_ACCOUNT_VARIABLE):
        table["s3_endpoint"] = (
            f"https://{env[R2_ACCOUNT_VARIABLE].strip()}.r2.cloudflarestorage.com"
        )
    return table


def _own_repository(env: Mapping[str, str]) -> dict[str, Any]:
    """Level 2: STRONGROOM_REPO, STRONGROOM_S3_ENDPOINT, STRONGROOM_KEY_FILE."""
    names = {"location": REPO_VARIABLE, "s3_endpoint": S3_ENDPOINT_VARIABLE}
    names["key_file"] = KEY_FILE_VARIABLE
    return {field: env[name].strip() for field, name in names.items() if _set(env, name)}


def _env_channels(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Notification channels of the scripts' variables: Slack, and email when an SMTP
    server is named."""
    channels: list[dict[str, Any]] = []
    slack = _first(env, SLACK_VARIABLES)
    if slack is not None:
        channels.append({"type": "slack", "webhook_url_env": slack[0]})
    email = env.get(EMAIL_VARIABLE, "").strip()
    if email and not env.get(SMTP_HOST):
        log.warning(
            "%s is set but %s is not: no email is sent (set %s, and %s / %s if the server "
            "asks for a login)",
            EMAIL_VARIABLE, SMTP_HOST, SMTP_HOST, SMTP_USER, SMTP_PASSWORD_VARIABLES[0],
        )  # fmt: skip
    elif email:
        password = _first(env, SMTP_PASSWORD_VARIABLES)
        port = env.get(SMTP_PORT, "").strip()
        if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise UsageError(f"{SMTP_PORT} must be a port number (1-65535), got {port!r}")
        import socket  # (2 ms to import: wal-push reads this module)

        sender = env.get(SMTP_FROM) or env.get(SMTP_USER) or f"strongroom@{socket.getfqdn()}"
        channel: dict[str, Any] = {
            "type": "email",
            "host": env[SMTP_HOST],
            "sender": sender,
            "recipients": [r.strip() for r in email.split(",") if r.strip()],
            "username": env.get(SMTP_USER) or None,
            "password_env": password[0] if password else None,
        }
        if port:
            channel["port"] = int(port)
        channels.append(channel)
    return channels


def _env_target(env: Mapping[str, str]) -> dict[str, Any]:
    """DATABASE_URL as one target (named after its database), backed up daily at 02:00."""
    url = env.get(DATABASE_VARIABLE, "").strip()
    if not url:
        return {}
    from strongroom.engines import open_engine

    name = open_engine(url).database_name()
    return {name: {"url_env": DATABASE_VARIABLE, "schedule": {"daily": "0 2 * * *"}}}


@dataclass(frozen=True)
class Sources:
    """The environment and the configuration file one command reads its settings from."""

    env: Mapping[str, str]
    path: str | None = None
    text: str | None = None
    found: bool = False  # ./strongroom.toml, not named by --config or STRONGROOM_CONFIG

    @classmethod
    def load(
        cls,
        config: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Sources:
        env = os.environ if env is None else env
        path = config_path(config, env, cwd)
        if path is None:
            return cls(env)
        found = not ((config or "").strip() or env.get(CONFIG_VARIABLE, "").strip())
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            shown = _shown(path, found)
            raise UsageError(f"cannot read configuration {shown}: {why}") from exc
        return cls(env, path, text, found)

    @property
    def shown(self) -> str:
        """The file's name in messages (where it was found, when nobody named it)."""
        return _shown(str(self.path), self.found)

    def _file_table(self, data: dict[str, Any], announce: bool) -> dict[str, Any]:
        """The file's [repository] with relative paths made relative to the file's folder
        (a command run from cron has cwd=/), and a note when it overrides a different
        folder or bucket of the scripts' variables."""
        table = dict(data.get("repository", {}))
        base = Path(str(self.path)).absolute().parent
        for field in ("location", "key_file"):
            value = table.get(field)
            if isinstance(value, str) and value.strip() and not _SCHEME.match(value):
                path = Path(value).expanduser()
                table[field] = str(path if path.is_absolute() else base / path)
        targets = data.get("targets")
        for target in targets.values() if isinstance(targets, dict) else ():
            verify = target.get("verify") if isinstance(target, dict) else None
            if isinstance(verify, dict) and isinstance(verify.get("check_sql"), str):
                check = Path(verify["check_sql"]).expanduser()
                verify["check_sql"] = str(check if check.is_absolute() else base / check)
        location = table.get("location")
        script = _first(self.env, DIRECTORY_VARIABLES) or _first(self.env, BUCKET_VARIABLES)
        if not (announce and script and isinstance(location, str)) or _set(self.env, REPO_VARIABLE):
            return table
        try:
            theirs = _script_repository(self.env)["location"]
        except UsageError:  # not a bucket: unused here anyway
            return table
        if _same_location(location, theirs) is False:
            log.warning(
                "%s=%s is not used: %s sets [repository] location = %s (the configuration "
                "file wins over the scripts' variables; --repo or %s wins over both)",
                script[0], script[1], self.shown, location, REPO_VARIABLE,
            )  # fmt: skip
        return table

    def repository_table(
        self, data: dict[str, Any], given: Mapping[str, str], placeholder: bool = False
    ) -> dict[str, Any] | None:
        """``[repository]``: ``given`` (flags), STRONGROOM_*, the file's table, the scripts'
        variables; ``None`` when the file's is no table. No location: ``UsageError``."""
        table = data.get("repository", {})
        if isinstance(table, dict) and self.path is not None:
            table = self._file_table(data, announce="location" not in given)
        if not isinstance(table, dict):
            return None
        own = {**_own_repository(self.env), **given}
        needed = not (table.get("location") or own.get("location"))
        merged = {**_script_repository(self.env, needed), **table, **own}
        if not merged.get("location"):
            if not placeholder:
                raise UsageError(NO_REPOSITORY)
            merged["location"] = "(none)"
        return merged

    def spool_of(self, data: dict[str, Any], given: str | None = None) -> Any:
        """The WAL spool: ``--spool``, STRONGROOM_WAL_SPOOL, the file's ``[wal] spool``
        (relative to the file's folder; a non-string as it is, for validation) or ``None``."""
        if given and given.strip():
            return given.strip()
        if _set(self.env, SPOOL_VARIABLE):
            return self.env[SPOOL_VARIABLE].strip()
        wal = data.get("wal")
        value = wal.get("spool") if isinstance(wal, dict) else None
        if isinstance(value, str) and value.strip() and self.path is not None:
            path = Path(value.strip()).expanduser()
            base = Path(str(self.path)).absolute().parent
            return str(path if path.is_absolute() else base / path)
        return value

    def wal_location(
        self, repo: str | None, key_file: Path | None, s3_endpoint: str | None, spool: str | None
    ) -> tuple[RepositoryLocation, str | None]:
        """The repository and WAL spool for ``wal-push``/``wal-fetch`` without pydantic: only
        ``[repository]`` and ``[wal] spool`` are read, through ``repository_table`` and
        ``spool_of``; what this cannot check goes through ``settings`` (and its errors)."""
        import tomllib

        flags = {"location": repo, "s3_endpoint": s3_endpoint, "key_file": key_file}
        given = {k: str(v).strip() for k, v in flags.items() if v and str(v).strip()}
        try:
            data = tomllib.loads(self.text) if self.text is not None else {}
        except tomllib.TOMLDecodeError:
            data = None
        table = self.repository_table(data, given) if data is not None else None
        chosen = self.spool_of(data, spool) if data is not None else None
        if table is None or not plain_repository(table) or not isinstance(chosen, str | None):
            settings = self.settings(repo, key_file, s3_endpoint, targets=False)
            return location_of(settings, self.env), spool or settings.wal.spool
        return repository_location(RepositoryFields(**table), self.env), chosen

    # --- the whole configuration ------------------------------------------------------
    def settings(
        self,
        repo: str | None = None,
        key_file: Path | str | None = None,
        s3_endpoint: str | None = None,
        *,
        targets: bool = True,
        placeholder: bool = False,
    ) -> Settings:
        """Flags, then STRONGROOM_*, then the file, then the scripts' variables, as one
        validated ``Settings``; ``targets``: add DATABASE_URL as a target when the file
        names none; ``placeholder``: a file without any repository is still read (for its
        targets, retention and channels)."""
        from strongroom.config import parse_settings

        flags = {"location": repo, "s3_endpoint": s3_endpoint, "key_file": key_file}
        given = {k: str(v).strip() for k, v in flags.items() if v and str(v).strip()}

        def complete(data: dict[str, Any]) -> dict[str, Any]:
            data = dict(data)
            table = self.repository_table(data, given, placeholder)
            if table is not None:
                data["repository"] = table
            wal = data.get("wal", {})
            spool = self.spool_of(data)
            if isinstance(wal, dict) and spool is not None:
                data["wal"] = {**wal, "spool": spool}
            notifications = data.get("notifications", {})
            if isinstance(notifications, dict) and "channels" not in notifications:
                channels = _env_channels(self.env)
                if channels:
                    data["notifications"] = {**notifications, "channels": channels}
            if targets and "targets" not in data:
                data["targets"] = _env_target(self.env)
            proxies = self.env.get(TRUSTED_PROXIES_VARIABLE, "").strip()
            web = data.get("web", {})
            if proxies and isinstance(web, dict):  # level 2 beats the file
                listed = [p.strip() for p in proxies.split(",") if p.strip()]
                data["web"] = {**web, "trusted_proxies": listed}
            return data

        if targets:  # run, serve, health, config check: a bad value fails now, not nightly
            from strongroom.config import retention_from_environment

            retention_from_environment(self.env)
        if self.text is not None:
            return parse_settings(self.text, self.shown, complete)
        return parse_settings("", "the environment", complete)  # ConfigError: one line

    def configured(
        self, repo: str | None = None, key_file: Path | None = None, s3_endpoint: str | None = None
    ) -> Settings | None:
        """The settings when there is a configuration file (its targets, hooks, channels),
        else ``None``."""
        if self.text is None:
            return None
        return self.settings(repo, key_file, s3_endpoint, targets=False, placeholder=True)

    # --- one setting at a time --------------------------------------------------------
    def location(
        self, repo: str | None = None, key_file: Path | None = None, s3_endpoint: str | None = None
    ) -> RepositoryLocation:
        """The repository, its endpoint, key file and passphrase."""
        return location_of(self.settings(repo, key_file, s3_endpoint, targets=False), self.env)

    def endpoint_remembered(self) -> bool:
        """Whether a later command finds an S3 endpoint without the flag."""
        try:
            return bool(self.settings(repo="s3://check", targets=False).repository.s3_endpoint)
        except UsageError:
            return False

    def file_targets(self) -> dict[str, str]:
        """The configured targets' database URLs (a missing url_env variable is an error)."""
        settings = self.configured()
        if settings is None:
            return {}
        return {name: t.database_url(self.env) for name, t in settings.targets.items()}

    def database(self, given: str | None, target: str | None) -> tuple[str | None, str | None]:
        """The database to back up and its target name: the argument; else the configured
        target ``target`` names (or the only one configured); else ``DATABASE_URL``."""
        if given:
            return given, target
        settings = self.configured()
        configured = settings.targets if settings is not None else {}
        if target is not None and target in configured:
            return configured[target].database_url(self.env), target
        if target is None and len(configured) == 1:
            name, only = next(iter(configured.items()))
            return only.database_url(self.env), name
        url = self.env.get(DATABASE_VARIABLE, "").strip() or None
        if url is None and self.env.get("PGDATABASE", "").strip():
            # the libpq variables a `pg_dump` script relies on: libpq fills in the rest
            url = "postgresql://"
        return url, target

    def server_url(self, target: str) -> str | None:
        """The database server a drill of ``target`` restores beside: the configured
        target's, else ``DATABASE_URL``."""
        settings = self.configured()
        if settings is not None and target in settings.targets:
            return settings.targets[target].database_url(self.env)
        return self.env.get(DATABASE_VARIABLE, "").strip() or None

    def notifications(self) -> NotificationSettings:
        """The configured channels, else those of the scripts' variables."""
        from strongroom.config import NotificationSettings

        settings = self.configured()
        if settings is not None:
            return settings.notifications
        return NotificationSettings.model_validate({"channels": _env_channels(self.env)})

    def retention(
        self, given: RetentionPolicy | None, target: str | None, timezone: str | None
    ) -> tuple[RetentionPolicy, str, str | None]:
        """The policy ``forget`` applies, where it comes from, and the target it is for:
        the --keep options; else the configured target's (``--target``, or the only
        configured target); else BACKUP_RETENTION_DAYS / RETENTION_DAYS; else the default."""
        from strongroom.config import retention_from_environment
        from strongroom.retention import RetentionPolicy
        from strongroom.services.forget import SOURCE_DEFAULT, SOURCE_OPTIONS

        settings = self.configured()
        zone = timezone or (settings.timezone if settings is not None else "UTC")
        if given is not None and not given.is_empty():
            return replace(given, timezone=zone), SOURCE_OPTIONS, target
        with_policy = {
            name: t.retention
            for name, t in (settings.targets.items() if settings is not None else ())
            if t.retention is not None
        }
        chosen = target
        if chosen is None and len(with_policy) == 1 and settings and len(settings.targets) == 1:
            chosen = next(iter(with_policy))
        elif chosen is None and with_policy:
            names = ", ".join(sorted(with_policy))
            raise UsageError(
                f"{self.path} has a retention policy per target ({names}): "
                "add --target NAME, or give --keep-* options"
            )
        if chosen is not None and chosen in with_policy:
            policy = with_policy[chosen].policy(zone)
            if not policy.is_empty():
                return policy, f"{self.path}, targets.{chosen}.retention", chosen
        from_env = retention_from_environment(self.env)
        if from_env is not None:
            return replace(from_env[0], timezone=zone), from_env[1], target
        return replace(RetentionPolicy.default(), timezone=zone), SOURCE_DEFAULT, target


def _credentials(env: Mapping[str, str], location: str, endpoint: str | None) -> None:
    """R2's CLOUDFLARE_* credentials as the AWS names boto3 reads (when no AWS key is set);
    an R2 key without an endpoint is refused rather than sent to AWS."""
    if not location.lower().startswith("s3://") or not _r2_in_use(env):
        return
    if not _set(env, R2_SECRET_VARIABLE):
        raise UsageError(f"{R2_KEY_VARIABLE} is set but {R2_SECRET_VARIABLE} is not")
    if not endpoint:
        raise UsageError(
            f"{R2_KEY_VARIABLE} is set but no R2 endpoint: set {R2_ACCOUNT_VARIABLE} (the "
            "endpoint is https://ACCOUNT_ID.r2.cloudflarestorage.com), or give --s3-endpoint, "
            f"{S3_ENDPOINT_VARIABLE} or s3_endpoint in strongroom.toml"
        )
    register_secret(env[R2_SECRET_VARIABLE].strip())
    # an empty AWS_ACCESS_KEY_ID= (docker compose's ${AWS_ACCESS_KEY_ID}) is unset here
    os.environ[AWS_KEY_VARIABLE] = env[R2_KEY_VARIABLE].strip()
    os.environ[AWS_SECRET_VARIABLE] = env[R2_SECRET_VARIABLE].strip()
    if _first(env, REGION_VARIABLES) is None:
        for name in REGION_VARIABLES:  # boto3 would take a blank one as the region
            os.environ.pop(name, None)
        os.environ[REGION_VARIABLES[0]] = "auto"  # R2's region


def location_of(settings: Settings, env: Mapping[str, str] | None = None) -> RepositoryLocation:
    return repository_location(settings.repository, env)  # the repository it names


def repository_location(
    repo: RepositorySettings | RepositoryFields, env: Mapping[str, str] | None = None
) -> RepositoryLocation:
    """The repository ``repo`` names; the key's passphrase from STRONGROOM_PASSPHRASE,
    else from the variable ``passphrase_env`` names."""
    env = os.environ if env is None else env
    passphrase = env.get(PASSPHRASE_VARIABLE) or None
    if passphrase is None and repo.passphrase_env:
        passphrase = env.get(repo.passphrase_env) or None
    key_file = Path(repo.key_file).expanduser() if repo.key_file else None
    deadline = None if env.get(DEADLINE_VARIABLE) else repo.storage_deadline
    _credentials(env, repo.location, repo.s3_endpoint)
    deadline = None if deadline is None else float(deadline)
    return RepositoryLocation(repo.location, repo.s3_endpoint, key_file, passphrase, deadline)


def open_configured(settings: Settings, env: Mapping[str, str] | None = None) -> Repository:
    """Open the repository a configuration names."""
    return location_of(settings, env).open()


def load_settings(
    config: str | None = None, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Settings:
    """The whole configuration, for ``run``, ``health``, ``schedule``, ``serve``…: the file
    (``--config``, STRONGROOM_CONFIG, ./strongroom.toml) completed by the environment."""
    return Sources.load(config, env, cwd).settings()
