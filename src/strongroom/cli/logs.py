"""Logging for the command line: stderr, secrets redacted from every record."""

from __future__ import annotations

import logging

from strongroom.redaction import redact_text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with passwords and secrets removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        return True


def configure_logging(level: int) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("botocore").setLevel(max(level, logging.WARNING))
    logging.getLogger("boto3").setLevel(max(level, logging.WARNING))
