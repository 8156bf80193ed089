"""The flat listing of ``repositories/`` (``RegistryView.repository_listings``): on an
object store one listing rolled up at ``/_layers/`` stands for the walk of every folder
and of every repository's ``_manifests/``. It must find the same repositories, hand each
the same keys a walk of its ``_manifests/`` gives (or none, so that its snapshot lists
it), and the snapshots made from those keys must equal the snapshots made by listing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regcleaner import layout
from regcleaner.errors import StorageError
from regcleaner.storage.base import Entry, FileInfo
from regcleaner.view import ManifestKeys, RegistryView
from testkit.memory import MemoryStore, registered
from testkit.registry_writer import RegistryWriter
from tests.conftest import run_cli

REPOS = layout.REPOSITORIES
HEX = "ab" * 32

# Folders that make repositories or look like them: names that sort around "/" ("a-b",
# "a.b", "a0"), nested ones, and folders the walk never enters (empty, a leading "_").
NAMES = ["a", "b", "a/b", "a/0", "a-b", "a.b", "a0", "0", "_x/a", "a/_uploads/b", "a//b", ""]
FOLDERS = ["_manifests", "_manifests", "_layers", "_uploads", "x", ""]
TAILS = [
    f"revisions/sha256/{HEX}/link", "revisions/sha256/bad/link", f"revisions/sha256/{HEX}/sig",
    "tags/t/current/link", f"tags/t/index/sha256/{HEX}/link", "tags/u/current/link",
    "tags/t/_layers/x", "tags/z/_layers/x", "_layers/y", "link", "",
]  # fmt: skip

keys = st.lists(
    st.builds(
        lambda name, folder, tail: "/".join([REPOS, name, folder, tail]).rstrip("/") or REPOS,
        st.sampled_from(NAMES),
        st.sampled_from(FOLDERS),
        st.sampled_from(TAILS),
    ),
    max_size=40,
)


def store_of(found: list[str], page: int, ranges: int = 4) -> MemoryStore:
    store = MemoryStore(name="listings")
    for key in found:
        store.put(key, f"sha256:{HEX}".encode(), mtime=1_700_000_000.0)  # both stores alike
    store.page_size = page
    store.listing_concurrency = ranges
    return store


async def walked(store: MemoryStore) -> dict[str, list[FileInfo]]:
    """What the folder-by-folder walk finds, and a walk of each ``_manifests/``."""
    view = RegistryView(store)
    names: list[str] = []

    async def found(name: str) -> None:
        names.append(name)

    await view.repositories(found)
    result: dict[str, list[FileInfo]] = {}
    for name in names:
        assert name not in result
        files = [f async for page in store.walk(layout.manifests_dir(name)) for f in page]
        result[name] = files
    return result


async def flat(
    store: MemoryStore, wanted: Callable[[str], bool] = lambda _: True
) -> list[tuple[str, ManifestKeys | None, float]]:
    view = RegistryView(store)
    emitted: list[tuple[str, ManifestKeys | None, float]] = []

    async def found(name: str, keys: ManifestKeys | None) -> None:
        emitted.append((name, keys, time.monotonic()))

    await view.repository_listings(found, wanted)
    return emitted


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keys,
    st.sampled_from([1, 2, 3, 1000]),
    st.sampled_from([2, 20_000]),
    st.sampled_from([1, 2, 5]),
    st.sampled_from(["", "b"]),
)
def test_the_flat_listing_finds_what_the_walks_find(
    found: list[str], page: int, most: int, ranges: int, unwanted: str
) -> None:
    """Every repository once; the keys of each, unless something in its _manifests/
    was rolled up, it holds too many, or it is not wanted (e.g. another shard's)."""
    started = time.monotonic()

    def wanted(name: str) -> bool:
        return not unwanted or unwanted not in name

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("regcleaner.view.MAX_PRELISTED_KEYS", most)
        patch.setattr("regcleaner.view.FOLDERS_A_RANGE", 1)
        emitted = asyncio.run(flat(store_of(found, page, ranges), wanted))
    expected = asyncio.run(walked(store_of(found, page)))
    names = [name for name, _, _ in emitted]
    assert sorted(names) == sorted(expected)  # each once
    for name, keys, at in emitted:
        if keys is None:
            # only where the listing rolled something up in it, or it held too much
            inside = f"{name}/_manifests/"
            rolled = any(
                k[len(REPOS) + 1 :].startswith(inside) and "/_layers/" in k[len(REPOS) + 1 :]
                for k in found
            )
            assert rolled or len(expected[name]) > most or not wanted(name)
            continue
        assert wanted(name)
        assert [f._replace(key=f.key[keys.strip :]) for f in keys.files] == expected[name]
        assert started <= keys.listed_at <= at


def test_a_repository_is_as_old_as_the_page_that_first_showed_it() -> None:
    """``listed_at`` is taken before the request of the page that holds a repository's
    first key: a push watch counts the snapshot from then."""
    store = store_of([f"{REPOS}/{name}/_manifests/tags/t/current/link" for name in "abc"], 1)
    times: list[float] = []
    original = store.walk_rolling_up

    def counted(
        prefix: str, delimiter: str, *, start_after: str = ""
    ) -> AsyncGenerator[tuple[list[FileInfo], list[str]], None]:
        async def pages() -> AsyncGenerator[tuple[list[FileInfo], list[str]], None]:
            async for page in original(prefix, delimiter, start_after=start_after):
                times.append(time.monotonic())
                yield page

        return pages()

    store.walk_rolling_up = counted  # type: ignore[method-assign]
    emitted = asyncio.run(flat(store))
    assert [name for name, _, _ in emitted] == ["a", "b", "c"]
    for (_, keys, _), answered in zip(emitted, times, strict=True):
        assert keys is not None
        assert keys.listed_at <= answered
    first, second, third = (keys.listed_at for _, keys, _ in emitted if keys is not None)
    assert first <= times[0] <= second <= times[1] <= third


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys, st.booleans())
def test_snapshots_from_the_flat_listing_equal_snapshots_that_list(
    found: list[str], history: bool
) -> None:
    store = store_of(found, 2)

    async def compare() -> None:
        view = RegistryView(store)
        emitted: list[tuple[str, ManifestKeys | None]] = []

        async def take(name: str, keys: ManifestKeys | None) -> None:
            emitted.append((name, keys))

        await view.repository_listings(take)
        for name, keys in emitted:
            listed = await view.snapshot(name, history=history)
            given_keys = await view.snapshot(name, history=history, prelisted=keys)
            assert given_keys == listed

    asyncio.run(compare())


