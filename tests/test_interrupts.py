"""Signals as exceptions (``strongroom.interrupts``), in real processes signalling
themselves: only the first signal raises, a deferred section finishes first, the third
signal ends the process at once, and a signal ignored at start stays ignored."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from strongroom import interrupts
from tests.helpers import REPO_ROOT


def run_script(body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        """
        import os, signal, sys, threading
        from strongroom import interrupts
        interrupts.install()
        def kill(signum=signal.SIGTERM):
            os.kill(os.getpid(), signum)
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_first_signal_raises_in_the_main_thread():
    result = run_script(
        """
        try:
            kill(signal.SIGTERM)
            print("not reached")
        except interrupts.Interrupted as exc:
            print(exc.name, exc.exit_code, isinstance(exc, KeyboardInterrupt))
        """
    )
    assert result.stdout.split() == ["SIGTERM", "143", "True"], result.stderr


def test_a_deferred_section_finishes_then_raises_with_its_outcome():
    result = run_script(
        """
        try:
            with interrupts.deferred() as outer:
                with interrupts.deferred():
                    kill(signal.SIGINT)
                    print("inner done")
                print("outer done", interrupts.pending())
                outer.outcome = "the swap had completed"
        except interrupts.Interrupted as exc:
            print("raised", exc.name, exc.exit_code, exc.outcome)
            print("last", interrupts.last() is exc)
        """
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "inner done"
    assert lines[1] == "outer done 2"
    assert lines[2] == "raised SIGINT 130 the swap had completed"
    assert lines[3] == "last True"
    assert "finishing the step under way" in result.stderr


def test_an_error_in_a_deferred_section_wins():
    result = run_script(
        """
        try:
            with interrupts.deferred():
                kill()
                raise ValueError("the swap failed")
        except interrupts.Interrupted:
            print("interrupted")
        except ValueError as exc:
            print("error", exc)
        """
    )
    assert result.stdout.strip() == "error the swap failed"


def test_later_signals_do_not_cut_the_cleanup_short_and_the_third_ends_it():
    result = run_script(
        """
        try:
            kill()
        except interrupts.Interrupted:
            kill()  # during the cleanup: only a note
            print("cleanup goes on", flush=True)
            kill()  # the third: at once
            print("not reached")
        """
    )
    assert result.returncode == 143
    assert result.stdout.strip() == "cleanup goes on"
    assert "still stopping after SIGTERM" in result.stderr
    assert "stopping at once" in result.stderr


def test_other_threads_are_not_interrupted_and_do_not_defer():
    result = run_script(
        """
        ready = threading.Event()
        def work():
            with interrupts.deferred():
                ready.set()
                import time; time.sleep(0.3)
        thread = threading.Thread(target=work)
        thread.start()
        ready.wait()
        try:
            kill()
        except interrupts.Interrupted:
            print("main interrupted")
        thread.join()
        print("thread finished")
        """
    )
    assert result.stdout.split("\n")[:2] == ["main interrupted", "thread finished"]


def test_a_signal_ignored_at_start_stays_ignored():
    script = textwrap.dedent(
        """
        import os, signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        from strongroom import interrupts
        interrupts.install()
        os.kill(os.getpid(), signal.SIGINT)
        print("still here")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "still here", result.stderr


def test_join_thread_accepts_a_thread_whose_start_a_signal_cut_short() -> None:
    """The engines' dump cleanups and the lock release join a thread whose start() may
    have been interrupted: plain join() raises RuntimeError there, which replaced the
    Interrupted being handled (exit 70 instead of 143 in CI)."""
    never_started = threading.Thread(target=lambda: None)
    with pytest.raises(RuntimeError):
        never_started.join()
    interrupts.join_thread(never_started)
    interrupts.join_thread(never_started, timeout=0.1)
    ran = threading.Event()
    started = threading.Thread(target=lambda: (time.sleep(0.05), ran.set()))
    started.start()
    interrupts.join_thread(started)
    assert ran.is_set()  # a started thread is still waited for
