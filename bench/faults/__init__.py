"""strongroom's fault campaign: ``make faults`` (``python -m bench.faults --help``).

It starts its own PostgreSQL cluster (``src/strongroom_servers``), moto's S3 server and,
per S3 trial, a fault-injecting proxy in front of it (``strongroom_servers.s3proxy``), then
runs the real ``strongroom`` command line under faults: kill -9 at random moments and at
each swap step, S3 errors, throttling, resets, truncated and corrupted bodies and a
black-hole endpoint, damaged repositories, wrong keys, and commands racing each other.

Every trial is judged *clean*, *lost*, *hung* or *unclear* (``trial.py``); the table goes
to ``bench/results/faults.{md,json}``. The modules:

* ``world.py``: servers, the application-shaped database and its fingerprints, the base
  repositories every trial copies.
* ``procs.py``: running the ``strongroom`` command line with a timeout, or killed at a
  moment; ``trial.py``: one trial's context: its commands, their verdicts, the oracles.
* ``kinds_kill.py``, ``kinds_s3.py``, ``kinds_damage.py``, ``kinds_packs.py`` (kill -9
  mid-repack, damaged packs and index objects), ``kinds_race.py``: the kinds.
* ``report.py``: the table, Markdown and JSON; ``run.py``: the command line.
"""
