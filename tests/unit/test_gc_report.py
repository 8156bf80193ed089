"""The gc report streams its blob list from the spool into valid JSON, alone and nested;
the registry version the collector is told is read, or refused, never guessed."""

from __future__ import annotations

import io
import json

import pytest

from regcleaner.collector import registry_major
from regcleaner.reporting.collection import GcReport
from regcleaner.reporting.run import RunReport


def _digest(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("count", [0, 1, 3])
def test_gc_report_streams_every_swept_blob(dry_run: bool, count: int) -> None:
    report = GcReport(dry_run=dry_run, storage="filesystem")
    for n in range(count):
        report.swept(_digest(n), n * 7)
    stream = io.StringIO()
    report.write_json(stream)
    document = json.loads(stream.getvalue())
    field = "would_sweep" if dry_run else "swept"
    assert document["command"] == "gc"
    assert document[field] == [{"digest": _digest(n), "size": n * 7} for n in range(count)]
    assert document["summary"]["blobs"] == 0
    # writing twice gives the same document (the spool is read back, not consumed)
    again = io.StringIO()
    report.write_json(again)
    assert json.loads(again.getvalue())[field] == document[field]
    report.close()


def test_clean_report_nests_the_streamed_gc_report() -> None:
    run = RunReport(dry_run=False, registry_url=None, storage="filesystem", mode="direct")
    run.gc = GcReport(dry_run=False, storage="filesystem")
    run.gc.swept(_digest(1), 10)
    run.gc.swept(_digest(2), 20)
    stream = io.StringIO()
    run.write_json(stream)
    document = json.loads(stream.getvalue())
    assert document["gc"]["swept"] == [
        {"digest": _digest(1), "size": 10},
        {"digest": _digest(2), "size": 20},
    ]
    assert document["gc"]["summary"]["blobs_swept"] == 0
    assert document["repositories"] == []
    run.gc.close()
    run.close()


@pytest.mark.parametrize("version", ["2", "2.8.2", "3", "3.1.1", "v3.0.0", None, "auto"])
def test_registry_version_is_read_or_unknown(version: str | None) -> None:
    assert registry_major(version) == (None if version in (None, "auto") else version
                                       .removeprefix("v")[0])  # fmt: skip


@pytest.mark.parametrize("version", ["1", "4.0", "latest", "x"])
def test_registry_version_unknown_to_regcleaner_is_an_error(version: str) -> None:
    with pytest.raises(ValueError, match=r"knows distribution 2\.x and 3\.x"):
        registry_major(version)
