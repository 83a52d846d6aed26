"""Interrupted swaps are settled before a command uses a database (docs/design.md, "Swap
journal").

:func:`settle_interrupted_swaps` is the one hook: every service that opens a database for
work calls it first (``backup.run_backup``, ``restore.plan_restore`` and
``restore.restore_tables``, ``drill.verify_by_restore``), so the CLI, the web and the
scheduler all pass through it. ``strongroom recover`` calls :func:`recover_swaps`.
"""

from __future__ import annotations

import logging

from strongroom.engines.base import Engine, SwapRecovery
from strongroom.errors import DatabaseAuthFailed, DatabaseUnreachable, RestoreFailed

log = logging.getLogger("strongroom.swaps")


def recover_swaps(engine: Engine) -> list[SwapRecovery]:
    """Settle every interrupted swap ``engine`` can see (its server, or its file); what
    was found, one line each (``strongroom recover`` prints them). Raises
    ``DatabaseUnreachable``/``DatabaseAuthFailed`` when it cannot look."""
    return engine.recover_swaps()


def settle_interrupted_swaps(engine: Engine) -> list[SwapRecovery]:
    """The hook run before a command uses ``engine``'s database: settle what a killed swap
    left (logging one line per swap). Not being able to look is left to the command's own
    connection to report. Raises ``RestoreFailed`` when a swap into this very database
    could not be settled or is still in progress: the database may be closed, missing, or
    carry the journal as its comment, so neither a backup nor a restore may go on."""
    try:
        results = recover_swaps(engine)
    except (DatabaseUnreachable, DatabaseAuthFailed) as exc:
        log.debug("could not look for interrupted swaps: %s", exc)
        return []
    for result in results:
        if result.outcome in ("completed", "undone"):
            log.warning("%s", result.message)
        else:
            log.error("%s", result.message)
    for result in results:
        if result.database == engine.database_name() and result.outcome in ("failed", "busy"):
            raise RestoreFailed(result.message)
    return results
