"""Log lines and printed paths: bytes that are not UTF-8 are rendered as escapes."""

from __future__ import annotations

import io
import json
import logging
import os
import sys

import pytest

from regcleaner.logs import (
    BYTES_AS_ESCAPES,
    JSONLinesFormatter,
    printable,
    render_unencodable_on_output,
)

NOT_UTF8 = os.fsdecode(b"team/bad\xff\xfename")  # as os.scandir gives such a name


def test_printable_renders_the_bytes_a_path_held() -> None:
    assert printable(NOT_UTF8) == "team/bad\\xff\\xfename"
    assert printable("plain/ascii") == "plain/ascii"
    assert printable("café/naïve ☃") == "café/naïve ☃"  # valid UTF-8 stays as it is
    assert printable("lone \ud800 surrogate") == "lone \\ud800 surrogate"


def test_the_error_handler_serves_streams_of_other_encodings_too() -> None:
    assert "é☃\U0001f600".encode("ascii", BYTES_AS_ESCAPES) == b"\\xe9\\u2603\\U0001f600"
    with pytest.raises(UnicodeDecodeError):
        b"\xff".decode("utf-8", BYTES_AS_ESCAPES)  # for writing only


def test_a_strict_stream_prints_such_a_path_once_reconfigured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    with pytest.raises(UnicodeEncodeError):
        stream.write(NOT_UTF8)  # as rich's console wrote a refusal, with a traceback
    raw.seek(0)
    raw.truncate()
    monkeypatch.setattr(sys, "stdout", stream)
    render_unencodable_on_output()
    print(f"refusing to sweep: {NOT_UTF8}", file=sys.stdout)
    stream.flush()
    assert raw.getvalue() == b"refusing to sweep: team/bad\\xff\\xfename\n"


def test_a_stream_that_cannot_be_reconfigured_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    render_unencodable_on_output()  # no reconfigure: nothing to do, no error


def test_json_log_lines_stay_valid_json_and_name_the_bytes() -> None:
    record = logging.LogRecord(
        "regcleaner", logging.WARNING, __file__, 1, "repository %s: odd", (NOT_UTF8,), None
    )
    line = JSONLinesFormatter().format(record)
    line.encode("utf-8")  # strict: no surrogate left
    assert json.loads(line)["message"] == "repository team/bad\\xff\\xfename: odd"