def test_the_flat_listing_takes_a_page_for_a_thousand_entries() -> None:
    """2,000 repositories of 9 keys below ``_manifests/`` and 50 layer links each:
    20,000 entries (the layer links rolled up, one entry a repository) in four ranges
    of 5 full pages, after 2 pages of the 2,000 top-level folders, instead of a listing
    of every folder and a walk of every ``_manifests/`` (4,000 and more). Each range but
    the last reads one page into the next to see where it ends (S3 has no end key)."""
    store = MemoryStore(name="pages")
    for index in range(2000):
        base = f"{REPOS}/r{index:04d}"
        for tag in range(4):
            store.put_unsorted(f"{base}/_manifests/tags/t{tag}/current/link", b"x", mtime=1.0)
            store.put_unsorted(
                f"{base}/_manifests/tags/t{tag}/index/sha256/{HEX}/link", b"x", mtime=1.0
            )
        store.put_unsorted(f"{base}/_manifests/revisions/sha256/{HEX}/link", b"x", mtime=1.0)
        for layer in range(50):
            store.put_unsorted(f"{base}/_layers/sha256/{layer:064x}/link", b"x", mtime=1.0)
    store.sort_keys()
    emitted = asyncio.run(flat(store))  # 500 folders a range (at least FOLDERS_A_RANGE)
    assert len(emitted) == 2000
    assert all(keys is not None and len(keys.files) == 9 for _, keys, _ in emitted)
    assert store.stats.list == 2 + 4 * 5 + 3


def registry(repositories: int) -> MemoryStore:
    """Repositories (some nested) of tagged images and untagged history."""
    store = MemoryStore(name="engine")
    writer = RegistryWriter(store)
    for r in range(repositories):
        name = f"team{r % 3}/app{r}" if r % 2 else f"app{r}"
        for n in range(3):
            image = writer.image(name, f"c-{r}-{n}".encode(), [f"l-{r}-{n}".encode()], oci=True)
            if n == 2:
                writer.tag(name, "latest", image.descriptor.digest)
    return store


