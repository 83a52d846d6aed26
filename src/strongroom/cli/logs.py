"""Logging for the command line: stderr, human or JSON lines, secrets redacted."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from strongroom.logcontext import current
from strongroom.redaction import redact_text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with passwords and secrets removed, and attaches the
    current log context (backup id, target)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        record.strongroom_context = dict(current())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, backup_id, target."""

    def format(self, record: logging.LogRecord) -> str:
        context: dict[str, str] = getattr(record, "strongroom_context", {})
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "backup_id": context.get("backup_id"),
            "target": context.get("target"),
        }
        if record.exc_info:
            document["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(document)


class HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context: dict[str, str] = getattr(record, "strongroom_context", {})
        where = " ".join(f"{k}={v}" for k, v in context.items())
        prefix = f"{record.levelname} {record.name}"
        return (
            f"{prefix} [{where}]: {record.getMessage()}"
            if where
            else f"{prefix}: {record.getMessage()}"
        )


def configure_logging(level: int, log_format: str = "human") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else HumanFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
