"""Log lines: rich on a terminal, plain text otherwise, or one JSON object per line.

Paths from storage may hold bytes that are not UTF-8 (a folder named by another tool);
Python carries them as surrogate escapes, which a strict UTF-8 stream refuses with a
traceback. ``printable`` renders such a byte as ``\\xNN``, and ``setup_logging`` makes
standard output and standard error render them so too, so that every log line, refusal
and summary that names such a path is printed instead of crashing.
"""

from __future__ import annotations

import codecs
import json
import logging
import sys
import time

from regcleaner.config import OutputFormat

BYTES_AS_ESCAPES = "regcleaner-bytes-as-escapes"
"""The codec error handler that writes what a stream cannot encode as backslash escapes:
a surrogate-escaped byte as ``\\xNN`` (the byte the path held), any other character as
``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``."""


def _escape_unencodable(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    pieces: list[str] = []
    for char in error.object[error.start : error.end]:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
            pieces.append(f"\\x{code - 0xDC00:02x}")
        elif code <= 0xFF:
            pieces.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            pieces.append(f"\\u{code:04x}")
        else:
            pieces.append(f"\\U{code:08x}")
    return "".join(pieces), error.end


codecs.register_error(BYTES_AS_ESCAPES, _escape_unencodable)


def printable(text: str) -> str:
    """``text`` as valid UTF-8: each byte a path held that was not UTF-8 becomes ``\\xNN``
    (``bad\\xffname``); everything else is unchanged. For messages and reports that name
    paths from storage."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", BYTES_AS_ESCAPES).decode("utf-8")
    return text


def render_unencodable_on_output() -> None:
    """Standard output and standard error write what they cannot encode as backslash
    escapes instead of raising (``PYTHONIOENCODING=utf-8:strict``, a path's stray bytes).
    Streams that cannot be reconfigured (replaced by a caller) are left as they are."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors=BYTES_AS_ESCAPES)


class JSONLinesFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            # Escaped here, not by the stream: a stream's \\xNN would not be valid JSON.
            "message": printable(record.getMessage()),
        }
        return json.dumps(document, ensure_ascii=False)


def usage_error_line(message: str, log_format: str | None = None) -> str:
    """A usage error as it is written to standard error before logging starts: one JSON
    log line when JSON logs were asked for (``--log-format json``, given or from the
    environment), else ``error: message``."""
    if (log_format or "").strip().lower() != "json":
        return f"error: {message}"
    record = logging.LogRecord("regcleaner", logging.ERROR, __file__, 0, message, None, None)
    formatter = JSONLinesFormatter()
    formatter.converter = time.gmtime
    return formatter.format(record)


def setup_logging(verbose: bool, log_format: OutputFormat = OutputFormat.TEXT) -> None:
    """Send regcleaner's logs to standard error in the chosen format; standard output
    and standard error render bytes that are not UTF-8 as escapes from now on."""
    render_unencodable_on_output()
    handler: logging.Handler
    if log_format is OutputFormat.JSON:
        handler = logging.StreamHandler(sys.stderr)
        formatter = JSONLinesFormatter()
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        from regcleaner.reporting.console import stderr_console

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
