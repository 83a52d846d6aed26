"""Which chunk size: new bytes after a day of churn, chunks per GB, CPU seconds per GB.

    .venv/bin/python bench/chunk_size.py                 # the benchmark database (scale 1.0)
    .venv/bin/python bench/chunk_size.py --scale 0.25    # quicker, on a quarter of it

Generates the benchmark database (``bench/datagen.py``) on a throwaway server, dumps it with
``pg_dump -Fc -Z0`` to a file, applies one day of churn (``datagen_churn.churn_day(day=1)``, as
``bench/run.py``'s repeat backup does), and dumps again. Then, for each average chunk size
(``--sizes``, KiB), both dumps are cut as a backup cuts them (FastCDC 2020 with min = avg/4
and max = avg*4, FastCDC's own defaults; forced cuts after the archive header and the TOC,
``engines/postgresql/dump_layout.py``) and every chunk is named with keyed BLAKE3
(``pipeline/hashing.py``). Per size:

* **new %**: bytes of the distinct chunks of the second dump that the first dump does not
  hold, over the second dump's size (what a repeat backup stores before compression);
* **chunks per GB** of the second dump (10^9 bytes), and its **mean chunk** size;
* **CPU s per GB**: process CPU time (user + sys) of cutting and naming the second dump,
  read from the page cache, on one thread, per 10^9 bytes.

Results: ``bench/results/chunk-size.{json,md}``, with the host's load average before and
after each size (other work on the host inflates the CPU column a little, not new %).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from strongroom.engines.postgresql.dump_layout import laid_out_stream
from strongroom.pipeline.chunking import ChunkerParams, iter_chunks
from strongroom.pipeline.hashing import ChunkNamer

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import datagen  # noqa: E402
import datagen_churn  # noqa: E402

SIZES_KIB = (16, 24, 32, 48, 64, 128, 512)
TARGET_NEW = 0.10  # issue 19: a repeat backup after one day of churn stores <= 10 % new
KEY = bytes(range(32))  # any fixed key: names only need to be equal for equal chunks
GB = 1e9


@dataclass(frozen=True)
class SizeResult:
    """One average chunk size's figures (see the module docstring for each)."""

    avg_kib: int
    min_bytes: int
    max_bytes: int
    new_percent: float
    new_bytes: int
    chunks: int  # of the second dump
    chunks_per_gb: float
    mean_chunk_bytes: int
    cpu_seconds_per_gb: float
    load_before: float
    load_after: float


