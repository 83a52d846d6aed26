"""``wal-push`` into the spool with nothing but the interpreter, ``os`` and ``mmap``.

PostgreSQL starts ``archive_command`` once per 16 MiB segment and waits for it; during a
bulk load the load's sessions hold the host's cores, so every millisecond of CPU the push
spends at start-up is a millisecond it also waits. ``cli.wal_fast`` still imports about
40 ms of CPU (logging, tomllib and re, dataclasses, pathlib, the settings' modules), more
than the copy and fsync of the segment itself. This module imports none of them.

How: the settings of a push are a pure function of its inputs (the options, the whole
environment, the working directory, the configuration file's bytes, the user, the code
that reads them). When ``cli.wal_fast`` has resolved them to a spool folder, it records
``sha256(inputs) -> spool folder`` in ``<temp folder>/strongroom-<uid>/wal-push-<hash>``
(the tempfiles folder: 0700, this user's, checked). :func:`run_quick` computes the same
hash (reading the configuration file again: a changed byte is another hash) and, when
the record is there, pushes with :func:`services.spool_files.durable_copy`; the hash
holds no secret, only a digest.

It takes only the plain case: the stream's folder and the 4 KiB status file exist, no
push failure is recorded, the file is not spooled already, the name and the segment's
header check out (a segment's header states the file's size; a ``.history`` always goes
the whole way, where its content is checked), the copy succeeds (it never replaces a
file: a push of the same name that got there first is compared there). Anything else
(and a first push, or a first push after any input changed) returns without a trace (a
temp file is removed), and ``cli.wal_fast`` does the whole push: its error lines, exit
codes and status records are the only ones. Signals are handled as ``interrupts`` does
(128 + N, the temp file removed, one ``error:`` line); the temp folder is not swept here
(every other command does it; a push into the spool leaves nothing there).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # (typing: ~8 ms to import)
    from collections.abc import Mapping

VERSION = "strongroom wal-push settings 1"
CACHE_PREFIX = "wal-push-"
CACHE_KEEP = 64  # records kept per user (several clusters, several settings: with 8,
# a ninth cluster pushing round robin evicted the record the next one needed, and so on)
STATUS_SIZE = 4096  # bytes: services.wal_spool.STATUS_SIZE
CONFIG_VARIABLE = "STRONGROOM_CONFIG"
CONFIG_FILE = "strongroom.toml"
# The modules whose code decides the settings: a changed one is another hash.
_DECIDING = ("services/settings_sources.py", "services/repository_access.py", "config.py",
             "cli/wal_fast.py", "cli/wal_quick.py")  # fmt: skip
_VOLATILE = ("_",)  # bash's last command: no setting reads it, and it changes per caller
_RESOLVING = ("--repo", "--key-file", "--s3-endpoint", "--config", "--spool")
_VALUE_OPTIONS = ("--stream", *_RESOLVING)
_FLAGS = {"wal-push": (), "wal-fetch": ("--snapshots",)}
_ARGUMENTS = {"wal-push": 1, "wal-fetch": 2}
_HEX = frozenset("0123456789ABCDEF")
_SIGNALS = {1: "SIGHUP", 2: "SIGINT", 15: "SIGTERM"}
STOPPED_CLEANLY = "stopped cleanly; nothing unfinished was recorded"  # cli.failures'


class WalArgs:
    """A WAL command line as Click would read it: positional arguments, ``--name value``
    options (the last one given wins) and flags."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.arguments: list[str] = []
        self.options: dict[str, str] = {}
        self.flags: set[str] = set()

    def get(self, name: str) -> str | None:
        return self.options.get(name)


