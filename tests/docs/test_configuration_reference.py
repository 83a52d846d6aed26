"""docs/configuration.md documents every field of the settings model and every
environment variable strongroom reads; a new field or variable without a row fails here."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from strongroom.config import Settings
from strongroom.services.settings_sources import ENVIRONMENT_VARIABLES

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "configuration.md").read_text()
# variables strongroom sets for hooks, or for its own tests: written, not read
NOT_READ = {
    "STRONGROOM_HOOK",
    "STRONGROOM_TARGET",
    "STRONGROOM_BACKUP_ID",
    "STRONGROOM_ENGINE",
    "STRONGROOM_DATABASE",
    "STRONGROOM_SAFETY_BACKUP_ID",
    "STRONGROOM_OLD_KEPT_AS",
    "STRONGROOM_TEST_KILL_AT",
}


def _models(annotation: object) -> list[tuple[str, type[BaseModel]]]:
    """The models inside a field's type, with the path part they add (``.NAME`` for a
    dict's values, nothing for a list's items)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("", annotation)]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict:
        return [(".NAME" + part, model) for part, model in _models(args[1])]
    if origin in (list, typing.Union, types.UnionType):
        return [found for arg in args for found in _models(arg)]
    return []


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        for part, inner in _models(info.annotation):
            paths.extend(field_paths(inner, f"{path}{part}."))
    return paths


def test_the_walk_finds_nested_fields() -> None:
    paths = field_paths(Settings)
    assert "targets.NAME.retention.keep_daily" in paths
    assert "notifications.channels.url_env" in paths
    assert "repository.s3_endpoint" in paths


def test_every_settings_field_is_documented() -> None:
    missing = [p for p in field_paths(Settings) if f"| `{p}` |" not in PAGE]
    assert not missing, f"docs/configuration.md has no row for: {missing}"


def test_every_environment_variable_is_documented() -> None:
    missing = [v for v in ENVIRONMENT_VARIABLES if f"| `{v}` |" not in PAGE]
    assert not missing, f"docs/configuration.md has no row for: {missing}"


def test_every_variable_the_code_reads_is_listed() -> None:
    """strongroom's own variables and the scripts' names in the code are all listed in
    ``ENVIRONMENT_VARIABLES`` (so the test above covers them)."""
    pattern = re.compile(
        r'"((?:STRONGROOM|AWS|CLOUDFLARE|SLACK|SMTP|BACKUP|PG)_[A-Z0-9_]+|DATABASE_URL'
        r'|CRON_SECRET|S3_BUCKET|S3_BACKUP_BUCKET|RETENTION_DAYS)"'
    )
    found = set()
    for path in (ROOT / "src" / "strongroom").rglob("*.py"):
        found.update(pattern.findall(path.read_text()))
    unlisted = sorted(found - set(ENVIRONMENT_VARIABLES) - NOT_READ)
    assert not unlisted, f"read by the code but not in ENVIRONMENT_VARIABLES: {unlisted}"
