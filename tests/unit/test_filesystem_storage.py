"""The disk byte store: disk work on the event loop while the disk is fast, in its thread
once slow."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from regcleaner import layout
from regcleaner.digest import Digest
from regcleaner.errors import StorageError
from regcleaner.manifests import ManifestRefs
from regcleaner.storage import filesystem
from regcleaner.storage.base import Blob, FileInfo
from regcleaner.storage.filesystem import FilesystemStore
from regcleaner.view import RegistryView

REPO = "team/app"
T = TypeVar("T")


def push(root: Path, seed: str) -> Digest:
    digest = Digest("sha256:" + hashlib.sha256(seed.encode()).hexdigest())
    link = root / f"docker/registry/v2/repositories/{REPO}/_manifests/revisions/sha256"
    link = link / digest[7:] / "link"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.write_text(digest)
    return digest


class Clock:
    """perf_counter for the storage module: each stat "takes" the next duration."""

    def __init__(self, durations: Iterator[float]) -> None:
        self.now = 0.0
        self.durations = durations
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls % 2 == 0:  # the second reading of each stat
            self.now += next(self.durations)
        return self.now


def looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durations: Iterator[float], count: int
) -> tuple[FilesystemStore, list[float | None], list[str]]:
    digest = push(tmp_path, "x")
    storage = FilesystemStore(tmp_path)
    monkeypatch.setattr(f"{filesystem.__name__}.time.perf_counter", Clock(durations))
    threads: list[str] = []
    original = storage._stat_many_sync

    def recorded(keys: list[str]) -> list[FileInfo | None]:
        threads.append(threading.current_thread().name)
        return original(keys)

    monkeypatch.setattr(storage, "_stat_many_sync", recorded)
    view = RegistryView(storage)

    async def go() -> list[float | None]:
        try:
            return [await view.revision_mtime(REPO, digest) for _ in range(count)]
        finally:
            await storage.aclose()

    return storage, asyncio.run(go()), threads


def test_fast_stats_stay_inline_despite_an_occasional_gil_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5 us stats with a 10 ms one every 20th (the disk thread held the GIL).
    durations = (0.010 if i % 20 == 19 else 0.000005 for i in itertools.count())
    storage, results, threads = looks(tmp_path, monkeypatch, durations, 200)
    assert storage._inline
    assert len(set(results)) == 1
    assert results[0] is not None
    assert set(threads) == {"MainThread"}


def test_slow_stats_move_to_the_disk_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    durations = itertools.repeat(0.004)  # NFS-like: 4 ms every time
    storage, results, threads = looks(tmp_path, monkeypatch, durations, 60)
    assert not storage._inline
    assert threads[0] == "MainThread"
    assert threads[-1].startswith("regcleaner-disk")
    assert len(set(results)) == 1
    assert results[0] is not None


def test_scans_run_inline_on_a_fast_disk_and_in_the_thread_after_a_slow_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = push(tmp_path, "y")
    storage = FilesystemStore(tmp_path)
    view = RegistryView(storage)
    threads: list[str] = []
    original = storage._list_leaves_sync

    def recorded(prefix: str, leaf: str) -> object:
        threads.append(threading.current_thread().name)
        return original(prefix, leaf)

    monkeypatch.setattr(storage, "_list_leaves_sync", recorded)

    async def go() -> None:
        try:
            first = await view.snapshot(REPO)
            assert digest in first.revisions
            # A 0.3 s batch (a cold disk) sends every later batch to the disk thread.
            monkeypatch.setattr(
                f"{filesystem.__name__}.time.perf_counter", Clock(itertools.repeat(0.3))
            )
            await view.snapshot(REPO)
            assert not storage._inline
            again = await view.snapshot(REPO)
            assert again.revisions == first.revisions
            manifests = await view.read_manifests([digest])
            assert digest in manifests
        finally:
            await storage.aclose()

    asyncio.run(go())
    assert threads[0] == "MainThread"  # the first listing, on a fast disk
    assert threads[-1].startswith("regcleaner-disk")  # every listing after the slow batch


def test_one_very_slow_stat_moves_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    durations = itertools.chain([0.5], itertools.repeat(0.000005))
    storage, _, threads = looks(tmp_path, monkeypatch, durations, 3)
    assert not storage._inline
    assert threads[0] == "MainThread"
    assert all(name.startswith("regcleaner-disk") for name in threads[1:])


def test_reads_more_manifests_than_a_batch_in_both_modes(tmp_path: Path) -> None:
    digests = []
    for i in range(700):  # more than one batch inline (64) and in the thread (512)
        data = b'{"schemaVersion": 2, "layers": [], "n": %d}' % i
        digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())
        blob = tmp_path / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        digests.append(digest)

    async def read(inline: bool) -> set[Digest]:
        storage = FilesystemStore(tmp_path)
        storage._inline = inline
        try:
            found = await RegistryView(storage).read_manifests(digests)
        finally:
            await storage.aclose()
        assert all(isinstance(info, ManifestRefs) for info in found.values())
        return set(found)

    assert asyncio.run(read(True)) == set(digests)
    assert asyncio.run(read(False)) == set(digests)


def test_a_listing_is_judged_per_entry_not_per_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(300):
        (tmp_path / f"docker/registry/v2/repositories/team/app{i}/_manifests").mkdir(parents=True)
    storage = FilesystemStore(tmp_path)
    # The listing "takes" 3 ms: 10 us an entry for the 300 entries of team/.
    monkeypatch.setattr(f"{filesystem.__name__}.time.perf_counter", Clock(itertools.repeat(0.003)))

    async def go() -> list[str]:
        try:
            prefix = f"{layout.REPOSITORIES}/team"
            return [entry.name async for page in storage.list_children(prefix) for entry in page]
        finally:
            await storage.aclose()

    assert len(asyncio.run(go())) == 300
    assert storage._inline


def test_deleting_unlinks_files_and_removes_only_the_empty_folders(tmp_path: Path) -> None:
    gone = push(tmp_path, "gone")
    stays = push(tmp_path, "stays")
    folder = layout.revision_dir(REPO, gone)
    extra = tmp_path / folder / "signatures/sha256/abc/link"
    extra.parent.mkdir(parents=True)
    extra.write_text("x")
    storage = FilesystemStore(tmp_path)
    keys = [f"{folder}/signatures/sha256/abc/link", f"{folder}/link", f"{folder}/missing"]
    directories = [f"{folder}/signatures/sha256/abc", f"{folder}/signatures/sha256",
                   f"{folder}/signatures", folder, layout.revisions_dir(REPO)]  # fmt: skip

    async def go() -> list[str | None]:
        try:
            return await storage.delete_many(keys, directories=directories)
        finally:
            await storage.aclose()

    assert asyncio.run(go()) == [None, None, None]  # a missing key is gone, not an error
    assert not (tmp_path / folder).exists()
    assert (tmp_path / layout.revision_link(REPO, stays)).is_file()  # not empty: kept
    assert storage.stats.keys_deleted == 2


@pytest.mark.parametrize("size", [0, 1, 99, 100, 101, 5000])
def test_capped_reads_return_the_file_or_cap_plus_one_bytes(tmp_path: Path, size: int) -> None:
    path = tmp_path / "blob"
    data = bytes(range(256)) * (size // 256 + 1)
    path.write_bytes(data[:size])
    got = filesystem._read_capped(str(path), 100).data
    assert got == data[: min(size, 101)]


def test_capped_read_of_a_file_that_grew_after_its_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 50)
    real_fstat = os.fstat

    def stale_fstat(fd: int) -> os.stat_result:  # the size before an append
        info = real_fstat(fd)
        return os.stat_result((info.st_mode, *info[1:6], 10, *info[7:]))

    monkeypatch.setattr(f"{filesystem.__name__}.os.fstat", stale_fstat)
    assert filesystem._read_capped(str(path), 100).data == b"x" * 50
    assert filesystem._read_capped(str(path), 20).data == b"x" * 21


def _within(seconds: float, work: Callable[[], T]) -> T:
    """``work()`` in a daemon thread; fail (instead of hanging) if it takes longer."""
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(work())
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still blocked after {seconds} s"
    if errors:
        raise errors[0]
    return results[0]


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "disk-thread"])
def test_a_named_pipe_is_unreadable_and_never_waited_on(tmp_path: Path, inline: bool) -> None:
    """A pipe with no writer would block ``open`` for ever (and with it the event loop):
    it is a read failure naming the key, found at once, and the other keys still read."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file").write_bytes(b"sha256:" + b"a" * 64)
    (tmp_path / "folder").mkdir()

    async def go() -> tuple[list[object], StorageError | None]:
        storage = FilesystemStore(tmp_path)
        storage._inline = inline
        try:
            many: list[object] = list(
                await storage.read_many(["pipe", "file", "folder", "missing"], 100)
            )
            try:
                await storage.read("pipe", 100)
            except StorageError as exc:
                return many, exc
            return many, None
        finally:
            await storage.aclose()

    many, single = _within(10, lambda: asyncio.run(go()))
    pipe, file, folder, missing = many
    assert isinstance(pipe, StorageError)
    assert "pipe" in str(pipe)
    assert "not a regular file" in str(pipe)
    assert isinstance(file, Blob)
    assert file.data == b"sha256:" + b"a" * 64
    assert isinstance(folder, StorageError)
    assert missing is None
    assert single is not None
    assert "pipe" in str(single)


def test_a_named_pipe_with_a_writer_is_not_read_either(tmp_path: Path) -> None:
    """Even when something writes into the pipe, its bytes are never taken as a file's."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer open at once
    writer = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(writer, b"sha256:" + b"b" * 64)
        with pytest.raises(OSError, match="not a regular file"):
            _within(10, lambda: filesystem._read_capped(str(pipe), 100))
    finally:
        os.close(writer)
        os.close(reader)
