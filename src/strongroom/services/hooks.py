"""Hooks: the user's shell commands around backups and restores (``[targets.<name>.hooks]``).

Every backup of a target runs its hooks, however it was started (``strongroom backup``,
the web's "Back up now", the cron endpoint, the scheduler): ``services/backup.py``
runs them, once. Every restore that put a verified copy in place (``restore``,
``rollback``, a web restore) runs the ``post_restore`` hooks of the configured target
whose database the destination is (``services/restore.py``'s ``run_restore``).

- ``pre_backup``: before the dump starts. A failure: no backup is taken, the run is
  recorded as failed, :class:`HookFailed` (exit 8).
- ``post_backup``: after the manifest and the run record are written. A failure: the
  backup is kept and counts; :class:`HookFailedAfter` (exit 8) says so.
- ``post_restore``: after the swap. A failure does not undo the restore (the restored
  database stays in place); :class:`HookFailedAfter` (exit 8) says so.
- None run for safety backups, restore drills, single-table restores, dry runs, or a
  restore that did not verify (nothing was swapped in).

Each command runs with ``/bin/sh -c``, stdin from ``/dev/null``, in its own process group
(``engines/process.py``: it also gets SIGTERM if strongroom dies), with strongroom's
environment (so ``PATH`` and the variables that hold the database URLs,
such as a target's ``url_env``, reach it) plus ``STRONGROOM_HOOK``, ``STRONGROOM_TARGET``,
``STRONGROOM_ENGINE``, ``STRONGROOM_DATABASE`` (the database, password removed),
``STRONGROOM_BACKUP_ID`` (post_backup: the new backup; post_restore: the one restored),
and for post_restore ``STRONGROOM_SAFETY_BACKUP_ID`` and ``STRONGROOM_OLD_KEPT_AS`` when
there are any. strongroom adds no secret to it, and never passes one as an argument.
Output (stdout and stderr) is logged line by line at INFO (logger ``strongroom.hooks``,
redacted); the last line is quoted in the error. A command still running after the
target's ``timeout_seconds`` (default 900) is stopped: SIGTERM to its process group,
SIGKILL 5 s later; so is one running when strongroom is interrupted.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Generic, Literal, TypeVar

from strongroom.engines import open_engine
from strongroom.engines import process as children
from strongroom.engines.base import Engine
from strongroom.errors import StrongroomError
from strongroom.redaction import redact_text

if TYPE_CHECKING:  # pydantic models are slow to import; only a configuration needs them
    from strongroom.config import Settings

log = logging.getLogger("strongroom.hooks")

HookName = Literal["pre_backup", "post_backup", "post_restore"]
DEFAULT_TIMEOUT_SECONDS = 900.0
STOP_GRACE_SECONDS = 5.0
_LAST_LINE_CHARS = 200

R = TypeVar("R")


class HookFailed(StrongroomError):
    """A hook exited non-zero, timed out or could not start (exit code 8)."""

    exit_code = 8


class HookFailedAfter(HookFailed, Generic[R]):
    """A ``post_backup``/``post_restore`` hook failed after its job completed: the backup is
    kept, the restore stays in place. ``result`` is the job's outcome (a ``BackupReport``
    or a ``RestoreReport``)."""

    def __init__(self, message: str, result: R) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class TargetHooks:
    """The hooks of one target, the environment they run with, their timeout."""

    target: str | None = None  # None: no configured target (no hooks)
    pre_backup: tuple[str, ...] = ()
    post_backup: tuple[str, ...] = ()
    post_restore: tuple[str, ...] = ()
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def commands(self, which: HookName) -> tuple[str, ...]:
        return {
            "pre_backup": self.pre_backup,
            "post_backup": self.post_backup,
            "post_restore": self.post_restore,
        }[which]


def configured_settings(env: Mapping[str, str] | None = None) -> Settings | None:
    """The configuration named by ``STRONGROOM_CONFIG``, or ``None`` when it is not set
    (settings built from ``DATABASE_URL`` alone have no hooks). Raises ``ConfigError`` (a
    ``UsageError``) for a file that does not validate: better than running without the
    hooks it declares."""
    from strongroom.config import CONFIG_ENV
    from strongroom.services.settings_sources import load_settings

    env = os.environ if env is None else env
    path = env.get(CONFIG_ENV)
    return load_settings(path, env) if path else None


def hooks_of(
    settings: Settings | None, target: str, env: Mapping[str, str] | None = None
) -> TargetHooks:
    """The hooks of the configured target ``target`` (none when it is not configured)."""
    base = dict(os.environ if env is None else env)
    configured = settings.targets.get(target) if settings is not None else None
    if configured is None:
        return TargetHooks(env=base)
    hooks = configured.hooks
    return TargetHooks(
        target,
        tuple(hooks.pre_backup),
        tuple(hooks.post_backup),
        tuple(hooks.post_restore),
        hooks.timeout_seconds,
        base,
    )


def database_identity(engine: Engine) -> tuple[str, str, str]:
    """What makes two URLs the same database: engine, ``host:port`` (or socket) and
    database name for a server (the user and password do not matter); the real path of a
    SQLite file."""
    host_port = getattr(engine, "host_port", None)
    if callable(host_port):
        return engine.kind, str(host_port()), engine.database_name()
    return engine.kind, os.path.realpath(engine.describe()), ""


def destination_hooks(
    settings: Settings | None, engine: Engine, env: Mapping[str, str] | None = None
) -> TargetHooks:
    """The hooks of the configured target whose database ``engine`` is (by
    :func:`database_identity`; a target whose ``url_env`` is not set here cannot match).
    None when the destination is no configured target's database: restoring a copy
    elsewhere never runs the hooks of the database it came from."""
    env = os.environ if env is None else env
    if settings is not None:
        wanted = database_identity(engine)
        for name, target in sorted(settings.targets.items()):
            try:
                candidate = open_engine(target.database_url(env))
            except StrongroomError:
                continue
            if database_identity(candidate) == wanted:
                return hooks_of(settings, name, env)
    return TargetHooks(env=dict(env))


def run_hooks(hooks: TargetHooks, which: HookName, extra: Mapping[str, str | None]) -> None:
    """Run ``which`` hooks of ``hooks`` in order; the first failure raises ``HookFailed``
    and the rest do not run. ``extra``: variables added to the environment (``None``
    values are left out)."""
    commands = hooks.commands(which)
    if not commands:
        return
    env = dict(hooks.env)
    env.update({"STRONGROOM_HOOK": which, "STRONGROOM_TARGET": hooks.target or ""})
    env.update({key: value for key, value in extra.items() if value is not None})
    for command in commands:
        _run_one(command, env, which, hooks.timeout_seconds)


def _run_one(command: str, env: dict[str, str], which: str, timeout: float) -> None:
    log.info("%s hook: %s", which, command)
    shown = redact_text(command)  # the user's command may hold a URL with a password
    try:  # its own process group (stopped whole), and it dies with strongroom
        process = children.popen(
            ["/bin/sh", "-c", command],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as exc:
        raise HookFailed(f"{which} hook {shown!r} could not start: {exc.strerror}") from exc
    last: deque[str] = deque(maxlen=1)
    assert process.stdout is not None
    reader = threading.Thread(
        target=_log_output, args=(process.stdout, which, last), name="sr-hook", daemon=True
    )
    reader.start()
    try:
        status = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        children.stop(process, grace=STOP_GRACE_SECONDS)
        reader.join(timeout=1)
        raise HookFailed(
            f"{which} hook {shown!r} did not finish within {timeout:g} s and was stopped"
        ) from None
    except BaseException:  # interrupted: the hook does not outlive the command
        children.stop(process, grace=STOP_GRACE_SECONDS)
        raise
    # output a background child keeps writing is not waited for
    reader.join(timeout=2)
    if status == 0:
        return
    how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
    said = f" (last output: {last[0]})" if last else ""
    raise HookFailed(f"{which} hook {shown!r} {how}{said}")


def _log_output(stream: IO[bytes], which: str, last: deque[str]) -> None:
    with stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                last.append(redact_text(line)[:_LAST_LINE_CHARS])
                log.info("%s hook output: %s", which, line)


def run_pre_backup(hooks: TargetHooks, engine: Engine) -> None:
    """``pre_backup`` hooks, before a backup of ``engine``'s database; raises ``HookFailed``."""
    run_hooks(hooks, "pre_backup", _about(engine, None))


