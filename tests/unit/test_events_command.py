"""``regcleaner events`` through its own typer app: listen addresses, import-log's counts
and when an imported log may move the start of coverage back."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from regcleaner.events.command import events_app, parse_listen
from regcleaner.events.store import PullHistory, PullStore

DIGEST = "sha256:" + "c" * 64
# 07/Dec/2026:04:00:00 +0000 and 06:00:00 as seconds since the epoch.
FOUR = 1796616000.0
SIX = FOUR + 7200


def access_line(clock: str, path: str, method: str = "GET", status: int = 200) -> str:
    return (f'10.0.0.1 - - [07/Dec/2026:{clock} +0000] "{method} {path} HTTP/1.1" {status} '
            '422 "" "containerd/2.0"\n')  # fmt: skip


def write_log(path: Path) -> Path:
    path.write_text(
        access_line("04:00:00", "/v2/team/app/manifests/v1")
        + access_line("05:00:00", f"/v2/team/app/manifests/{DIGEST}")
        + access_line("05:30:00", "/v2/team/app/manifests/v2", method="HEAD")
        + access_line("06:00:00", "/v2/")
    )
    return path


def import_log(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(events_app, ["import-log", *args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:5080", ("127.0.0.1", 5080)), ("10.0.0.5:0", ("10.0.0.5", 0)),
     ("[::1]:8080", ("::1", 8080))],
)  # fmt: skip
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["5080", ":5080", "host:", "host:http", "host:70000", "h:٣"])
def test_bad_listen_addresses_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="--listen"):
        parse_listen(text)


def test_serve_refuses_a_bad_listen_address_with_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        events_app, ["serve", "--db", str(tmp_path / "p.db"), "--listen", "nowhere"]
    )
    assert result.exit_code == 2
    assert "expected HOST:PORT" in result.output


def test_import_log_counts_and_records_without_coverage(tmp_path: Path) -> None:
    db = tmp_path / "pulls.db"
    code, output = import_log(str(write_log(tmp_path / "registry.log")), "--db", str(db),
                              "--complete")  # fmt: skip
    assert code == 0, output
    assert "2 manifest pulls recorded from 4 requests in 4 lines of 1 files" in output
    assert "2026-12-07T04:00:00Z to 2026-12-07T06:00:00Z" in output
    assert "events serve has not recorded an envelope yet" in output
    with PullHistory(db) as history:
        assert history.covered_since is None
        assert history.last_pull("team/app", DIGEST) == FOUR + 3600
        tag = history.last_tag_pull("team/app", "v1")
        assert tag is not None
        assert tag.at == FOUR
        assert history.last_tag_pull("team/app", "v2") is None


def test_a_complete_log_reaching_the_start_of_recording_extends_coverage(
    tmp_path: Path,
) -> None:
    db = tmp_path / "pulls.db"
    store = PullStore(db)
    store.mark_recording_started(FOUR + 5400)  # 05:30, before the log's last line (06:00)
    store.close()
    log = write_log(tmp_path / "registry.log")
    code, output = import_log(str(log), "--db", str(db))
    assert code == 0, output
    with PullHistory(db) as history:
        assert history.covered_since == FOUR + 5400  # without --complete: pulls only
    code, output = import_log(str(log), "--db", str(db), "--complete")
    assert "recording now covers pulls since 2026-12-07T04:00:00Z" in output
    with PullHistory(db) as history:
        assert history.covered_since == FOUR


def test_a_log_that_ends_before_recording_began_leaves_a_gap(tmp_path: Path) -> None:
    db = tmp_path / "pulls.db"
    store = PullStore(db)
    store.mark_recording_started(SIX + 60)
    store.close()
    code, output = import_log(str(write_log(tmp_path / "r.log")), "--db", str(db), "--complete")
    assert code == 0, output
    assert "a gap nobody saw" in output
    with PullHistory(db) as history:
        assert history.covered_since == SIX + 60


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        events_app, ["import-log", str(tmp_path / "absent.log"), "--db", str(tmp_path / "p.db")]
    )
    assert result.exit_code == 2


def test_serve_refuses_an_unknown_log_format_with_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        events_app, ["serve", "--db", str(tmp_path / "p.db"), "--log-format", "xml"]
    )
    assert result.exit_code == 2
    assert "expected text or json" in result.output
    assert not (tmp_path / "p.db").exists()