def run_on(tmp_path: Path, store: MemoryStore, name: str, *extra: str) -> Any:
    """A dry run of ``clean --direct`` on ``store``; it must succeed."""
    with registered(store):
        answer = run_cli(
            ["clean", "--storage", "memory", "--direct", "--dry-run", "--min-age", "0",
             "--progress-interval", "0", *extra],
            report_path=tmp_path / f"{name}.json",
        )  # fmt: skip
    assert answer.exit_code == 0, answer.output
    assert answer.report is not None
    return answer


def plans(report: dict[str, Any]) -> dict[str, tuple[list[str], list[str]]]:
    return {
        record["name"]: (
            sorted(entry["digest"] for entry in record["would_delete"]),
            sorted(entry["digest"] for entry in record["kept"]),
        )
        for record in report["repositories"]
    }


def decisions(tmp_path: Path, store: MemoryStore, *extra: str) -> tuple[dict[str, Any], Any]:
    answer = run_on(tmp_path, store, "report", *extra)
    return plans(answer.report), answer.report["summary"]["storage_requests"]


@runtime_checkable
class _NoStore(Protocol):
    def no_store_has_this(self) -> None: ...


@pytest.mark.parametrize("extra", [[], ["--cache", "CACHE"], ["--shard", "1/2"]])
def test_a_run_plans_from_the_flat_listing_as_it_plans_from_walks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str]
) -> None:
    """The same decisions with the flat listing and without it (the folder walk and a
    walk of each ``_manifests/``), in a fraction of the LIST requests."""
    extra = [str(tmp_path / "cache.sqlite") if arg == "CACHE" else arg for arg in extra]
    flat_plan, flat_requests = decisions(tmp_path, registry(60), *extra)
    assert sum(len(going) for going, _ in flat_plan.values()) == 2 * len(flat_plan) >= 40
    monkeypatch.setattr("regcleaner.view.RollingUpStore", _NoStore)  # as on a disk
    (tmp_path / "cache.sqlite").unlink(missing_ok=True)
    walked_plan, walked_requests = decisions(tmp_path, registry(60), *extra)
    assert flat_plan == walked_plan
    assert walked_requests["list"] >= 60
    assert flat_requests["list"] <= 10


class OddStore(MemoryStore):
    """An in-memory store that lists folders as S3 does (``<prefix>/`` lists
    ``<prefix>//``) and reopens as its own kind, for the stores below."""

    async def list_children(self, prefix: str) -> AsyncGenerator[list[Entry], None]:
        if prefix.endswith("/"):
            return  # S3 would list "<prefix>//": nothing (the in-memory store forgives)
        async for page in super().list_children(prefix):
            yield page

    def reopen(self) -> MemoryStore:
        other = type(self)(clock=self.clock, name=self.name)
        other.objects, other._sorted = self.objects, self._sorted
        other.page_size, other.listing_concurrency = self.page_size, self.listing_concurrency
        return other


class FolderOrderStore(OddStore):
    """A store that lists folder by folder ("a/..." before "a.b/...", as "/" were the
    least character), as some S3 imitations backed by a file system do: not S3's
    order (UTF-8 binary), on which the flat listing groups keys and bounds ranges."""

    async def walk_rolling_up(
        self, prefix: str, delimiter: str, *, start_after: str = ""
    ) -> AsyncGenerator[tuple[list[FileInfo], list[str]], None]:
        def order(key: str) -> str:
            return key.replace("/", "\0")

        entries: list[tuple[str, FileInfo | None]] = []
        async for files, rolled in super().walk_rolling_up(prefix, delimiter):
            entries += [(f.key, f) for f in files] + [(r, None) for r in rolled]
        entries.sort(key=lambda entry: order(entry[0]))
        entries = [entry for entry in entries if order(entry[0]) > order(start_after)]
        for at in range(0, len(entries), self.page_size):
            page = entries[at : at + self.page_size]
            yield [f for _, f in page if f is not None], [k for k, f in page if f is None]


class DroppingStore(OddStore):
    """A store whose flat listing leaves out every key of one folder, in order
    otherwise."""

    async def walk_rolling_up(
        self, prefix: str, delimiter: str, *, start_after: str = ""
    ) -> AsyncGenerator[tuple[list[FileInfo], list[str]], None]:
        async for files, rolled in super().walk_rolling_up(
            prefix, delimiter, start_after=start_after
        ):
            kept = [f for f in files if not f.key.startswith("a.b/")]
            yield kept, [r for r in rolled if not r.startswith("a.b/")]


