"""Reading ``py-spy record --threads --format raw`` output (bench/profile_path.py).

A raw line is ``thread (TID);function (file:line);... COUNT``, outermost frame first.
Two readings:

* :func:`cpu_categories`: samples taken without ``--idle`` (a thread that runs, or is
  runnable, at the sample), each put in the category of its innermost strongroom frame
  (``CATEGORIES``); a sample whose innermost frame waits (``WAITING``: a pool worker
  waiting for work, a lock, the server) is counted apart. On a loaded host a runnable
  thread waiting for a core counts too, so these are shares, not CPU seconds.
* :func:`main_thread_phases`: samples taken with ``--idle`` of the main thread only (every
  sample is 1/rate seconds of wall time), put in the phase of the command it was in
  (``PHASES``, innermost match first): where the wall time of a backup or restore goes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

# py-spy frames -> category: the innermost frame containing the pattern wins.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("zstd", "pipeline/compression.py"),
    ("encryption", "pipeline/encryption.py"),
    ("encryption", "aead.py"),
    ("BLAKE3 (names, stream)", "pipeline/hashing.py"),
    ("FastCDC chunking", "pipeline/chunking.py"),
    ("dump layout (header/TOC)", "dump_layout.py"),
    ("statistics query", "postgresql/stats.py"),
    ("storage writes/reads", "storage/"),
    ("packs / chunk store", "repository/packs.py"),
    ("packs / chunk store", "repository/pack_index.py"),
    ("packs / chunk store", "repository/chunks.py"),
    ("pipe to/from the tool", "engines/process.py"),
    ("temp dump file (write, data offsets)", "engines/postgresql/restore.py"),
    ("temp dump file (write, data offsets)", "engines/postgresql/data_offsets.py"),
    ("stream read loop", "repository/repository.py"),
    ("backup pipeline (futures, locks)", "services/backup.py"),
    ("thread pool machinery", "concurrent/futures"),
    ("thread pool machinery", "threading.py"),
    ("imports / start-up", "<frozen importlib"),
)
WAITING = (
    "concurrent/futures/thread.py:81",
    "threading.py",
    "selectors.py",
    "psycopg/connection.py",
    "psycopg/waiting.py",
    "queue.py",
)
WAITING_LABEL = "(waiting: pool, locks, server)"
# Main-thread phases of ``strongroom backup`` and ``strongroom restore`` (innermost first).
PHASES: tuple[tuple[str, str], ...] = (
    ("imports / start-up", "<frozen importlib"),
    ("pg_restore (run_tool: --list, -j)", "run_tool ("),
    ("pg_restore streamed (pipe_into)", "pipe_into ("),
    ("pg_restore steps after the stream (restore_overlap: waiting)", "_Overlap._wait_running ("),
    ("pg_restore steps during the stream (restore_overlap: start, poll)", "_Overlap._start ("),
    ("pg_restore steps during the stream (restore_overlap: start, poll)", "_Overlap._poll ("),
    ("materialise: read, decrypt, write the temp dump", "run_pg_restore_parallel ("),
    ("verification scan", "table_stats ("),
    ("swap into place", "swap_in ("),
    ("restore records", "restore_record ("),
    ("restore: checks, create database", "PostgresEngine.restore ("),
    ("plan (inspect, checks, manifest)", "plan_restore ("),
    ("safety backup", "run_backup ("),
    ("settle earlier swaps", "settle_interrupted_swaps ("),
    ("dump + chunk + store loop", "_back_up ("),
    ("command line, repository open", "strongroom/cli/"),
)


def _lines(raw: Path) -> Iterator[tuple[str, list[str], int]]:
    """(thread label, frames outermost first, samples) of each raw line."""
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        parts = stack.split(";")
        yield parts[0], parts[1:], int(count_text)


def _match(frames: Sequence[str], table: Sequence[tuple[str, str]], default: str) -> str:
    for frame in reversed(frames):
        for name, pattern in table:
            if pattern in frame:
                return name
    return default


def cpu_categories(raw: Path, rate: int) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """(seconds sampled per category, the 15 innermost frames sampled most) of ``raw``."""
    categories: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for _thread, frames, samples in _lines(raw):
        leaf = frames[-1] if frames else "(no Python frame)"
        leaves[leaf] += samples
        waiting = not frames or any(w in leaf for w in WAITING)
        categories[WAITING_LABEL if waiting else _match(frames, CATEGORIES, "other Python")] += (
            samples
        )
    return (
        {k: round(v / rate, 2) for k, v in categories.most_common()},
        [(k, round(v / rate, 2)) for k, v in leaves.most_common(15)],
    )


def main_thread_phases(raw: Path, rate: int, main_tid: int) -> dict[str, float]:
    """Wall seconds of the main thread (``thread (main_tid)``) per phase, from ``--idle``
    samples; the other threads are left out."""
    phases: Counter[str] = Counter()
    label = f"({main_tid})"
    for thread, frames, samples in _lines(raw):
        if label in thread:
            phases[_match(frames, PHASES, "other")] += samples
    return {k: round(v / rate, 2) for k, v in phases.most_common()}
