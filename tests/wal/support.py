"""A folder the PostgreSQL server's OS user can use: repository, key file, strongroom.toml and
a ``strongroom`` launcher it can run (as root the server runs as ``strongroom-test``, who
cannot enter /root where the virtualenv's interpreter lives: the launcher then runs the
system's python3 of the same version with the virtualenv's packages)."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from strongroom_servers import ServerUnavailable
from strongroom_servers.common import run_as_user
from strongroom_servers.postgres import PgServer, start_server
from tests.helpers import REPO_ROOT


@dataclass
class WalPlace:
    """Everything a server's archive_command / restore_command needs, owned by its user."""

    root: Path
    user: pwd.struct_passwd | None

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def key(self) -> Path:
        return self.root / "repo.key"

    @property
    def config(self) -> Path:
        return self.root / "strongroom.toml"

    @property
    def launcher(self) -> Path:
        return self.root / "strongroom"

    def archive_command(self) -> str:
        return f"'{self.launcher}' wal-push --config '{self.config}' %p"

    def env(self) -> dict[str, str]:
        """The environment the commands run with (none of strongroom's variables)."""
        from strongroom.services.settings_sources import ENVIRONMENT_VARIABLES

        env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT_VARIABLES}
        env["HOME"] = str(self.root)
        env.pop("XDG_CONFIG_HOME", None)
        return env

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """``strongroom ARGS`` through the launcher, as the server's OS user."""
        extra: dict[str, object] = {}
        if self.user is not None:
            extra = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        return subprocess.run(
            [str(self.launcher), *args],
            env=self.env(),
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **extra,  # type: ignore[arg-type]
        )

    def chown(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _python_for(user: pwd.struct_passwd | None) -> str:
    if user is None:
        return sys.executable
    wanted = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{wanted}", "/usr/bin/python3", "/usr/local/bin/" + wanted):
        if os.path.exists(candidate):
            probe = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.stdout.strip() == str(tuple(sys.version_info[:2])):
                return candidate
    raise RuntimeError(f"no {wanted} the user {user.pw_name} can run")


def _can_import(python: str, user: pwd.struct_passwd | None, paths: list[str]) -> bool:
    extra: dict[str, object] = {}
    if user is not None:
        extra = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    probe = subprocess.run(
        [python, "-c", "import strongroom.cli.app"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.pathsep.join(paths)},
        cwd="/",
        capture_output=True,
        check=False,
        timeout=120,
        **extra,  # type: ignore[arg-type]
    )
    return probe.returncode == 0


def _readable_paths(python: str, user: pwd.struct_passwd | None) -> list[str]:
    """PYTHONPATH entries from which the server's OS user imports strongroom and what it
    needs: the checkout's ``src`` and the venv's site-packages when that user can read
    them; else (a checkout in a 0700 folder, as ``mktemp -d`` makes) a copy of strongroom
    and of the packages it imports, made once per machine in a world-readable temp folder
    (built aside and renamed, so parallel test workers share it)."""
    purelib = sysconfig.get_paths()["purelib"]
    direct = [str(REPO_ROOT / "src"), purelib]
    if _can_import(python, user, direct):
        return direct
    _import_everything_strongroom_may_load()
    names = {"strongroom"}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None) or ""
        if file.startswith(purelib + os.sep):
            names.add(Path(file).relative_to(purelib).parts[0])
    site = Path(purelib)
    names |= {p.name for p in site.glob("*.libs")}  # shared libraries of binary wheels
    digest = hashlib.sha256(
        "\n".join([*sorted(names), str(REPO_ROOT), str(_tree_stamp())]).encode()
    ).hexdigest()[:16]
    shared = Path(tempfile.gettempdir()) / f"strongroom-wal-lib-{digest}"
    if not shared.exists():
        building = Path(tempfile.mkdtemp(prefix="strongroom-wal-lib-", dir=shared.parent))
        for name in sorted(names):
            source = REPO_ROOT / "src" / name if name == "strongroom" else site / name
            if source.is_dir():
                shutil.copytree(source, building / name, ignore=shutil.ignore_patterns("*.pyc"))
            elif source.exists():
                shutil.copy2(source, building / name)
        # compiled once here by the interpreter that will run it (the folder is not
        # writable by the server's OS user, and PYTHONDONTWRITEBYTECODE may be set): else
        # every strongroom process compiles what it imports, ~1 s of CPU per command
        subprocess.run(
            [python, "-m", "compileall", "-q", "-j", "0", str(building)],
            capture_output=True,
            check=False,
            timeout=600,
        )
        for path in [building, *building.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644 | (path.stat().st_mode & 0o111))
        try:
            building.rename(shared)
        except OSError:  # another worker was first
            shutil.rmtree(building, ignore_errors=True)
    return [str(shared)]


