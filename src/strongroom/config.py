"""Typed settings: the model of ``strongroom.toml`` and its parsing.

Where a command finds its settings (flags, ``STRONGROOM_*`` variables, this file, the
scripts' variables) is decided in ``services/settings_sources.py``; every field is
documented in docs/configuration.md. Every validation error names the field and the line
of the file it comes from.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from strongroom.errors import UsageError
from strongroom.repository.names import normalized, target_name_problem
from strongroom.retention import RETENTION_DAYS_VARIABLE, RetentionPolicy, parse_duration

CONFIG_ENV = "STRONGROOM_CONFIG"
# keep every backup younger than N days, when no policy is given or configured
RETENTION_DAYS_VARIABLES = (RETENTION_DAYS_VARIABLE, "RETENTION_DAYS")
DEFAULT_STALE_GRACE = "1h"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_cron(expression: str) -> str:
    if not croniter.is_valid(expression):
        raise ValueError(f'{expression!r} is not a cron expression (e.g. "0 2 * * *")')
    return expression


CronExpression = Annotated[str, Field(min_length=1)]


class RepositorySettings(_Model):
    """Where backups go, and the key that opens them."""

    location: str = Field(min_length=1)
    s3_endpoint: str | None = None
    key_file: str | None = None
    passphrase_env: str | None = None
    # seconds one storage operation may take, retries included (STRONGROOM_STORAGE_DEADLINE
    # wins when set; default 60): an endpoint that never answers fails in one line after it
    storage_deadline: float | None = Field(default=None, gt=0)


class RetentionSettings(_Model):
    keep_last: int | None = Field(default=None, ge=0)
    keep_hourly: int | None = Field(default=None, ge=0)
    keep_daily: int | None = Field(default=None, ge=0)
    keep_weekly: int | None = Field(default=None, ge=0)
    keep_monthly: int | None = Field(default=None, ge=0)
    keep_yearly: int | None = Field(default=None, ge=0)
    keep_within: str | None = None
    keep_tags: list[str] = Field(default_factory=list)
    prune: bool = True

    @field_validator("keep_within")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    def policy(self, timezone: str) -> RetentionPolicy:
        return RetentionPolicy(
            keep_last=self.keep_last,
            keep_hourly=self.keep_hourly,
            keep_daily=self.keep_daily,
            keep_weekly=self.keep_weekly,
            keep_monthly=self.keep_monthly,
            keep_yearly=self.keep_yearly,
            keep_within=parse_duration(self.keep_within) if self.keep_within else None,
            keep_tags=frozenset(self.keep_tags),
            timezone=timezone,
        )


class HookSettings(_Model):
    """Shell commands run around every backup and restore of the target, however started
    (see ``services/hooks.py`` for their environment and what a failure does)."""

    pre_backup: list[str] = Field(default_factory=list)
    post_backup: list[str] = Field(default_factory=list)
    post_restore: list[str] = Field(default_factory=list)
    timeout_seconds: float = Field(default=900.0, gt=0, le=86400)  # per command


class VerifySettings(_Model):
    """A scheduled restore drill (``verify --restore``) of the target's newest backup."""

    schedule: CronExpression
    scratch_url: str | None = None
    scratch_url_env: str | None = None
    check_sql: str | None = None

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _check_cron(value)


class TargetSettings(_Model):
    """One database to back up."""

    url: str | None = None
    url_env: str | None = None
    schedule: dict[str, CronExpression] = Field(default_factory=dict)
    retention: RetentionSettings | None = None
    hooks: HookSettings = Field(default_factory=HookSettings)
    verify: VerifySettings | None = None
    stale_after: str | None = None  # override: warn when the newest backup is older

    @field_validator("schedule")
    @classmethod
    def _crons(cls, value: dict[str, str]) -> dict[str, str]:
        for tag, expression in value.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", tag):
                raise ValueError(f"schedule tag {tag!r} may use letters, digits, _ . - only")
            _check_cron(expression)
        return value

    @model_validator(mode="after")
    def _one_url(self) -> TargetSettings:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url or url_env")
        return self

    def database_url(self, env: Mapping[str, str]) -> str:
        if self.url is not None:
            return self.url
        value = env.get(str(self.url_env))
        if not value:
            raise UsageError(f"environment variable {self.url_env} (url_env) is not set")
        return value