class ShuffledStore(OddStore):
    """A store whose pages hold the right keys in no order (by the key read backwards):
    one repository's keys meet another's."""

    async def walk_rolling_up(
        self, prefix: str, delimiter: str, *, start_after: str = ""
    ) -> AsyncGenerator[tuple[list[FileInfo], list[str]], None]:
        async for files, rolled in super().walk_rolling_up(
            prefix, delimiter, start_after=start_after
        ):
            yield sorted(files, key=lambda file: file.key[::-1]), rolled


def signed_elsewhere(page: int) -> tuple[FolderOrderStore, str]:
    """An image in ``a.b`` (a name that sorts between ``a`` and ``a/``), its signature
    tag in ``sigs``: kept only if the run sees ``a.b``."""
    store = FolderOrderStore(name="folder-order")
    store.page_size, store.listing_concurrency = page, 3
    writer = RegistryWriter(store)
    image = None
    for name in ("a", "a.b", "b"):
        image_here = writer.image(name, f"c-{name}".encode(), [f"l-{name}".encode()], oci=True)
        writer.tag(name, "v1", image_here.descriptor.digest)
        if name == "a.b":
            image = image_here
    assert image is not None
    signature = writer.image("sigs", b"sig-config", [b"sig"], oci=True)
    signed = image.descriptor.digest.split(":")[1]
    writer.tag("sigs", f"sha256-{signed}.sig", signature.descriptor.digest)
    return store, signature.descriptor.digest


class FailingStore(OddStore):
    """A store whose listing with a delimiter of several characters fails after a few
    pages, as MinIO's does (it repeats a continuation token; others answer 400 or 501
    at once)."""

    pages_before_failing = 2

    async def walk_rolling_up(
        self, prefix: str, delimiter: str, *, start_after: str = ""
    ) -> AsyncGenerator[tuple[list[FileInfo], list[str]], None]:
        served = 0
        async for page in super().walk_rolling_up(prefix, delimiter, start_after=start_after):
            if served == self.pages_before_failing:
                raise StorageError(f"listing {prefix}: the same continuation token again")
            served += 1
            yield page


@pytest.mark.parametrize(
    "store_kind",
    ["out-of-order-pages", "folder-never-shown", "listing-fails", "shuffled", "folder-dropped"],
)
def test_a_store_whose_flat_listing_cannot_be_trusted_is_listed_folder_by_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_kind: str
) -> None:
    """Pages out of S3's order (pages of 2), a range that never shows a folder it holds
    (pages of 1,000, each sorted again), a listing that fails part-way, one page whose
    keys come in no order (one range), or a listing that leaves a folder out: a warning,
    and the repositories not yet read are found folder by folder. Every repository
    once, the same decisions as the walk's: the signature of the image in ``a.b`` (a
    name that sorts between ``a`` and ``a/``) stays."""
    monkeypatch.setattr("regcleaner.view.FOLDERS_A_RANGE", 1)
    store, signature = signed_elsewhere(2 if store_kind == "out-of-order-pages" else 1000)
    if store_kind == "folder-dropped":
        dropping = DroppingStore(name="dropping")
        dropping.objects, dropping._sorted = store.objects, store._sorted
        dropping.page_size, dropping.listing_concurrency = 1000, 1
        store = dropping  # type: ignore[assignment]
    if store_kind == "shuffled":
        shuffled = ShuffledStore(name="shuffled")
        shuffled.objects, shuffled._sorted = store.objects, store._sorted
        shuffled.page_size, shuffled.listing_concurrency = 1000, 1
        store = shuffled  # type: ignore[assignment]
    if store_kind == "listing-fails":
        failing = FailingStore(name="failing")
        failing.objects, failing._sorted = store.objects, store._sorted
        failing.page_size, failing.listing_concurrency = 2, 3
        store = failing  # type: ignore[assignment]
    emitted = asyncio.run(flat(store))
    names = [name for name, _, _ in emitted]
    assert sorted(names) == ["a", "a.b", "b", "sigs"]
    answer = run_on(tmp_path, store, "flat", "--prune-orphan-signatures")
    assert "listing it folder by folder instead" in answer.output
    going = {digest for going, _ in plans(answer.report).values() for digest in going}
    assert signature not in going
    monkeypatch.setattr("regcleaner.view.RollingUpStore", _NoStore)
    walked = run_on(tmp_path, store, "walked", "--prune-orphan-signatures")
    assert plans(answer.report) == plans(walked.report)