def parse(argv: list[str]) -> WalArgs | None:
    """``argv`` (the command, then its arguments) read by hand; ``None`` for anything but
    a plain, complete call of ``wal-push``/``wal-fetch`` (Typer then answers)."""
    if not argv or argv[0] not in _ARGUMENTS:
        return None
    args = WalArgs(argv[0])
    tokens = iter(argv[1:])
    only_arguments = False
    for token in tokens:
        if only_arguments or token == "-" or not token.startswith("-"):
            args.arguments.append(token)
            continue
        if token == "--":
            only_arguments = True
            continue
        name, equals, value = token.partition("=")
        if name in _VALUE_OPTIONS:
            if not equals:
                value = next(tokens, "")
            if not value:
                return None
            args.options[name] = value
        elif token in _FLAGS[args.command]:
            args.flags.add(token)
        else:
            return None
    if len(args.arguments) != _ARGUMENTS[args.command] or not all(args.arguments):
        return None
    return args


# --- the settings record ----------------------------------------------------------------
def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def settings_key(options: Mapping[str, str], env: Mapping[str, str] | None = None) -> str | None:
    """The hex sha256 of everything the settings of a WAL command depend on; ``None``
    when one of them cannot be read (then nothing is recorded or recalled)."""
    env = os.environ if env is None else env
    try:
        cwd = os.getcwd()
        chosen = (options.get("--config") or "").strip() or env.get(CONFIG_VARIABLE, "").strip()
        path = chosen or os.path.join(cwd, CONFIG_FILE)
        content = _read(path) if chosen or os.path.isfile(path) else None
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        stamps = []
        for name in _DECIDING:
            info = os.stat(os.path.join(package, name))
            stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
    except (OSError, ValueError):
        return None
    resolving = sorted((k, v) for k, v in options.items() if k in _RESOLVING)
    variables = sorted((k, v) for k, v in env.items() if k not in _VOLATILE)
    facts = (VERSION, sys.version, os.getuid(), os.geteuid(), cwd, resolving, variables,
             path, stamps)  # fmt: skip
    material = repr(facts).encode("utf-8", "surrogateescape")
    material += b"\0-" if content is None else b"\0+" + content
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # (hashlib: ~3 ms, for OpenSSL)
        from hashlib import sha256
    return str(sha256(material).hexdigest())


def _records() -> str | None:
    """The folder of this user's records (the tempfiles folder), ``None`` when it is not
    there or not this user's alone."""
    names = ("TMPDIR", "TEMP", "TMP")  # tempfile.gettempdir's; its folder is checked below
    temp = next((v for v in (os.environ.get(n) for n in names) if v), "/tmp")  # noqa: S108
    folder = os.path.join(temp, f"strongroom-{os.getuid()}")
    try:
        info = os.lstat(folder)
    except OSError:
        return None
    if not (info.st_mode & 0o170000 == 0o040000 and info.st_uid == os.getuid()):
        return None
    return None if info.st_mode & 0o077 else folder


