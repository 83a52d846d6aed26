"""Run the strongroom command line with another number of pack upload threads.

    python bench/sr_workers.py N strongroom-arguments...

strongroom has no setting for it: ``strongroom.repository.pack_session.UPLOAD_WORKERS`` (2) is a
module constant, read when a backup opens its pack session. This launcher sets it to N, then
runs ``strongroom.cli.entry.main`` as the ``strongroom`` script would. The benchmark's S3
step runs every compared backup through it (the default too), so all pay the same start-up.
"""

from __future__ import annotations

import sys

import strongroom.repository.pack_session as pack_session


def main() -> None:
    pack_session.UPLOAD_WORKERS = int(sys.argv[1])
    sys.argv = ["strongroom", *sys.argv[2:]]
    from strongroom.cli.entry import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
