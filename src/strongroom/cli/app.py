"""The strongroom command line: one Typer app, thin commands calling services."""

from __future__ import annotations

from strongroom.cli.backup_cmd import backup
from strongroom.cli.cat_cmd import cat
from strongroom.cli.catalog_cmd import list_backups, show
from strongroom.cli.index_cmd import index_app
from strongroom.cli.init_cmd import init
from strongroom.cli.maintenance_cmd import check, prune, stats
from strongroom.cli.ops_cmd import config_app, health, run, schedule
from strongroom.cli.recover_cmd import recover
from strongroom.cli.restore_cmd import restore, rollback
from strongroom.cli.restore_point_cmd import restore_point
from strongroom.cli.retention_cmd import forget_cmd, pin, unpin
from strongroom.cli.runner import INTERRUPTED_EXIT, STOPPED_CLEANLY, UNEXPECTED_EXIT, new_app
from strongroom.cli.runner import run as run_app
from strongroom.cli.verify_cmd import verify
from strongroom.cli.wal_cmd import wal_fetch_cmd, wal_push_cmd, wal_upload_cmd
from strongroom.cli.wal_receive_cmd import wal_receive_cmd
from strongroom.cli.web_cmd import reindex, serve, token_app, user_app

__all__ = ["INTERRUPTED_EXIT", "STOPPED_CLEANLY", "UNEXPECTED_EXIT", "app", "main"]

app = new_app("Encrypted, deduplicated, verified database backups.")

app.command()(init)
app.command()(backup)
app.command("list")(list_backups)
app.command()(show)
app.command()(restore)
app.command()(rollback)
app.command()(recover)
app.command()(verify)
app.command()(cat)
app.command("forget")(forget_cmd)
app.command()(pin)
app.command()(unpin)
app.command()(prune)
app.command()(check)
app.command()(stats)
app.add_typer(index_app, name="index")
app.command()(run)
app.command()(schedule)
app.command()(health)
app.add_typer(config_app, name="config")
app.command()(serve)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.command()(reindex)
app.command("wal-push")(wal_push_cmd)
app.command("wal-fetch")(wal_fetch_cmd)
app.command("wal-receive")(wal_receive_cmd)
app.command("wal-upload")(wal_upload_cmd)
app.command("restore-point")(restore_point)


def main() -> None:
    """Entry point of the whole command line (see ``cli.runner.run``)."""
    run_app(app)


if __name__ == "__main__":
    main()
