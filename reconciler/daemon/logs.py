"""Log lines: one timestamped line per event, or one JSON object per line for machines."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from balancer.logline import LineFormatter
from reconciler.scrub import ScrubbingFormatter


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup(log_format: str = "text", verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # every line passes the secret scrubber, whatever a server put into a message
    if log_format == "json":
        handler.setFormatter(ScrubbingFormatter(JsonFormatter()))
    else:
        handler.setFormatter(ScrubbingFormatter(LineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("httpx", "httpcore", "apscheduler", "watchfiles", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
