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
        '        def pack_writer(): return type("Session", (), {})()\n'
        "try:\n"
        "    backup._ChunkWriter(Repo, 1)\n"
        "finally:\n"
        "    print(m._done)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", "False", "True"]


_RETAINED = """
import sys
from strongroom import malloc_arenas
if sys.argv[1] == "fixed":
    assert malloc_arenas.limit_arenas()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
big = bytearray(16 << 20)  # freed: glibc's dynamic threshold rises to 16 MiB
big[::4096] = b"x" * len(big[::4096])
del big
before = rss()
blocks, pins = [], []
for _ in range(40):  # 2 MiB blocks with small live objects between them (no trimming)
    block = bytearray(2 << 20)
    block[::4096] = b"y" * len(block[::4096])
    blocks.append(block)
    pins.append(bytes(64 * 1024))
del blocks
print(rss() - before)
"""


def test_freed_blocks_of_a_mib_or_more_leave_the_process():
    """After a 16 MiB block is freed, glibc's default serves later 2 MiB blocks from its
    arenas and keeps their space when they are freed (a backup's packs: RSS crept up to
    259-289 MB at 10 GB); with the threshold fixed they are unmapped when freed."""

    def retained(mode):
        out = subprocess.run(
            [sys.executable, "-c", _RETAINED, mode], capture_output=True, text=True, check=True
        )
        return int(out.stdout)

    assert retained("default") > 60 << 20  # 80 MiB of freed blocks kept
    assert retained("fixed") < 12 << 20  # only the small live objects (2.5 MiB) remain
