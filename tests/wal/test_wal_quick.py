"""The quick wal-push into the spool (``cli.wal_quick``, docs/design.md "The WAL spool")
through the real entry point: the first push records the settings, the next ones take the
quick path (no tomllib, no logging imported); any changed input (a byte of the config, a
variable, the working directory) goes the whole way again and lands where the new
settings say; every case off the plain one (already spooled, conflict, foreign segment,
a recorded push failure, a new stream) gives the answers of the whole path; a push killed
mid-copy (SIGKILL, SIGTERM) leaves no file under the segment's name and its retry spools
it; a records folder another user could write is not trusted. Also: the name and header
checks without ``re`` never accept what ``engines.postgresql.wal`` refuses."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_cli_alone, text_ok
from tests.wal.test_wal_commands import SYSID, fails, segment

STREAM = f"postgresql-{SYSID}"
# prints which path ran: the quick one imports neither tomllib nor logging
PROBE = (
    "import sys, atexit\n"
    "atexit.register(lambda: sys.stderr.write('PATH=' + ('whole' if 'tomllib' in sys.modules"
    " or 'logging' in sys.modules else 'quick') + '\\n'))\n"
    "sys.argv = ['strongroom', *sys.argv[1:]]\n"
    "from strongroom.cli.entry import main\n"
    "main()\n"
)


@pytest.fixture
def quick(tmp_path: Path) -> dict[str, Path]:
    """A repository, a data directory (pg_control, pg_wal/), strongroom.toml naming a
    spool, and a private temp folder for the settings records."""
    datadir = tmp_path / "data"
    (datadir / "global").mkdir(parents=True)
    (datadir / "pg_wal").mkdir()
    (datadir / "global" / "pg_control").write_bytes(SYSID.to_bytes(8, "little") + bytes(8184))
    config = tmp_path / "strongroom.toml"
    config.write_text(
        f'[repository]\nlocation = "{tmp_path / "repo"}"\nkey_file = "{tmp_path / "k"}"\n'
        '[wal]\nspool = "spool"\n'
    )
    temp = tmp_path / "temp"
    temp.mkdir(mode=0o700)
    text_ok(run_cli_alone("init", "--config", str(config), cwd=tmp_path))
    return {"data": datadir, "config": config, "spool": tmp_path / "spool", "tmp": tmp_path,
            "temp": temp}  # fmt: skip


def _env(q: dict[str, Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])
    env["HOME"] = str(q["tmp"])
    env["TMPDIR"] = str(q["temp"])
    env.update(extra)
    return env


def _push(
    q: dict[str, Path], name: str, data: bytes | None = None, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    if data is not None:
        (q["data"] / "pg_wal" / name).write_bytes(data)
    return subprocess.run(
        [sys.executable, "-c", PROBE, "wal-push", "--config", str(q["config"]), *args,
         f"pg_wal/{name}"],
        env=_env(q, **env), cwd=q["data"], capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def _path(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("PATH=")]
    assert lines, result.stderr
    return lines[-1].removeprefix("PATH=")


def _name(n: int) -> str:
    return f"0000000100000000000000{n:02X}"


def test_second_push_is_quick_and_any_changed_input_goes_the_whole_way(
    quick: dict[str, Path],
) -> None:
    q = quick
    first, second = _push(q, _name(1), segment(_name(1))), _push(q, _name(2), segment(_name(2)))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert (_path(first), _path(second)) == ("whole", "quick")
    for n in (1, 2):
        assert (q["spool"] / STREAM / _name(n)).read_bytes() == segment(_name(n))
    records = list((q["temp"] / f"strongroom-{os.getuid()}").glob("wal-push-*"))
    assert len(records) == 1 and str(q["config"]) not in records[0].read_text()  # a digest
    # the config now names another spool: the record is not used, the new spool is
    q["config"].write_text(q["config"].read_text().replace('"spool"', '"spool2"'))
    moved = _push(q, _name(3), segment(_name(3)))
    assert moved.returncode == 0 and _path(moved) == "whole", moved.stderr
    assert (q["tmp"] / "spool2" / STREAM / _name(3)).is_file()
    assert not (q["spool"] / STREAM / _name(3)).exists()
    assert _path(_push(q, _name(4), segment(_name(4)))) == "quick"
    assert (q["tmp"] / "spool2" / STREAM / _name(4)).is_file()
    # a variable (the spool's own, or any other) changes the inputs too
    other = q["tmp"] / "spool3"
    by_env = _push(q, _name(5), segment(_name(5)), STRONGROOM_WAL_SPOOL=str(other))
    assert by_env.returncode == 0 and _path(by_env) == "whole", by_env.stderr
    assert (other / STREAM / _name(5)).is_file()
    assert _path(_push(q, _name(6), segment(_name(6)), STRONGROOM_WAL_SPOOL=str(other))) == "quick"
    assert (other / STREAM / _name(6)).is_file()
    unrelated = _push(q, _name(7), segment(_name(7)), SOME_VARIABLE="1")
    assert _path(unrelated) == "whole" and (q["tmp"] / "spool2" / STREAM / _name(7)).is_file()
    # a bad configuration after a recorded one: the whole path's error, nothing spooled
    q["config"].write_text(q["config"].read_text() + "[wal\n")
    fails(_push(q, _name(8), segment(_name(8))), 2, "strongroom.toml")
    assert not (q["tmp"] / "spool2" / STREAM / _name(8)).exists()


def test_cases_off_the_plain_one_answer_as_the_whole_path(quick: dict[str, Path]) -> None:
    q = quick
    assert _push(q, _name(16), segment(_name(16))).returncode == 0  # records the settings
    # the same content again: success, nothing rewritten; other content: exit 7
    before = (q["spool"] / STREAM / _name(16)).stat().st_mtime_ns
    again = _push(q, _name(16), segment(_name(16)))
    assert again.returncode == 0 and _path(again) == "whole", again.stderr
    assert (q["spool"] / STREAM / _name(16)).stat().st_mtime_ns == before
    fails(_push(q, _name(16), segment(_name(16), seed=2)), 7, "already in the WAL spool")
    # another cluster's segment: exit 7 naming both identifiers, not spooled
    foreign = _push(q, _name(17), segment(_name(17), sysid=SYSID + 1))
    fails(foreign, 7, f"belongs to the cluster with system identifier {SYSID + 1}")
    assert not (q["spool"] / STREAM / _name(17)).exists()
    # no page header at all: exit 7
    fails(_push(q, _name(18), bytes(16 * 1024 * 1024)), 7, "no valid page header")
    # not a WAL name: exit 2 from the whole path
    fails(_push(q, "RECOVERYXLOG", b"x"), 2, "not a WAL file name")
    # a history file (not whole 4 KiB blocks: copied buffered) and a new stream's folder
    history = _push(q, "00000002.history", b"1\t0/3000000\tno recovery target specified\n")
    assert history.returncode == 0, history.stderr
    streamed = _push(q, _name(19), segment(_name(19)), "--stream", "postgresql-other")
    assert streamed.returncode == 0 and _path(streamed) == "whole", streamed.stderr
    again = _push(q, _name(20), segment(_name(20)), "--stream", "postgresql-other")
    assert again.returncode == 0 and _path(again) == "quick", again.stderr
    assert (q["spool"] / "postgresql-other" / _name(20)).read_bytes() == segment(_name(20))
    # a recorded push failure is cleared by the next push, which the whole path makes
    status = q["spool"] / "status.json"
    failed = {"push_failed": {"file": "X", "error": "no space left", "stream": STREAM}}
    status.write_bytes(json.dumps(failed).encode().ljust(4096))
    cleared = _push(q, _name(21), segment(_name(21)))
    assert cleared.returncode == 0 and _path(cleared) == "whole", cleared.stderr
    assert "push_failed" not in json.loads(status.read_bytes())
    assert _path(_push(q, _name(22), segment(_name(22)))) == "quick"
    waiting = sorted(p.name for p in (q["spool"] / STREAM).iterdir())
    assert waiting == [*(_name(n) for n in (16, 21, 22)), "00000002.history"]


def test_push_killed_mid_copy_leaves_no_segment_and_its_retry_spools_it(
    quick: dict[str, Path],
) -> None:
    """SIGKILL and SIGTERM while the quick path copies (a 256 MiB file under a segment's
    name, its header stating 256 MiB segments; with --stream: no system identifier
    check): PostgreSQL sees a failure (killed; exit 143 with one error line), no file is
    under the segment's name (a temp file SIGKILL left is no WAL name: never uploaded),
    and the retry spools the whole file."""
    q = quick
    big = 1 << 28
    assert _push(q, _name(32), segment(_name(32)), "--stream", "s").returncode == 0  # records
    # a long page header stating 256 MiB segments (a segment's size must be its header's)
    head = struct.pack("=HHIQIIQII", 0xD110, 0x0002, 1, 0, 0, 0, SYSID, big, 8192)
    head = head.ljust(8192, b"\x01")
    for n, signum in ((33, signal.SIGKILL), (34, signal.SIGTERM)):
        source = q["data"] / "pg_wal" / _name(n)
        with source.open("wb") as handle:
            handle.write(head)
            handle.truncate(big)
        folder = q["spool"] / "s"
        proc = subprocess.Popen(
            [sys.executable, "-c", PROBE, "wal-push", "--config", str(q["config"]),
             "--stream", "s", f"pg_wal/{_name(n)}"],
            env=_env(q), cwd=q["data"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if any(p.name.startswith(f".tmp-{_name(n)}") for p in folder.iterdir()):
                break
            time.sleep(0.001)
        assert proc.poll() is None, "the push ended before the kill: no mid-copy case"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert not (folder / _name(n)).exists()  # nothing under the segment's name
        if signum == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL
        else:
            assert proc.returncode == 143, err
            errors = [line for line in err.splitlines() if line.startswith("error:")]
            assert errors == ["error: interrupted by SIGTERM; stopped cleanly; nothing "
                              "unfinished was recorded"], err  # fmt: skip
            assert not list(folder.glob(f".tmp-{_name(n)}-*"))  # removed on the way out
        retry = _push(q, _name(n), None, "--stream", "s")
        assert retry.returncode == 0, retry.stderr
        assert (folder / _name(n)).stat().st_size == big
        with (folder / _name(n)).open("rb") as handle:
            assert handle.read(8192) == head
        (folder / _name(n)).unlink()
        source.unlink()
    waiting = run_cli_alone("wal-upload", "--once", "--config", str(q["config"]), cwd=q["tmp"])
    assert waiting.returncode == 0, waiting.stderr  # the SIGKILL's temp file is passed over


def test_records_others_could_write_are_not_trusted(quick: dict[str, Path]) -> None:
    q = quick
    assert _push(q, _name(48), segment(_name(48))).returncode == 0
    assert _path(_push(q, _name(49), segment(_name(49)))) == "quick"
    records = q["temp"] / f"strongroom-{os.getuid()}"
    os.chmod(records, 0o777)
    try:
        assert _path(_push(q, _name(50), segment(_name(50)))) == "whole"
    finally:
        os.chmod(records, 0o700)
    # a record whose key is not this push's is not followed
    record = next(records.glob("wal-push-*"))
    key, _, rest = record.read_text().partition("\n")
    record.write_text(f"{key[::-1]}\n{rest}")
    assert _path(_push(q, _name(51), segment(_name(51)))) == "whole"
    assert (q["spool"] / STREAM / _name(51)).is_file()
    assert _path(_push(q, _name(52), segment(_name(52)))) == "quick"  # recorded again


def test_name_and_header_checks_agree_with_the_wal_module() -> None:
    from strongroom.cli.wal_quick import header_system_identifier, wal_kind
    from strongroom.engines.postgresql.wal import parse_wal_name, segment_system_identifier
    from strongroom.errors import UsageError

    rng = random.Random(7)
    names = [
        "000000010000000000000001", "000000010000000000000001.partial",
        "000000010000000000000001.00000028.backup", "00000002.history", "0000000100000000000000",
        "000000010000000000000001.", "00000001000000000000000g", "0000000100000000000000011",
        "00000002.history.partial", "000000010000000000000001.0000002.backup", ".history",
        "000000010000000000000001.00000028.partial", "\uff10" * 2 + "0000001000000000000001", "",
        "000000010000000000000001/..", "00000002.HISTORY", "0000000a0000000000000001",
    ]  # fmt: skip
    alphabet = "0123456789ABCDEFa.hpbtisryckupl"
    names += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 44))) for _ in range(3000)]
    names += [rng.choice(names[:4])[: rng.randint(0, 44)] for _ in range(500)]
    for name in names:
        try:
            expected: str | None = parse_wal_name(name).kind
        except UsageError:
            expected = None
        assert wal_kind(name) == expected, name
    import struct

    for info, sysid in ((2, SYSID), (0, SYSID), (2, 0), (3, 1), (6, 2**64 - 1)):
        head = struct.pack("=HHIQIIQII", 0xD110, info, 1, 0, 0, 0, sysid, 1 << 24, 8192)
        assert header_system_identifier(head) == segment_system_identifier(head)
    assert header_system_identifier(b"short") is None
