"""The ``usage --html`` page in a real browser: Debian's headless Chromium loads it,
runs its script, and the DOM it leaves must hold the chart and the table with the
numbers of the JSON output, sorted as asked; a screenshot is saved as an artifact
(``build/test-artifacts/usage-page.png``, or ``$REGCLEANER_TEST_ARTIFACTS``).

Marked ``slow`` (a browser start costs seconds): ``make check`` leaves it out, ``make
test`` runs it. Chromium comes from Debian's ``chromium`` package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from regcleaner.usage.command import usage
from regcleaner.usage.html import BAR_WIDTH, LABEL_WIDTH
from testkit.registry_writer import DiskSink, RegistryWriter

pytestmark = pytest.mark.slow

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
APP = typer.Typer()
APP.command("usage")(usage)
APP.command("unused")(lambda: None)


def chromium() -> str:
    """Debian's Chromium, or a failure that says how to get it."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium not found: apt-get install -y chromium", pytrace=False)


def browse(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on the page (no sandbox: tests may run as root)."""
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def write_registry(root: Path, repositories: int = 8) -> None:
    """Repositories of different sizes that share a base layer; half the images are
    untagged history (reclaimable)."""
    writer = RegistryWriter(DiskSink(root))
    base = b"shared base layer\n" * 4000
    for number in range(repositories):
        name = f"team{number % 3}/service-{number}"
        for version in range(1 + number % 4):
            layer = f"{name} v{version}\n".encode() * (500 * (number + 1))
            manifest = writer.image(name, f'{{"v":"{name}:{version}"}}'.encode(),
                                    [base, layer], oci=True)  # fmt: skip
            if version == 0:
                writer.tag(name, "latest", manifest.digest)
    writer.blob(b"an orphan\n" * 3000)


class _Dom(HTMLParser):
    """What the test reads back from the DOM Chromium dumps."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[dict[str, str]] = []
        self.rows: list[list[str]] = []
        self.table: dict[str, str] = {}
        self.chart: dict[str, str] = {}
        self.totals: dict[str, str] = {}
        self.sorted_heading: str | None = None
        self._row: list[str] | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "svg" and found.get("id") == "usage-chart":
            self.chart = found
        elif tag == "g" and found.get("class") == "bar":
            self.bars.append(found)
        elif tag == "table" and found.get("id") == "usage-table":
            self.table = found
        elif tag == "th" and "aria-sort" in found:
            self.sorted_heading = found["data-column"] + ":" + found["aria-sort"]
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._row.append(found["data-value"])
        elif tag == "div" and "data-total" in found:
            self.totals[found["data-total"]] = found["data-value"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False


def test_the_page_renders_the_chart_and_sorts_the_table(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    write_registry(root)
    page = tmp_path / "usage.html"
    result = CliRunner().invoke(
        APP,
        ["usage", "--registry-dir", str(root), "--output", "json", "--min-age", "0",
         "--progress-interval", "0", "--html", str(page), "--sort", "name"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    expected = {r["name"]: r for r in document["repositories"]}
    text = page.read_text()
    assert "http://" not in text
    assert "https://" not in text

    dumped = browse(page, "--dump-dom", f"{page.as_uri()}#sort=-exclusive_bytes")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = _Dom()
    dom.feed(dumped.stdout)

    # The script ran: the table is sorted by exclusive bytes, largest first.
    assert dom.table.get("data-sorted-by") == "-exclusive_bytes"
    assert dom.sorted_heading == "exclusive_bytes:descending"
    columns = ["name", "tags", "manifests", "untagged_manifests", "referenced_bytes",
               "exclusive_bytes", "reclaimable_bytes"]  # fmt: skip
    shown = [dict(zip(columns, row, strict=True)) for row in dom.rows]
    assert len(shown) == len(expected) == 8
    order = sorted(expected.values(), key=lambda r: (-r["exclusive_bytes"], r["name"]))
    assert [r["name"] for r in shown] == [r["name"] for r in order]
    for row in shown:
        want = expected[row["name"]]
        for column in columns[1:]:
            assert int(row[column]) == want[column], (row["name"], column)

    # The chart: one bar per repository, largest referenced first, the same numbers.
    assert [b["data-repository"] for b in dom.bars] == [
        r["name"] for r in sorted(expected.values(),
                                  key=lambda r: (-r["referenced_bytes"], r["name"]))
    ]  # fmt: skip
    # The whole chart is on screen: no bar is cut at the chart's edge.
    assert float(dom.chart["data-drawn-width"]) >= LABEL_WIDTH + BAR_WIDTH
    largest = max(r["referenced_bytes"] for r in expected.values())
    for bar in dom.bars:
        want = expected[bar["data-repository"]]
        # Drawn by the browser at the right length: the largest is BAR_WIDTH pixels.
        drawn = float(bar["data-drawn-width"])
        assert abs(drawn - BAR_WIDTH * want["referenced_bytes"] / largest) < 1.5, bar
        assert int(bar["data-referenced"]) == want["referenced_bytes"]
        assert int(bar["data-exclusive"]) == want["exclusive_bytes"]
        assert int(bar["data-reclaimable"]) == want["reclaimable_bytes"]
    assert int(dom.totals["blob_bytes"]) == document["totals"]["blob_bytes"]
    assert int(dom.totals["shared_bytes"]) == document["totals"]["shared_bytes"] > 0
    assert int(dom.totals["orphaned_bytes"]) == document["totals"]["orphaned_bytes"] > 0

    # The screenshot, kept as an artifact.
    artifacts = Path(os.environ.get("REGCLEANER_TEST_ARTIFACTS",
                                    REPOSITORY_ROOT / "build/test-artifacts"))  # fmt: skip
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "usage-page.png"
    shot.unlink(missing_ok=True)
    taken = browse(page, f"--screenshot={shot}", "--window-size=1200,1000", page.as_uri())
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a blank page compresses to a few KB