def run_post_backup(hooks: TargetHooks, report: R, backup_id: str, engine: Engine) -> None:
    """``post_backup`` hooks of a backup that is complete; a failure raises
    ``HookFailedAfter(result=report)`` saying the backup is kept."""
    try:
        run_hooks(hooks, "post_backup", _about(engine, backup_id))
    except HookFailed as exc:
        log.error("backup %s is kept; %s", backup_id, exc.message)
        raise HookFailedAfter(
            f"backup {backup_id} of {hooks.target} is complete and kept; then {exc.message}",
            report,
        ) from exc


def run_post_restore(
    hooks: TargetHooks,
    report: R,
    *,
    backup_id: str,
    engine: Engine,
    safety_backup_id: str | None,
    old_kept_as: str | None,
) -> None:
    """``post_restore`` hooks after ``backup_id`` was swapped into ``engine``'s database; a
    failure raises ``HookFailedAfter(result=report)`` saying the restore stays in place."""
    if not hooks.post_restore:
        return
    extra = _about(engine, backup_id)
    extra.update(STRONGROOM_SAFETY_BACKUP_ID=safety_backup_id, STRONGROOM_OLD_KEPT_AS=old_kept_as)
    try:
        run_hooks(hooks, "post_restore", extra)
    except HookFailed as exc:
        kept = f"; the replaced database is kept as {old_kept_as}" if old_kept_as else ""
        log.error("restore of %s is in place; %s", backup_id, exc.message)
        raise HookFailedAfter(
            f"the restore of {backup_id} into {engine.describe()} completed and verified and "
            f"stays in place{kept}; then {exc.message} (run it by hand)",
            report,
        ) from exc


def _about(engine: Engine, backup_id: str | None) -> dict[str, str | None]:
    return {
        "STRONGROOM_ENGINE": engine.kind,
        "STRONGROOM_DATABASE": engine.describe(),
        "STRONGROOM_BACKUP_ID": backup_id,
    }
