"""malloc_arenas: glibc accepts the limit once per process; backups and restores set it
before their threads start."""

import subprocess
import sys


def test_glibc_takes_the_arena_limit_once_and_a_backup_sets_it():
    script = (
        "from strongroom import malloc_arenas as m\n"
        "print(m.limit_arenas(), m.limit_arenas())\n"
        "m._done = False\n"
        "from strongroom.services import backup\n"
        "class Repo:\n"
        "    class chunks:\n"
        "        @staticmethod\n"
        "        def pack_writer(): return None\n"
        "try:\n"
        "    backup._ChunkWriter(Repo, 1)\n"
        "finally:\n"
        "    print(m._done)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", "False", "True"]
