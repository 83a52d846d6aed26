"""strongroom: encrypted, deduplicated, verified database backups."""

__version__ = "0.1.0"