class ChannelSettings(_Model):
    """A notification channel; secrets come from environment variables (``*_env``)."""

    type: Literal["slack", "webhook", "email"]
    name: str | None = None
    webhook_url: str | None = None
    webhook_url_env: str | None = None
    url: str | None = None
    url_env: str | None = None
    secret_env: str | None = None
    host: str | None = None
    port: int = Field(default=587, ge=1, le=65535)
    sender: str | None = None
    recipients: list[str] = Field(default_factory=list)
    username: str | None = None
    password_env: str | None = None
    starttls: bool = True

    @model_validator(mode="after")
    def _complete(self) -> ChannelSettings:
        if self.type == "slack" and not (self.webhook_url or self.webhook_url_env):
            raise ValueError("a slack channel needs webhook_url or webhook_url_env")
        if self.type == "webhook" and not (self.url or self.url_env):
            raise ValueError("a webhook channel needs url or url_env")
        if self.type == "email" and not (self.host and self.sender and self.recipients):
            raise ValueError("an email channel needs host, sender and recipients")
        return self

    @field_validator("webhook_url", "url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/?#\s]", value):
            raise ValueError("must be an http:// or https:// URL")  # never shows the secret
        return value


class NotificationSettings(_Model):
    on_failure: bool = True
    on_success: bool = False
    on_stale: bool = True
    size_change_percent: float | None = Field(default=None, gt=0)
    channels: list[ChannelSettings] = Field(default_factory=list)


class WebSettings(_Model):
    """``strongroom serve``: the proxies whose forwarded headers are believed, and how long
    a sign-in lasts."""

    # X-Forwarded-For/-Proto are read only from these addresses or networks (none: the
    # client is the connection's peer); STRONGROOM_TRUSTED_PROXIES wins when set
    trusted_proxies: list[str] = Field(default_factory=list)
    session_idle_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)
    session_max_hours: float = Field(default=12, gt=0, le=30 * 24)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        checked = []
        for item in value:
            try:
                checked.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError as exc:
                raise ValueError(
                    f"{item!r} is not an IP address or network (e.g. 10.0.0.1 or 10.0.0.0/8)"
                ) from exc
        return checked


class WalSettings(_Model):
    """``[wal]``: continuous archiving of PostgreSQL WAL (docs/design.md, "WAL archive and
    base backups")."""

    # health warns when the newest archived WAL is older than this (the recovery point
    # objective; a duration such as "15m", "1h")
    recovery_point: str = "15m"
    # a local folder: wal-push stores each segment there (fsynced) and returns; an uploader
    # (`strongroom wal-upload`, or the one inside `strongroom run`) moves it to the
    # repository. None: wal-push writes straight to the repository.
    spool: str | None = None

    @field_validator("recovery_point")
    @classmethod
    def _recovery_point(cls, value: str) -> str:
        parse_short_duration(value)
        return value

    @property
    def recovery_point_delta(self) -> timedelta:
        return parse_short_duration(self.recovery_point)


_SHORT_DURATION = re.compile(
    r"(?:(?P<h>[0-9]{1,4})h)?(?:(?P<m>[0-9]{1,5})(?:min|m))?(?:(?P<s>[0-9]{1,6})s)?"
)


def parse_short_duration(text: str) -> timedelta:
    """Parse a recovery point such as ``15m``, ``15min``, ``90s``, ``1h30m`` (hours,
    minutes, seconds, largest first; here ``m`` is minutes, unlike retention's months,
    because a recovery point is never months long). Raises ``ValueError`` naming the
    forms accepted, or when the duration is zero."""
    cleaned = text.strip()
    match = _SHORT_DURATION.fullmatch(cleaned)
    if not cleaned or match is None:
        raise ValueError(
            f"invalid duration {text[:40]!r}: use hours, minutes and seconds, largest "
            "first, such as '15m', '90s' or '1h30m'"
        )
    duration = timedelta(
        hours=int(match["h"] or 0), minutes=int(match["m"] or 0), seconds=int(match["s"] or 0)
    )
    if duration <= timedelta(0):
        raise ValueError(f"invalid duration {text[:40]!r}: must be longer than zero")
    return duration


