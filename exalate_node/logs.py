"""Log records that say which change they belong to, as plain text or one JSON object per line.

The pipeline binds the event it works on (``bind``): its trace id (shared by the outgoing event on one
node and the incoming event on the other, so ``grep <trace id>`` follows one change across both nodes),
the connection and the item key. ``ContextFilter`` copies them onto every record made meanwhile in that
thread or task, whichever module logs it (the HTTP seam's request lines included). ``LOG_FORMAT=json``
selects ``JsonFormatter``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

FIELDS = ("trace_id", "connection", "item")

_context: ContextVar[dict[str, str] | None] = ContextVar("log_context", default=None)


@contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Attach ``fields`` (trace_id, connection, item) to every record logged inside the block."""
    merged = {**(_context.get() or {}), **{k: str(v) for k, v in fields.items() if v not in (None, "")}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current() -> dict[str, str]:
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """Puts the bound fields on the record (empty strings when none), and ``context``: them as text."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _context.get() or {}
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, bound.get(name, ""))
        shown = " ".join(f"{name}={getattr(record, name)}" for name in FIELDS if getattr(record, name))
        record.context = f" [{shown}]" if shown else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the bound fields, process,
    and the traceback as ``exc`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, "")
            if value:
                entry[name] = value
        entry["process"] = record.process
        # exc_text first: the redaction (exalate_node/redaction.py) leaves the cleaned traceback there.
        if record.exc_text:
            entry["exc"] = record.exc_text
        elif record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)