def params_for(avg_kib: int) -> ChunkerParams:
    """FastCDC's recommended bounds around ``avg_kib`` KiB: min avg/4, max avg*4 (bytes)."""
    avg = avg_kib * 1024
    return ChunkerParams(min_size=avg // 4, avg_size=avg, max_size=avg * 4).validate()


def named_chunks(path: Path, params: ChunkerParams) -> tuple[list[tuple[str, int]], float]:
    """(``(name, size in bytes)`` of every chunk of the dump at ``path`` in order, CPU
    seconds spent cutting and naming them), cut with the dump's forced cuts."""
    namer = ChunkNamer(KEY)
    started = time.process_time()
    with path.open("rb") as raw:
        stream, cuts = laid_out_stream(raw)
        chunks = [(namer.name(c), len(c)) for c in iter_chunks(stream, params, cuts)]
    return chunks, time.process_time() - started


def measure(first: Path, second: Path, avg_kib: int) -> SizeResult:
    """The figures of one average size over the two dumps (files)."""
    params = params_for(avg_kib)
    load_before = os.getloadavg()[0]
    known = {name for name, _ in named_chunks(first, params)[0]}
    chunks, cpu = named_chunks(second, params)
    new_bytes, seen = 0, set(known)
    for name, size in chunks:
        if name not in seen:
            new_bytes += size
            seen.add(name)
    total = second.stat().st_size
    return SizeResult(
        avg_kib=avg_kib,
        min_bytes=params.min_size,
        max_bytes=params.max_size,
        new_percent=round(100 * new_bytes / total, 2),
        new_bytes=new_bytes,
        chunks=len(chunks),
        chunks_per_gb=round(len(chunks) / (total / GB)),
        mean_chunk_bytes=total // max(len(chunks), 1),
        cpu_seconds_per_gb=round(cpu / (total / GB), 3),
        load_before=round(load_before, 2),
        load_after=round(os.getloadavg()[0], 2),
    )


def markdown(config: dict[str, Any], dataset: dict[str, Any], results: list[SizeResult]) -> str:
    """The results file's text: the conditions, then one table row per size."""
    lines = [
        "# Chunk size: new data after one day of churn",
        "",
        f"`{config['command']}` on {config['date']}, PostgreSQL {config['postgresql']}, "
        f"{config['cores']} cores. Database {dataset['database_bytes'] / 1e6:,.0f} MB "
        f"(scale {config['scale']:g}); dumps (`pg_dump -Fc -Z0`) "
        f"{dataset['first_dump_bytes'] / 1e6:,.1f} MB and "
        f"{dataset['second_dump_bytes'] / 1e6:,.1f} MB; churn: {dataset['churn']}.",
        "",
        "FastCDC 2020, min = avg/4, max = avg*4, forced cuts after the archive header and TOC. "
        "New % = bytes of the second dump's distinct chunks not in the first / its size. "
        "CPU = cutting + keyed BLAKE3 naming of the second dump on one thread, from the page "
        "cache.",
        "",
        "| avg | min / max | new % | chunks per GB | mean chunk | CPU s per GB | load |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        mark = " ✓" if r.new_percent <= 100 * TARGET_NEW else ""
        lines.append(
            f"| {r.avg_kib} KiB | {r.min_bytes // 1024} / {r.max_bytes // 1024} KiB "
            f"| {r.new_percent:.2f}{mark} | {r.chunks_per_gb:,.0f} "
            f"| {r.mean_chunk_bytes / 1024:.1f} KiB | {r.cpu_seconds_per_gb:.2f} "
            f"| {r.load_before:.1f}-{r.load_after:.1f} |"
        )
    lines += ["", f"✓: meets the issue's target of at most {100 * TARGET_NEW:.0f} % new.", ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="database scale (1.0: ~500 MB)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in SIZES_KIB),
        help="average chunk sizes in KiB, comma-separated",
    )
    parser.add_argument("--work", type=Path, default=BENCH / "work")
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import run  # bench/run.py: the throwaway server and the scratch folder

    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join([".venv/bin/python bench/chunk_size.py", *given])
    with run.scratch(args.work.resolve(), keep=False) as work:
        server = run.start_server(work)
        try:
            server.create_database(run.DB)
            print(f"generating the database (scale {args.scale:g})", flush=True)
            with server.connect(run.DB) as conn:
                datagen.generate(conn, scale=args.scale, seed=args.seed)
                conn.execute("VACUUM (ANALYZE)")
                size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            url = server.url(run.DB)
            dumps = [work / "first.dump", work / "second.dump"]

            def dump(path: Path) -> None:
                with path.open("wb") as out:
                    subprocess.run(
                        [str(server.bin_dir / "pg_dump"), "-Fc", "-Z0", "-d", url],
                        stdout=out,
                        check=True,
                    )

            dump(dumps[0])
            print("churn: day 1", flush=True)
            with server.connect(run.DB) as conn:
                churn = datagen_churn.churn_day(conn, day=1, seed=args.seed)
            dump(dumps[1])
            with server.connect() as conn:
                version = conn.execute("SHOW server_version").fetchone()
        finally:
            with suppress(Exception):
                server.stop()
        results = []
        for avg in sizes:
            result = measure(dumps[0], dumps[1], avg)
            print(
                f"  {avg:>4} KiB: {result.new_percent:6.2f} % new, "
                f"{result.chunks_per_gb:>8,.0f} chunks/GB, "
                f"{result.cpu_seconds_per_gb:.2f} CPU s/GB (load {result.load_after:.1f})",
                flush=True,
            )
            results.append(result)
        dataset = {
            "database_bytes": int(size[0]) if size else 0,
            "first_dump_bytes": dumps[0].stat().st_size,
            "second_dump_bytes": dumps[1].stat().st_size,
            "churn": asdict(churn),
        }
    config = {
        "command": command,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "scale": args.scale,
        "seed": args.seed,
        "cores": os.cpu_count(),
        "postgresql": str(version[0]) if version else "",
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "chunk-size.json").write_text(
        json.dumps(
            {"config": config, "dataset": dataset, "sizes": [asdict(r) for r in results]},
            indent=2,
        )
        + "\n"
    )
    (args.results / "chunk-size.md").write_text(markdown(config, dataset, results))
    print(f"results: {args.results}/chunk-size.json, chunk-size.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