class Settings(_Model):
    """The whole configuration."""

    timezone: str = "UTC"
    repository: RepositorySettings
    targets: dict[str, TargetSettings] = Field(default_factory=dict)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    wal: WalSettings = Field(default_factory=WalSettings)
    stale_grace: str = DEFAULT_STALE_GRACE

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return canonical_zone(value)

    @field_validator("targets")
    @classmethod
    def _target_names(cls, value: dict[str, TargetSettings]) -> dict[str, TargetSettings]:
        for name in value:
            problem = target_name_problem(normalized(name))
            if problem is not None:  # the same rule a backup applies (repository/names.py)
                raise ValueError(f"target name {name!r} is not allowed: {problem}")
        return value

    @field_validator("stale_grace")
    @classmethod
    def _grace(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def grace(self) -> timedelta:
        return parse_duration(self.stale_grace)

    def retention_for(self, target: str, env: Mapping[str, str]) -> RetentionPolicy:
        """The target's policy; else BACKUP_RETENTION_DAYS (or RETENTION_DAYS); else 7
        daily/4 weekly/12 monthly."""
        settings = self.targets.get(target)
        if settings is not None and settings.retention is not None:
            return settings.retention.policy(self.timezone)
        from_env = retention_from_environment(env)
        if from_env is not None:
            return replace_timezone(from_env[0], self.timezone)
        return replace_timezone(RetentionPolicy.default(), self.timezone)


def retention_from_environment(env: Mapping[str, str]) -> tuple[RetentionPolicy, str] | None:
    """``BACKUP_RETENTION_DAYS=N`` (or the scripts' ``RETENTION_DAYS=N``): keep everything
    younger than N days, and the variable's name; ``None`` when neither is set."""
    for name in RETENTION_DAYS_VARIABLES:
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        try:
            policy = RetentionPolicy.from_environment({RETENTION_DAYS_VARIABLE: raw})
        except ValueError as exc:
            raise UsageError(str(exc).replace(RETENTION_DAYS_VARIABLE, name)) from exc
        assert policy is not None
        return policy, name
    return None


# tzdata's own aliases for its copies and links that are no IANA names: the web UI hands the
# zone to the browser (Intl / uPlot), which knows only IANA names
_ZONE_COPIES = ("posix/", "right/")
_NOT_IANA = frozenset({"localtime", "posixrules", "Factory"})


def canonical_zone(value: str) -> str:
    """The IANA name of a time zone as configured: ``posix/Europe/Berlin`` and
    ``right/Europe/Berlin`` (tzdata's copies) become ``Europe/Berlin``; ``localtime``,
    ``posixrules`` and ``Factory`` (files of the zone database that name no zone) and unknown
    names raise ``ValueError`` with an example. Source of the names: the tz database's
    ``Makefile`` (posix/, right/ copies) and zic(8)."""
    name = value.strip()
    for prefix in _ZONE_COPIES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    if name in _NOT_IANA:
        raise ValueError(f"{value!r} names no time zone; name one, e.g. Europe/Berlin or UTC")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Berlin)") from exc
    return name


def replace_timezone(policy: RetentionPolicy, timezone: str) -> RetentionPolicy:
    from dataclasses import replace

    return replace(policy, timezone=timezone)


class ConfigError(UsageError):
    """The configuration is invalid; ``problems`` lists each one with field and line."""

    def __init__(self, path: str, problems: list[str]) -> None:
        first = problems[0] if problems else "invalid"
        more = (
            f" (and {len(problems) - 1} more; run: strongroom config check)"
            if len(problems) > 1
            else ""
        )
        super().__init__(f"{path}: {first}{more}")
        self.path = path
        self.problems = problems


# --- locating fields in the TOML text ------------------------------------------------------
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\"'.-]+)\s*=")


def _dotted(text: str) -> list[str]:
    return [part.strip().strip("\"'") for part in text.split(".")]


def locate_fields(text: str) -> dict[tuple[str, ...], int]:
    """Map each table/key path of a TOML text to its line number (arrays of tables get
    their index in the path)."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    array_counts: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            path = tuple(_dotted(header.group(2)))
            if header.group(1) == "[[":
                index = array_counts.get(path, 0)
                array_counts[path] = index + 1
                table = (*path, str(index))
            else:
                table = path
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*table, *_dotted(key.group(1))), number)
    return lines


def _line_of(loc: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> int | None:
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _problems(error: ValidationError, lines: dict[tuple[str, ...], int]) -> list[str]:
    problems = []
    for item in error.errors():
        loc = tuple(str(part) for part in item["loc"])
        field = ".".join(loc) or "(top level)"
        line = _line_of(loc, lines)
        where = f"line {line}: " if line else ""
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}{field}: {message}")
    return problems


def parse_toml(text: str, path: str = "strongroom.toml") -> dict[str, Any]:
    """The TOML text as a table; ``ConfigError`` when it is not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from exc


def parse_settings(
    text: str,
    path: str = "strongroom.toml",
    complete: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Settings:
    """Validate a TOML text; raise ``ConfigError`` listing every problem with its line.
    ``complete`` may add what the file leaves out before validation (the environment's
    values, ``services/settings_sources.py``)."""
    data = parse_toml(text, path)
    if complete is not None:
        data = complete(data)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, _problems(exc, locate_fields(text))) from exc
