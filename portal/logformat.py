"""``LOG_FORMAT=json``: one JSON object per log line, from the standard library alone."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """time, level, logger, message (and the traceback as one string, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# A private calendar feed's address is its key (environments/scheduling): the token in
# /calendar/feed/<token>.ics is never written to a log, whoever logs the path (the
# development server, Django's "Not Found" warnings).
_FEED_TOKEN = re.compile(r"(/calendar/feed/)[A-Za-z0-9_-]{8,}(\.ics)")


class RedactFeedTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/calendar/feed/" in message:
            record.msg = _FEED_TOKEN.sub(r"\1[redacted]\2", message)
            record.args = None
        return True
