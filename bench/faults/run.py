"""The fault campaign's command line: ``make faults`` / ``python -m bench.faults``.

    make faults                                      # every kind, 20 trials each
    make faults FAULTS_ARGS="--kinds kill-swap,s3-reset --trials 5"
    .venv/bin/python -m bench.faults --quick         # a smoke run: 3 trials of each kind
    .venv/bin/python -m bench.faults --list-kinds

Trials run on ``--workers`` threads (each trial has its own repository copy and
databases), randomised from ``--seed`` (printed; each trial's choices depend only on the
seed, its kind and its number, not on the order trials finish). The table is printed and
written to ``--results``/faults.{md,json}. Exit status: 0 when the campaign ran (whatever
it found), 2 on a bad option, 1 when the harness itself could not start.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import secrets
import shlex
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from types import FrameType

from . import kinds_damage, kinds_kill, kinds_packs, kinds_race, kinds_s3
from .procs import ROOT
from .report import TrialRecord, markdown, rows, text_table, write
from .trial import Kind, Problem, Trial
from .world import SetupFailed, World, start_world

ALL_KINDS: list[Kind] = [
    *kinds_kill.KINDS,
    *kinds_s3.KINDS,
    *kinds_damage.KINDS,
    *kinds_packs.KINDS,
    *kinds_race.KINDS,
]
QUICK_TRIALS = 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults",
        description="Run strongroom's fault campaign against servers it starts itself.",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: new)")
    parser.add_argument("--trials", type=int, default=None, help="trials per kind (20)")
    parser.add_argument("--kinds", default=None, help="comma-separated kinds (default: all)")
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke run: {QUICK_TRIALS} trials of each kind"
    )
    parser.add_argument("--workers", type=int, default=2, help="trials in parallel (2)")
    parser.add_argument(
        "--timeout", type=float, default=20.0, help="seconds before a command counts as hung"
    )
    parser.add_argument(
        "--results", type=Path, default=ROOT / "bench" / "results", help="where faults.* go"
    )
    parser.add_argument(
        "--work", type=Path, default=ROOT / "bench" / "work" / "faults", help="scratch folder"
    )
    parser.add_argument("--keep", action="store_true", help="keep the trials' folders")
    parser.add_argument("--list-kinds", action="store_true", help="list the kinds and exit")
    args = parser.parse_args(argv)
    if args.trials is None:
        args.trials = QUICK_TRIALS if args.quick else 20
    if args.trials < 1 or args.workers < 1:
        parser.error("--trials and --workers must be at least 1")
    if args.seed is None:
        args.seed = secrets.randbelow(1_000_000)
    known = {kind.name: kind for kind in ALL_KINDS}
    if args.kinds:
        names = [name.strip() for name in args.kinds.split(",") if name.strip()]
        unknown = [name for name in names if name not in known]
        if unknown:
            parser.error(f"unknown kinds {', '.join(unknown)}; known: {', '.join(known)}")
        args.selected = [known[name] for name in names]
    else:
        args.selected = list(ALL_KINDS)
    return args


#: A command that failed this way met strongroom's code half-edited (its files changed
#: under the run): the trial runs once more, and counts as it ends then.
IN_FLUX = re.compile(r"\b(ImportError|ModuleNotFoundError|NameError|SyntaxError)\b")


def run_trial(world: World, kind: Kind, index: int, args: argparse.Namespace) -> TrialRecord:
    started = time.monotonic()
    record = _run_once(world, kind, index, args)
    if record.problem is not None and IN_FLUX.search(record.problem.message):
        first = record.problem.message[:200]
        record = _run_once(world, kind, index, args)
        record.notes.insert(0, f"run again after the product's code changed: {first}")
    record.seconds = time.monotonic() - started
    return record


def _run_once(world: World, kind: Kind, index: int, args: argparse.Namespace) -> TrialRecord:
    started = time.monotonic()
    trial = Trial(world, kind.name, index, args.seed, args.timeout)
    try:
        kind.run(trial)
    except Exception as exc:  # the harness's own failure: reported, never hidden
        last = traceback.format_exception_only(exc)[-1].strip()
        trial.add("unclear", "(harness)", None, f"harness error: {last}")
        trial.notes.append(traceback.format_exc(limit=3).replace("\n", " | ")[:600])
    finally:
        trial.close(keep=args.keep)
    return TrialRecord(
        kind=kind.name,
        index=index,
        verdict=trial.verdict,
        seconds=time.monotonic() - started,
        problem=trial.worst(),
        notes=trial.notes,
    )


def schedule(kinds: Sequence[Kind], trials: int) -> list[tuple[Kind, int]]:
    """Round-robin over the kinds, the costliest first, so a slow kind does not tail."""
    ordered = sorted(kinds, key=lambda kind: -kind.cost)
    return [(kind, index) for index in range(trials) for kind in ordered]


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_kinds:
        for kind in ALL_KINDS:
            print(f"{kind.name:<20} {kind.describe}")
        return 0
    signal.signal(signal.SIGTERM, _on_signal)
    command = "python -m bench.faults " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(
        f"fault campaign: seed {args.seed} (rerun with --seed {args.seed}), "
        f"{args.trials} trials x {len(args.selected)} kinds, {args.workers} workers",
        flush=True,
    )
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    try:
        needs = frozenset().union(*(kind.needs for kind in args.selected))
        world = start_world(args.work, needs)
    except (SetupFailed, OSError, RuntimeError) as exc:
        print(f"error: the campaign could not start: {exc}", file=sys.stderr)
        return 1
    print(f"servers and base repositories ready in {time.monotonic() - started:.1f} s", flush=True)
    records: list[TrialRecord] = []
    plan = schedule(args.selected, args.trials)
    lock = threading.Lock()
    try:
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            futures: dict[Future[TrialRecord], tuple[Kind, int]] = {
                pool.submit(run_trial, world, kind, index, args): (kind, index)
                for kind, index in plan
            }
            try:
                for done, future in enumerate(as_completed(futures), 1):
                    record = future.result()
                    with lock:
                        records.append(record)
                    _progress(done, len(plan), record)
            except KeyboardInterrupt:
                for future in futures:
                    future.cancel()
                raise
    except KeyboardInterrupt:
        print("interrupted: writing nothing", file=sys.stderr)
        world.stop()
        return 130
    finally:
        world.stop()
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    seconds = time.monotonic() - started
    table = rows(records, args.selected)
    print()
    print(text_table(table))
    text = markdown(
        table,
        records,
        args.selected,
        seed=args.seed,
        seconds=seconds,
        workers=args.workers,
        command=command,
        cpu_seconds=_cpu_seconds(),
        load=(load_start, os.getloadavg()[0]),
    )
    md_path, json_path = write(args.results, table, text)
    bad = [r for r in records if r.verdict != "clean"]
    print(f"\n{len(bad)} trials not clean; details in {md_path}")
    print(f"seed {args.seed}, {seconds:.0f} s; wrote {md_path} and {json_path}")
    return 0


def _cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (the commands)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _progress(done: int, total: int, record: TrialRecord) -> None:
    line = f"[{done:>3}/{total}] {record.kind} #{record.index}: {record.verdict}"
    line += f" ({record.seconds:.1f} s)"
    problem: Problem | None = record.problem
    if problem is not None:
        line += f" - {problem.command}: exit {problem.exit_code}: {problem.message[:200]}"
    if os.environ.get("FAULTS_DEBUG") and record.notes:
        line += "\n    notes: " + "; ".join(record.notes)
    print(line, flush=True)
