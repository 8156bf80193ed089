"""A link file whose listing shows its bytes is not read (cachedreads.content_shown):
only a link in a folder named by a sha256 digest, holding that digest, with an ETag
that is the MD5 of exactly those bytes. Anything else is read, as before."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from regcleaner.cachedreads import CachedReads, content_shown
from regcleaner.storage.base import Blob, FileInfo
from testkit.memory import MemoryStore
from testkit.registry_writer import RegistryWriter, revision_link_key

HEX = "a" * 64
OTHER = "b" * 64
REVISION = f"repositories/r/_manifests/revisions/sha256/{HEX}/link"


def _md5(data: bytes) -> str:
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


def _read(files: dict[str, bytes]) -> tuple[list[bytes], int]:
    """Each file's bytes as ``CachedReads.links`` gives them after a listing, and the
    number of GETs it made."""
    store = MemoryStore(name="links")
    store.put_many(files.items())

    async def go() -> tuple[list[bytes], int]:
        listed = {info.key: info async for page in store.walk("repositories") for info in page}
        keys = list(files)
        infos = [listed[key.removeprefix("repositories/")] for key in keys]
        infos = [info._replace(key=key) for key, info in zip(keys, infos, strict=True)]
        found = await CachedReads(store, None).links(keys, infos)
        assert all(isinstance(blob, Blob) for blob in found)
        return [blob.data for blob in found if isinstance(blob, Blob)], store.stats.get

    return asyncio.run(go())


def test_a_revision_link_holding_its_folder_s_digest_is_not_read() -> None:
    data, gets = _read({REVISION: f"sha256:{HEX}".encode()})
    assert data == [f"sha256:{HEX}".encode()]
    assert gets == 0


@pytest.mark.parametrize(
    ("key", "content"),
    [
        (REVISION, f"sha256:{OTHER}".encode()),  # another digest, the same size
        (REVISION, f"sha256:{HEX}\n".encode()),  # one byte more
        (REVISION, f"sha256:{HEX.upper()}".encode()),
        ("repositories/r/_manifests/tags/latest/current/link", f"sha256:{HEX}".encode()),
        (f"repositories/r/_manifests/revisions/sha512/{HEX}/link", f"sha256:{HEX}".encode()),
    ],
    ids=["another-digest", "newline", "upper-case", "tag-link", "other-folder"],
)
def test_any_other_link_is_read(key: str, content: bytes) -> None:
    data, gets = _read({key: content})
    assert data == [content]
    assert gets == 1


def test_an_etag_that_is_not_the_md5_of_the_bytes_means_a_read() -> None:
    content = f"sha256:{HEX}".encode()
    shown = FileInfo(REVISION, 1.0, len(content), True, _md5(content))
    assert content_shown(REVISION, shown) == content
    for etag in (None, '"' + "0" * 32 + '"', '"abc-1"', _md5(content).strip('"')):
        assert content_shown(REVISION, shown._replace(etag=etag)) is None
    assert content_shown(REVISION, shown._replace(size=len(content) + 1)) is None
    assert content_shown(REVISION, None) is None


def _gc_problems(store: MemoryStore, tmp_path: Path) -> tuple[int, list[str]]:
    """``gc --dry-run`` on ``store`` (registered as the ``memory`` backend): its exit
    code and the problems it reports; when there are none, it marked the image's three
    blobs (manifest, config, layer) and would sweep nothing."""
    from regcleaner.storage import backends
    from tests.conftest import run_cli

    backends.register(backends.Backend("memory", lambda settings: store.reopen()))
    try:
        result = run_cli(["gc", "--storage", "memory", "--dry-run", "--progress-interval", "0"],
                         report_path=tmp_path / "gc.json")  # fmt: skip
    finally:
        backends._BACKENDS.pop("memory")
    assert result.report is not None, result.output
    problems = [str(p) for p in result.report["problems"]]
    if not problems:
        summary = result.report["summary"]
        assert (summary["blobs_marked"], summary["blobs_to_sweep"]) == (3, 0)
    return result.exit_code, problems


def test_gc_takes_a_listed_link_s_bytes_even_where_a_get_would_fail(tmp_path: Path) -> None:
    """The by-design difference (docs/scale.md): a revision link whose listing shows its
    bytes is not fetched, so a GET that would fail does not stop the sweep; gc marks
    what those bytes name. A link that holds something else is read, and refused."""
    store = MemoryStore(name="gc")
    writer = RegistryWriter(store)
    image = writer.image("app", b"config", [b"layer"], oci=True)
    link = revision_link_key("app", image.descriptor.digest)
    assert link in store.stored_keys()
    store.failing.add(link)
    code, problems = _gc_problems(store, tmp_path)
    assert (code, problems) == (0, [])

    store.failing.clear()
    store.put(link, f"sha256:{'c' * 64}".encode())  # another digest, the same size
    code, problems = _gc_problems(store, tmp_path)
    assert code == 1
    assert any("names another digest" in problem for problem in problems), problems
