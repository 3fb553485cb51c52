"""Log lines as text or JSON, each carrying the request id of the call it was written for.

The servicer binds a call's id (the client's `x-request-id` metadata, or a fresh one) to a
context variable; a handler filter copies it into every record logged in that call's task.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone

REQUEST_ID_KEY = "x-request-id"
NO_REQUEST = "-"
_REQUEST_ID = contextvars.ContextVar("explainserve_request_id", default=NO_REQUEST)
# What a client may choose as an id: short and printable, so it cannot forge or split log lines.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def request_id_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The client's `x-request-id` when it is well formed, otherwise a new random one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _VALID_REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


def bind_request_id(request_id: str) -> contextvars.Token:
    """From now on, records logged in this task (or thread) carry `request_id`; hand the
    token to reset_request_id when the call ends."""
    return _REQUEST_ID.set(request_id)


def reset_request_id(token: contextvars.Token) -> None:
    try:
        _REQUEST_ID.reset(token)
    except ValueError:
        # Finalised in another context (an abandoned stream's generator closed by the
        # garbage collector): the call's own task, and its copy of the variable, are gone.
        pass


class RequestIdFilter(logging.Filter):
    """Sets `record.request_id`; installed on the handler so it sees every logger's records."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, the shape log collectors (Loki, Fluent Bit) parse as is."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", NO_REQUEST),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Replace the root handlers with one stderr handler in the chosen format."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log format {log_format!r} is not 'text' or 'json'")
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
