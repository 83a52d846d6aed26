"""Retention preview (what would be forgotten and why) and retention runs (a job)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from strongroom.services.forget import forget, plan
from strongroom.services.prune import prune
from strongroom.web import audit
from strongroom.web.actions.common import Caller
from strongroom.web.context import WebContext
from strongroom.web.jobs import JobProgress


def preview(ctx: WebContext, target: str | None = None) -> list[dict[str, Any]]:
    """Per target: the policy and each backup's keep/forget decision with its reasons."""
    repo = ctx.fresh_repository()
    now = datetime.now(UTC)
    result = []
    for name in [target] if target else ctx.target_names():
        policy = ctx.settings.retention_for(name, ctx.env)
        entries = plan(repo, policy, name, now)
        result.append(
            {
                "target": name,
                "policy": policy.describe(),
                "safety": policy.describe_safety(),
                "backups": [
                    {
                        "backup_id": e.manifest.backup_id,
                        "finished_at": e.manifest.finished_at,
                        "tags": list(e.manifest.tags),
                        "raw_size": e.manifest.raw_size,
                        "keep": e.keep,
                        "reasons": list(e.decision.reasons)
                        or [f"matches no rule of the policy ({policy.describe()})"],
                    }
                    for e in reversed(entries)
                ],
            }
        )
    return result


def start_retention(caller: Caller, target: str | None, run_prune: bool) -> str:
    """Apply each target's policy, then prune (unless told not to), on a job."""
    ctx = caller.ctx
    repo = ctx.repository()
    targets = [target] if target else ctx.target_names()

    def work(progress: JobProgress) -> dict[str, Any]:
        forgotten: list[str] = []
        for name in targets:
            progress.phase(f"retention of {name}")
            policy = ctx.settings.retention_for(name, ctx.env)
            forgotten += forget(repo, policy, target=name).forgotten
        freed = 0
        if run_prune:
            progress.phase("prune")
            freed = prune(repo).unreferenced_bytes
        audit.record(
            ctx.db,
            caller.name,
            "forget",
            f"ok: {len(forgotten)} backup(s) forgotten by policy",
            subject=target or "all targets",
            client=caller.client,
            detail=", ".join(forgotten) or None,
        )
        ctx.index.sync(repo)
        return {"forgotten": forgotten, "pruned_bytes": freed}

    return ctx.jobs.submit("retention", work, requested_by=caller.name, target=target)