def recall(key: str) -> str | None:
    """The spool folder recorded for ``key``; ``None`` without a record."""
    folder = _records()
    if folder is None:
        return None
    try:
        fd = os.open(os.path.join(folder, CACHE_PREFIX + key[:32]), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_uid != os.getuid():
            return None
        text = os.read(fd, 65536).decode("ascii", "replace")
    finally:
        os.close(fd)
    recorded, _, spool = text.partition("\n")
    if recorded != key or not spool.endswith("\n"):
        return None
    try:
        return os.fsdecode(bytes.fromhex(spool[:-1]))
    except ValueError:
        return None


def remember(key: str, spool: str) -> None:
    """Record that the settings hashed as ``key`` name the spool folder ``spool`` (best
    effort: a record that cannot be written only keeps pushes on the longer path)."""
    folder = _records()
    if folder is None:
        from strongroom import tempfiles

        try:
            tempfiles.private_dir()  # creates the folder (0700, this user's)
        except OSError:  # (no usable temp folder: the push itself must not fail for it)
            return
        folder = _records()
        if folder is None:
            return
    record = os.path.join(folder, CACHE_PREFIX + key[:32])
    tmp = f"{record}.{os.getpid()}.tmp"
    try:
        with open(tmp, "x", encoding="ascii") as handle:
            handle.write(f"{key}\n{os.fsencode(spool).hex()}\n")
        os.replace(tmp, record)
        kept = sorted(
            (os.stat(os.path.join(folder, n)).st_mtime, n)
            for n in os.listdir(folder)
            if n.startswith(CACHE_PREFIX) and not n.endswith(".tmp")
        )
        for _, name in kept[:-CACHE_KEEP]:
            os.unlink(os.path.join(folder, name))
    except OSError:
        try:  # noqa: SIM105 (contextlib: ~4 ms to import on the quick path)
            os.unlink(tmp)
        except OSError:
            pass


# --- the push ---------------------------------------------------------------------------
def wal_kind(name: str) -> str | None:
    """``engines.postgresql.wal.parse_wal_name``'s kind of ``name`` (segment, partial,
    backup, history) without ``re``; ``None`` for anything else (a test holds the two
    together: this one never accepts what that one refuses)."""
    base, dot, suffix = name.partition(".")
    if not base or not set(base) <= _HEX:
        return None
    if not dot:
        return "segment" if len(base) == 24 else None
    if len(base) == 24 and suffix == "partial":
        return "partial"
    if len(base) == 8 and suffix == "history":
        return "history"
    label, dot, backup = suffix.partition(".")
    if len(base) == 24 and len(label) == 8 and set(label) <= _HEX and backup == "backup":
        return "backup"
    return None


def header_system_identifier(head: bytes) -> int | None:
    """``engines.postgresql.wal.segment_system_identifier`` of a segment's first 40 bytes
    (the long page header: ``=HHIQIIQII``, native byte order)."""
    if len(head) < 40:
        return None
    info = int.from_bytes(head[2:4], sys.byteorder)
    sysid = int.from_bytes(head[24:32], sys.byteorder)
    if not info & 0x0002 or sysid == 0:
        return None
    return sysid


def stream_ok(name: str) -> bool:
    """Whether ``name`` is a log stream name (``repository/logs.py``'s rule, without
    ``re``): a letter or digit, then up to 127 of letters, digits, ``.``, ``_``, ``-``."""
    return (
        0 < len(name) <= 128
        and name.isascii()
        and name[0].isalnum()
        and all(c.isalnum() or c in "._-" for c in name)
    )


def header_segment_size(head: bytes) -> int | None:
    """``engines.postgresql.wal.segment_size`` of a segment's first 40 bytes: the
    segment size its long page header states (a power of two, 1 MiB to 1 GiB)."""
    if header_system_identifier(head) is None:
        return None
    size = int.from_bytes(head[32:36], sys.byteorder)
    return None if size < (1 << 20) or size > (1 << 30) or size & (size - 1) else size


def _control_system_identifier() -> int | None:
    try:
        with open(os.path.join("global", "pg_control"), "rb") as handle:
            head = handle.read(8)
    except OSError:
        return None
    return int.from_bytes(head, sys.byteorder) if len(head) == 8 else None


def _status_clear(spool: str) -> bool:
    """Whether the spool's status file is there at full size and records no push
    failure (else ``services.wal_spool`` prepares it, or clears the failure)."""
    try:
        fd = os.open(os.path.join(spool, "status.json"), os.O_RDONLY)
    except OSError:
        return False
    try:
        return os.fstat(fd).st_size >= STATUS_SIZE and b'"push_failed"' not in os.read(fd, 65536)
    finally:
        os.close(fd)


def push(args: WalArgs, spool: str) -> bool:
    """Copy the WAL file ``args`` names into ``spool`` durably when it is the plain case
    (the module's docstring); ``False`` (nothing left behind) otherwise."""
    from strongroom.services.spool_files import UPLOADED, durable_copy

    path = args.arguments[0]
    name = os.path.basename(path)
    kind = wal_kind(name)
    if kind in (None, "history") or not _status_clear(spool):  # (a history: checked there)
        return False
    stream, system_identifier = args.get("--stream"), None
    if stream is not None and not stream_ok(stream):
        return False  # (`--stream ..` would copy beside the spool: refused there)
    if stream is None:
        system_identifier = _control_system_identifier()
        if system_identifier is None:
            return False
        stream = f"postgresql-{system_identifier}"
    folder = os.path.join(spool, stream)
    for spooled in (os.path.join(folder, name), os.path.join(spool, UPLOADED, stream, name)):
        try:
            os.lstat(spooled)
            return False  # spooled or uploaded already: the same content, or a conflict
        except FileNotFoundError:
            pass
        except OSError:
            return False
    if not os.path.isdir(folder):
        return False
    try:
        source = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # (a FIFO)
    except OSError:
        return False
    try:
        info = os.fstat(source)
        if info.st_mode & 0o170000 != 0o100000:  # no regular file
            return False
        head = os.pread(source, 40, 0)
        if kind == "segment" and header_segment_size(head) != info.st_size:
            return False  # no header, or cut: refused there (wal_spool._check_file)
        found = header_system_identifier(head)  # a partial's may be missing, not another's
        allowed = (system_identifier,) if kind == "segment" else (None, system_identifier)
        if system_identifier is not None and kind != "backup" and found not in allowed:
            return False
        durable_copy(source, info.st_size, folder, name)
    except OSError:  # (FileExistsError: another push was quicker; there, it is compared)
        return False
    finally:
        os.close(source)
    return True


# --- signals, as strongroom.interrupts handles them -------------------------------------
class _Stopped(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Signals:
    """SIGINT, SIGTERM and SIGHUP raise ``_Stopped`` (the first one), note on stderr
    (the second), end the process at once (the third), as ``interrupts.install``; once
    ``done``, the push is durable and the first one only notes."""

    def __init__(self) -> None:
        import _signal  # type: ignore[import-not-found]  # (signal: ~6 ms, for its enums)

        self.module = _signal
        self.received = 0
        self.first: int | None = None
        self.done = False
        self.previous: dict[int, object] = {}
        for signum in _SIGNALS:
            if _signal.getsignal(signum) is not _signal.SIG_IGN:
                self.previous[signum] = _signal.signal(signum, self.handle)

    def handle(self, signum: int, _frame: object) -> None:
        self.received += 1
        name = _SIGNALS.get(signum, f"signal {signum}")
        if self.received >= 3:
            _note(f"{name} again: stopping at once without cleaning up")
            os._exit(128 + signum)
        if self.first is not None:
            _note(f"still stopping after {_SIGNALS.get(self.first)}: cleaning up (one more "
                  "signal stops at once and may leave a staged copy behind)")  # fmt: skip
            return
        self.first = signum
        if self.done:
            _note(f"{name}: already finishing")
            return
        raise _Stopped(signum)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            self.module.signal(signum, handler)


def _note(text: str) -> None:
    try:  # noqa: SIM105 (contextlib: ~4 ms to import)
        os.write(2, f"strongroom: {text}\n".encode())
    except OSError:
        pass


def run_quick(argv: list[str]) -> None:
    """Push and exit 0 when ``argv`` is a ``wal-push`` whose settings are recorded and the
    push is the plain case; else return, having changed nothing (``cli.wal_fast`` then
    runs the whole command)."""
    if not argv or argv[0] != "wal-push":
        return
    args = parse(argv)
    if args is None or (os.environ.get("STRONGROOM_LOG_FORMAT") or "human") not in (
        "human",
        "json",
    ):
        return
    key = settings_key(args.options)
    spool = recall(key) if key is not None else None
    if spool is None:
        return
    signals = _Signals()
    try:
        pushed = push(args, spool)
        signals.done = pushed  # (a signal before this line: exit 128 + N, PostgreSQL retries)
    except _Stopped as stop:
        signals.done = True  # the temp file is gone: only the message is left
        name = _SIGNALS.get(stop.signum, f"signal {stop.signum}")
        sys.stderr.write(f"error: interrupted by {name}; {STOPPED_CLEANLY}\n")
        sys.stderr.flush()
        sys.exit(128 + stop.signum)
    if pushed:
        sys.exit(0)
    signals.restore()
