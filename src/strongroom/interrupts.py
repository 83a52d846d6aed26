"""Signals as exceptions, so that a stopped command still cleans up after itself.

:func:`install` (the command line's entry point calls it first, in the main thread) makes
SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` (a ``KeyboardInterrupt``) in the main
thread. Every ``finally`` block and context manager on the way out then runs, as for
Ctrl-C: staged copies are dropped, temp files removed, repository locks released, child
processes stopped (``engines.process``). The exit code is 128 + the signal's number (130
for SIGINT, 143 for SIGTERM, 129 for SIGHUP).

Only the first signal raises. Later ones do not cut the cleanup short: the second prints a
note, the third ends the process at once (``os._exit``), leaving what the next start
removes (``tempfiles``) and what leases expire (repository locks).

:func:`deferred` marks a step that must not be cut in the middle, such as a swap: a signal
arriving inside waits until the step is done, then raises (with ``outcome`` saying what the
finished step did). A signal that was ignored when strongroom started (``nohup``, a shell's
background job) stays ignored.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType, TracebackType

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
FORCE_AFTER = 3  # the third signal ends the process without cleaning up


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupted(KeyboardInterrupt):
    """A signal stopped the command (raised in the main thread by :func:`install`'s handler).

    ``outcome``: what the work in progress left behind, for the error line (e.g. "the
    original database … is untouched"); set by the code that knows, first one wins."""

    def __init__(self, signum: int, outcome: str | None = None) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum
        self.outcome = outcome

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal_name(self.signum)


def note_outcome(exc: BaseException, outcome: str) -> None:
    """Record ``outcome`` on an :class:`Interrupted` that has none yet (others: nothing)."""
    if isinstance(exc, Interrupted) and exc.outcome is None:
        exc.outcome = outcome


class _State:
    def __init__(self) -> None:
        self.received = 0  # signals handled since install()
        self.first: int | None = None  # the first one
        self.depth = 0  # deferred sections the main thread is in
        self.pending: int | None = None  # a signal waiting for the sections to end
        self.last: Interrupted | None = None  # the one raised
        self.holding = False  # hold(): the work is done, the process is exiting


_state = _State()


def _note(text: str) -> None:
    """A line on stderr from the handler (never through logging or Rich: their locks may
    be held by the very code the signal interrupted)."""
    with contextlib.suppress(OSError):
        os.write(2, f"strongroom: {text}\n".encode())


def handle(signum: int, _frame: FrameType | None) -> None:
    """The signal handler :func:`install` sets (see the module docstring)."""
    _state.received += 1
    name = signal_name(signum)
    if _state.received >= FORCE_AFTER:
        _note(f"{name} again: stopping at once without cleaning up")
        os._exit(128 + signum)
    if _state.first is not None:  # a second signal: the first is being handled
        doing = "finishing the step under way" if _state.pending else "cleaning up"
        _note(
            f"still stopping after {signal_name(_state.first)}: {doing} (one more signal "
            "stops at once and may leave a staged copy behind)"
        )
        return
    _state.first = signum
    if _state.depth > 0:
        _state.pending = signum
        if _state.holding:
            _note(f"{name}: already finishing")
        else:
            _note(f"{name}: finishing the step under way first (it must not be cut short)")
        return
    raise interrupt(signum)


def interrupt(signum: int, outcome: str | None = None) -> Interrupted:
    """A new :class:`Interrupted` for ``signum``, remembered as :func:`last` (raise it)."""
    exc = Interrupted(signum, outcome)
    _state.last = exc
    return exc


def last() -> Interrupted | None:
    """The :class:`Interrupted` raised last, if any (with its outcome, once noted)."""
    return _state.last


def hold() -> None:
    """From now on a signal in the main thread no longer raises (the work is done; the
    process is only reporting and exiting); a third one still ends it at once."""
    if threading.current_thread() is threading.main_thread() and not _state.holding:
        _state.holding = True
        _state.depth += 1


def install() -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread.
    Does nothing outside the main thread; a signal ignored at start stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue
        signal.signal(signum, handle)


def reset() -> None:
    """Forget the signals handled so far (tests; a long-running process between runs)."""
    global _state
    _state = _State()


class Section:
    """A :func:`deferred` section; set ``outcome`` once the step is done, for the message of
    an interrupt that waited for it."""

    def __init__(self) -> None:
        self.outcome: str | None = None
        self._counted = False

    def __enter__(self) -> Section:
        if threading.current_thread() is threading.main_thread():
            _state.depth += 1
            self._counted = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._counted:
            return
        _state.depth -= 1
        if exc is not None or _state.depth > 0 or _state.pending is None:
            return  # an error ends the command anyway; it is the better message
        signum, _state.pending = _state.pending, None
        raise interrupt(signum, self.outcome)


def deferred() -> Section:
    """``with deferred() as section:`` a signal in the main thread waits until the block is
    done, then raises :class:`Interrupted` (``section.outcome`` as its outcome). Nested
    sections defer until the outermost ends. Other threads never get signals: no effect."""
    return Section()


def pending() -> int | None:
    """The signal waiting for a deferred section to end, if any."""
    return _state.pending


def join_thread(thread: threading.Thread, timeout: float | None = None) -> None:
    """Join ``thread`` in a cleanup path where a signal may have cut its ``start()`` short.

    ``Thread.start`` waits for the new thread to say it runs; a signal raised in that wait
    (or just before the call) leaves a thread that ``join`` refuses with ``RuntimeError``
    ("cannot join thread before it is started"), which would replace the ``Interrupted``
    being handled. Such a thread either never runs or runs at once; callers stop it with
    their own flag before joining, so it is not waited for.
    """
    with contextlib.suppress(RuntimeError):
        thread.join(timeout)