def _import_everything_strongroom_may_load() -> None:
    """Every strongroom module, and what they load only on first use (psycopg, rich's
    markdown help through markdown_it), so the copy holds every package a command the
    server's OS user runs may import (a kill test's ``--help`` once failed for want of
    markdown_it)."""
    import importlib
    import pkgutil

    import rich.markdown  # noqa: F401

    import strongroom

    for info in pkgutil.walk_packages(strongroom.__path__, "strongroom."):
        importlib.import_module(info.name)


def _tree_stamp() -> float:
    """The newest modification time under src/strongroom (a changed checkout, a new copy)."""
    return max(p.stat().st_mtime for p in (REPO_ROOT / "src" / "strongroom").rglob("*.py"))


def make_place() -> WalPlace:
    """A fresh folder under /tmp owned by the server's user, with an initialised
    repository (key file mode 0600, owned by that user), strongroom.toml and launcher."""
    user = run_as_user()
    root = Path(tempfile.mkdtemp(prefix="strongroom-wal-"))
    place = WalPlace(root, user)
    os.chmod(root, 0o755)
    place.chown(root)
    python = _python_for(user)
    paths = _readable_paths(python, user)
    place.launcher.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH='{os.pathsep.join(paths)}' exec '{python}' -m strongroom.cli.entry \"$@\"\n"
    )
    os.chmod(place.launcher, 0o755)
    place.config.write_text(f'[repository]\nlocation = "{place.repo}"\nkey_file = "{place.key}"\n')
    place.chown(place.config)
    result = place.run("init", "--config", str(place.config))
    assert result.returncode == 0, result.stderr
    assert (place.key.stat().st_mode & 0o777) == 0o600
    return place


def places() -> Iterator[WalPlace]:
    place = make_place()
    try:
        yield place
    finally:
        place.remove()


def start_archiving(place: WalPlace, settings: dict[str, str]) -> PgServer:
    """A PostgreSQL server whose ``archive_command`` is ``place``'s ``wal-push``, with
    ``settings`` on top (``archive_mode``, ``wal_level`` ...); when no server can start,
    ``place`` is removed and the test fails in one line."""
    try:
        return start_server({"archive_command": place.archive_command(), **settings})
    except ServerUnavailable as exc:
        place.remove()
        pytest.fail(str(exc), pytrace=False)


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def archived_up_to(server: PgServer, timeout: float = 90.0) -> str:
    """Switch to a new segment and wait until the archiver has pushed the old one; its
    name."""
    segment = server.query("postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = server.query(
            "postgres",
            "SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver",
        )[0]
        if row[0] is not None and row[0] >= segment:
            return str(segment)
        time.sleep(0.2)
    raise AssertionError(f"segment {segment} not archived: {row}; log: {tail(server.log_file)}")


def stop_copy(place: WalPlace, server: PgServer, datadir: Path) -> None:
    """Stop (immediately) a restored copy in ``datadir`` as ``place``'s OS user."""
    extra: dict[str, Any] = {}
    if place.user is not None:
        extra = {"user": place.user.pw_uid, "group": place.user.pw_gid, "extra_groups": []}
    subprocess.run(
        [str(server.bin_dir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"],
        capture_output=True,
        check=False,
        timeout=60,
        **extra,
    )
