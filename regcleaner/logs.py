"""Log lines: rich on a terminal, plain text otherwise, or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
import time

from regcleaner.config import OutputFormat


class JSONLinesFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        return json.dumps(document, ensure_ascii=False)


def setup_logging(verbose: bool, log_format: OutputFormat = OutputFormat.TEXT) -> None:
    """Send regcleaner's logs to standard error in the chosen format."""
    handler: logging.Handler
    if log_format is OutputFormat.JSON:
        handler = logging.StreamHandler(sys.stderr)
        formatter = JSONLinesFormatter()
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        from regcleaner.report import stderr_console

        # Shares the progress bars' console, so a log line never tears a bar. No markup:
        # a message with brackets ("regcleaner[s3]") is printed as it is.
        handler = RichHandler(console=stderr_console(), show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("regcleaner")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
