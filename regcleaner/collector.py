"""Blob garbage collection: what distribution's ``garbage-collect`` does (without
``--delete-untagged``), 2.8 and 3.x alike, concurrently, with bounded memory.

Mark: in every repository, every revision link (the registry walks all of
``_manifests/revisions``, every algorithm folder and schema1 ``signatures/`` included,
and reads each link's digest, untrimmed), the manifest it names, and what that manifest
references as the registry reads it (``gomanifest``: config and layers of an image, the
entries of an index, the fsLayers of schema1). Sweep: every blob under ``blobs/`` that
nothing marked.

The sweep is refused, and nothing is deleted, when the mark is not complete: a
repository name the registry cannot parse, a link or manifest that cannot be read or
understood, a manifest blob that is missing or does not match its digest, a listing
that fails, a file named ``data`` under ``blobs/`` that is not a blob's, a symbolic
link the registry would follow. The registry's own garbage-collect stops on most of
these too; where it would skip one silently (a revision whose blob is missing, a link
naming another digest), regcleaner refuses instead: a registry in that state needs a
look before anything is deleted.

Repositories are found by ``_manifests`` or ``_layers``. distribution 2.8 finds them by
``_layers`` only, so it never marks the manifests of a repository without that folder
and sweeps their blobs; distribution 3 finds them by ``_manifests`` and aborts on one
without ``_layers``. regcleaner marks them (keeps more than 2.8, sweeps what 3 would
sweep if it did not abort) and warns. A repository with ``_layers`` only has nothing to
mark on either.

Which registry runs on the storage (``registry_flavour``: "2", "3" or None, unknown)
changes only what is removed besides blobs and what is said, never which blobs are
swept: the sweep is the same safe one for both. On 3, the ``_layers`` links of the
swept blobs are removed, as its garbage-collect does (on 2.8 only with
``--prune-layer-links``: with an unknown registry, links stay, the side that removes
less). A schema1 manifest is marked on both (its fsLayers are kept); on 3, or when the
registry is unknown, each one is named in a warning: distribution 3 cannot serve it and
its garbage-collect stops on it, sweeping nothing.

A stop (SIGTERM, SIGINT) starts nothing new and gives in-flight requests
``stop_grace_s``; then they are abandoned and the report says so.

Memory: the mark set holds one 64-bit integer per blob (the first 16 hex digits of its
digest), about 8 bytes each (``keyset.KeySet``): a collision can only keep a blob that
should go, never the other way round.
The blobs to sweep are spooled to a temporary file between listing and deleting, so
that nothing is deleted before the whole of ``blobs/`` was listed without a problem.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterator, Mapping
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from regcleaner import gomanifest, layout
from regcleaner.blobfolders import list_blobs
from regcleaner.cachedreads import CachedMarks
from regcleaner.concurrency import Channel, StopRequested, StopScope, first_error, stop_signals
from regcleaner.config import GcSettings
from regcleaner.digest import Digest, is_sha256_hex
from regcleaner.errors import MarkIncomplete, StorageError
from regcleaner.keyset import KeySet, blob_key
from regcleaner.manifests import MAX_MANIFEST_BYTES
from regcleaner.reporting.collection import GcReport
from regcleaner.reporting.progress import GcProgress
from regcleaner.space import human_bytes
from regcleaner.storage.base import EntryKind, requests_in_flight
from regcleaner.view import BlobInfo, RegistryView, StrayEntry, parse_link

if TYPE_CHECKING:
    pass

log = logging.getLogger("regcleaner")

SWEEP_BATCH = 1000
REGISTRY_FLAVOURS = ("2", "3")


def registry_major(flavour: str | None) -> str | None:
    """ "2" or "3" for a distribution version ("2.8.2", "3", "v3.1.1"), None if unknown
    (None, "", "auto"); an error for any other version, rather than a guess."""
    if flavour is None or flavour.strip().lower() in ("", "auto", "unknown"):
        return None
    major = flavour.strip().lower().removeprefix("v").partition(".")[0]
    if major not in REGISTRY_FLAVOURS:
        raise ValueError(f"registry version {flavour!r}: regcleaner knows distribution 2.x and 3.x")
    return major


class Collector:
    """One mark-and-sweep over one registry's storage."""

    def __init__(
        self,
        settings: GcSettings,
        view: RegistryView,
        report: GcReport,
        *,
        gate: Callable[[], Awaitable[None]] | None,
        progress: GcProgress | None = None,
        stop: StopScope | None = None,
        clock: Callable[[], float] = time.time,
        deleted_digests: Mapping[str, Collection[Digest]] | None = None,
        registry_flavour: str | None = None,
    ) -> None:
        self.settings = settings
        self.registry: str | None = None
        self.prune_layer_links = settings.prune_layer_links
        self.existing: KeySet | None = None
        self.swept_keys: KeySet | None = None
        self.know_registry(registry_flavour or settings.registry_version)
        self.deleted_digests = deleted_digests
        self.view = view
        self.store = view.store
        self.report = report
        self.gate = gate
        self.progress = progress
        self.stop = stop if stop is not None else StopScope(settings.stop_grace_s)
        self.clock = clock
        self.marked = KeySet()
        # ...and only in repositories that 3 finds (those with _manifests). Either way, a
        # repository with _manifests keeps at least one _layers link (see
        # _prune_layer_links).
        self._repositories_with_manifests: set[str] = set()
        self._candidates: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self.width = max(1, self.store.listing_concurrency)

    def request_stop(self, why: str) -> None:
        """Start nothing new; in-flight requests get ``stop_grace_s``, then are abandoned.
        A second signal abandons them at once, as in ``clean``."""
        if self.stop.signal(why):
            log.warning("%s: finishing in-flight requests (at most %.0fs), starting no new ones",
                        why, self.settings.stop_grace_s)  # fmt: skip
            self.report.stopped_by = self.report.stopped_by or why
        else:
            log.warning("%s again: abandoning in-flight requests now", why)

    def know_registry(self, flavour: str | None) -> None:
        """Which registry runs on the storage: "2", "3" or None (not known, so nothing
        that only one registry would remove is removed). distribution 3 removes the
        ``_layers`` links of the blobs it sweeps; 2.8 leaves them."""
        self.registry = registry_major(flavour)
        own = self.settings.prune_layer_links
        self.prune_layer_links = own or self.registry == "3"
        self.existing = KeySet() if self.prune_layer_links else None
        # On 3 without --prune-layer-links: only the links of blobs swept in this run go,
        # as distribution 3 does (a link to a blob that was never there stays). A link
        # goes only if its blob is both swept and not among those that exist after the
        # sweep, so a 64-bit key collision keeps a link, never removes a live one.
        self.swept_keys = KeySet() if self.registry == "3" and not own else None

    async def run(self) -> None:
        """The whole collection; raise MarkIncomplete instead of sweeping on doubt."""
        with stop_signals(self.request_stop):
            try:
                await self._run_bounded()
            except BaseExceptionGroup as group:
                raise first_error(group, (MarkIncomplete, StorageError), "gc failed") from None
            finally:
                self._candidates.close()
                self.report.storage_requests = self.store.stats.as_dict()
                self.report.scan_cache = self.view.cache.counts() if self.view.cache else None
                self.report.finished = time.monotonic()

    async def _run_bounded(self) -> None:
        """Everything inside the run's stop scope (as the clean engine does): after a
        stop, in-flight requests get the grace period, then are abandoned."""
        async with self.stop:
            await self.view.check()
            if self.gate is not None:
                await self.gate()
            async with asyncio.TaskGroup() as group:
                reporter = None
                if self.progress is not None:
                    reporter = group.create_task(self.progress.run())
                try:
                    await self._collect()
                finally:
                    if reporter is not None:
                        reporter.cancel()
        if self.stop.abandoned:
            log.warning(
                "in-flight requests did not finish within %.0fs of the stop; abandoned them "
                "(%d blobs in deletions of unknown outcome, not reported as swept; a rerun "
                "finishes the collection)",
                self.settings.stop_grace_s,
                self.report.counters.abandoned,
            )

    async def _collect(self) -> None:
        log.info("gc: marking every blob the manifests of %s reference", self.view.describe())
        self.view.reads.reconsider_blob_listing()  # after clean's scan, in one window
        await self._mark()
        if self.stop.stop_requested:
            log.warning("gc: stopped during the mark; nothing was swept")
            return
        self._refuse_if_incomplete("mark")
        await self._list_blobs()
        if self.stop.stop_requested:
            log.warning("gc: stopped while listing blobs; nothing was swept")
            return
        self._refuse_if_incomplete("listing blobs")
        c = self.report.counters
        log.info(
            "gc: %s blobs marked in use, %s of %s blobs (%s) unmarked%s",
            f"{c.marked:,}", f"{c.to_sweep:,}", f"{c.blobs:,}", human_bytes(c.to_sweep_bytes),
            "" if self.settings.dry_run else ": sweeping",
        )  # fmt: skip
        if self.settings.dry_run:
            self._candidates.seek(0)
            for line in self._candidates:
                digest, _, size = line.rstrip("\n").partition("\t")
                self.report.swept(digest, int(size))
            return
        await self._sweep()
        if self.prune_layer_links and not self.stop.stop_requested:
            await self._each_repository(self._prune_layer_links, markers=("_layers",))
        if self.settings.purge_uploads_s is not None and not self.stop.stop_requested:
            await self._each_repository(self._purge_uploads, markers=("_uploads",))

    def _refuse_if_incomplete(self, phase: str) -> None:
        if self.report.problem_count:
            first = self.report.problems[0]
            raise MarkIncomplete(
                f"refusing to sweep: {self.report.problem_count} problem(s) while {phase}, "
                f"first: {first}. The registry's own garbage-collect would stop here too, "
                "or act on what regcleaner cannot check; fix or remove what is named, then "
                "run gc again"
            )

    # -- mark -------------------------------------------------------------------------

    async def _each_repository(
        self, work: Callable[[str], Awaitable[None]], *, markers: tuple[str, ...] = ()
    ) -> None:
        names: Channel[str] = Channel(self.width * 4)

        async def produce() -> None:
            try:
                await self.view.repositories(names.put, markers=markers)
            finally:
                await names.close()

        await self._work_through(names, produce(), work)

    async def _work_through(
        self,
        names: Channel[str],
        producer: Coroutine[Any, Any, None],
        work: Callable[[str], Awaitable[None]],
    ) -> None:
        """Run ``work`` on each name the producer puts in ``names``, ``width`` at once."""

        async def worker() -> None:
            while (name := await names.get()) is not None:
                if self.stop.stop_requested:
                    continue
                try:
                    await work(name)
                except StorageError as exc:
                    self.report.problem(f"{name}: {exc}")

        async with asyncio.TaskGroup() as group:
            group.create_task(producer)
            for _ in range(self.width):
                group.create_task(worker())

    async def _mark(self) -> None:
        # Repositories as the registry finds them (by _layers, a file of that name
        # included) and by _manifests as well: see _mark_repository.
        names: Channel[str] = Channel(self.width * 4)
        layers: dict[str, bool] = {}

        async def emit(name: str, found: Mapping[str, EntryKind]) -> None:
            if not layout.registry_can_open(name):
                where = f"repository {name!r}" if name else "the repositories folder itself"
                self.report.problem(
                    f"{where} holds {' and '.join(sorted(found))}, but its name is not one "
                    "the registry can open (reference.WithName or the storage driver's "
                    "path rules reject it): its garbage-collect fails on it"
                )
                return
            if layout.MANIFESTS_DIR not in found:
                self.report.counters.repositories += 1  # blob links only: nothing to mark
                return
            layers[name] = layout.LAYERS_DIR in found
            if self.prune_layer_links:
                self._repositories_with_manifests.add(name)
            await names.put(name)

        def other(key: str) -> None:
            self.report.problem(
                f"{key} is a symbolic link or special file: the registry's garbage-collect "
                "follows it and marks what it finds there, regcleaner follows no links"
            )

        async def produce() -> None:
            try:
                await self.view.repository_folders(emit, markers=(layout.LAYERS_DIR,),
                                                   other=other)  # fmt: skip
            finally:
                await names.close()

        async def mark(name: str) -> None:
            await self._mark_repository(name, has_layers=layers.pop(name))

        await self._work_through(names, produce(), mark)
        self.report.counters.marked = len(self.marked)

    async def _mark_repository(self, name: str, *, has_layers: bool) -> None:
        report = self.report
        if not has_layers:
            report.warning(self._no_layers_warning(name))
        revisions: list[Digest] = []
        links, odd = await self.view.revision_link_files(name)
        for stray in odd:
            report.problem(str(stray))
        for key, content in links:
            if content is None:
                continue  # gone since the listing
            if not layout.is_driver_path(key):
                report.problem(f"{name}: revision link {key}: a path the registry's storage "
                               "driver refuses to read")  # fmt: skip
                continue
            if isinstance(content, StorageError):
                report.problem(f"{name}: cannot read revision link {key}: {content}")
                continue
            try:
                digest = parse_link(content)
            except ValueError as exc:
                report.problem(f"{name}: revision link {key} holds garbage ({exc})")
                continue
            algorithm, _, below = key.partition("/")
            hex_part, _, rest = below.partition("/")
            if algorithm == "sha256" and rest == "link" and is_sha256_hex(hex_part):
                if self.deleted_digests is not None and digest in self.deleted_digests.get(
                    name, ()
                ):
                    continue  # a dry run after clean's dry run: as if it were deleted
                if digest != "sha256:" + hex_part:
                    report.problem(f"{name}: revision link {key} names another digest {digest}")
                    continue
                revisions.append(digest)
            # Any other link (schema1 signatures, a link under another algorithm's folder)
            # names a revision the registry marks only if it is one of the repository's
            # (it looks up revisions/sha256/<hex>/link): already in ``revisions``.
        marked = self.marked
        counters = report.counters
        found_marks = await self.view.manifest_marks(revisions)
        for digest, data in zip(revisions, found_marks, strict=True):
            if isinstance(data, CachedMarks):  # verified before, its blob unchanged (cache)
                if data.schema1 and self.registry != "2":
                    report.warning(self._schema1_warning(name, digest))
                marked.add(blob_key(digest))
                marked.update(blob_key(reference) for reference in data.references)
                counters.manifests += 1
                continue
            if data is None:
                report.problem(f"{name}: manifest {digest}: its blob is missing")
                continue
            if isinstance(data, StorageError):
                report.problem(f"{name}: manifest {digest}: cannot read its blob: {data}")
                continue
            if len(data) > MAX_MANIFEST_BYTES:
                report.problem(f"{name}: manifest {digest}: larger than {MAX_MANIFEST_BYTES}")
                continue
            if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                report.problem(f"{name}: manifest {digest}: content does not match its digest")
                continue
            try:
                found = gomanifest.decode_manifest(data)
            except gomanifest.GoManifestError as exc:
                report.problem(f"{name}: manifest {digest}: {exc}")
                continue
            if found.kind == "schema1" and self.registry != "2":
                report.warning(self._schema1_warning(name, digest))
            marked.add(blob_key(digest))
            for reference in found.references:
                if reference.digest:
                    marked.add(blob_key(reference.digest))
            counters.manifests += 1
        counters.repositories += 1

    def _no_layers_warning(self, name: str) -> str:
        what = {
            "2": "distribution 2.8's garbage-collect does not see it and would sweep the "
            "blobs only its manifests reference",
            "3": "distribution 3's garbage-collect stops on it (Path not found .../_layers) "
            "and sweeps nothing",
            None: "distribution 2.8's garbage-collect would sweep the blobs only its "
            "manifests reference, 3's stops on it",
        }[self.registry]
        return (f"repository {name!r} has no _layers folder: {what}; regcleaner marks "
                "them (keeps them)")  # fmt: skip

    def _schema1_warning(self, name: str, digest: str) -> str:
        where = "this registry" if self.registry == "3" else "distribution 3, if it runs here,"
        return (
            f"{name}: manifest {digest} is schema1: {where} cannot serve it (GET answers 500) "
            "and its garbage-collect stops on it (without --delete-untagged on any schema1 "
            "revision; with it, on a tagged one); regcleaner keeps the blobs it references. "
            "Push the image again in a current format and delete this one"
        )

    # -- list and sweep ---------------------------------------------------------------

    async def _list_blobs(self) -> None:
        counters = self.report.counters
        cutoff = self.clock() - self.settings.min_blob_age_s
        young_matters = self.settings.min_blob_age_s > 0
        marked, existing, spool = self.marked, self.existing, self._candidates

        def consume(blobs: list[BlobInfo], odd: list[StrayEntry]) -> None:
            for stray in odd:
                self.report.problem(str(stray))
            for blob in blobs:
                counters.blobs += 1
                counters.blob_bytes += blob.size
                key = blob_key(blob.digest)
                if key in marked:
                    if existing is not None:
                        existing.add(key)
                    continue
                if young_matters and blob.mtime > cutoff:
                    counters.young += 1
                    if existing is not None:
                        existing.add(key)
                    continue
                counters.to_sweep += 1
                counters.to_sweep_bytes += blob.size
                spool.write(f"{blob.digest}\t{blob.size}\n")

        def progress(folders: int, listed: int) -> None:
            counters.prefixes, counters.prefixes_listed = folders, listed

        recorded = self.view.reads.recorded
        await list_blobs(
            self.store, consume, width=self.width, problem=self.report.problem,
            stopped=lambda: self.stop.stop_requested, progress=progress, recorded=recorded,
        )  # fmt: skip
        if recorded is not None:
            if recorded.replayed:
                log.info("gc: %s blob folders taken from this run's listing of the blobs",
                         f"{recorded.replayed:,}")  # fmt: skip
            recorded.close()  # its temporary file is not needed past the listing

    async def _sweep(self) -> None:
        in_flight = requests_in_flight(self.store)
        slots = asyncio.Semaphore(in_flight)
        counters = self.report.counters
        existing, swept_keys = self.existing, self.swept_keys

        async def sweep(batch: list[tuple[str, int]]) -> None:
            try:
                keys = self.view.blob_removal_keys(Digest(d) for d, _ in batch)
                results = await self.store.delete_many(keys.keys, directories=keys.directories)
            except asyncio.CancelledError:
                counters.abandoned += len(batch)  # the deadline after a stop: outcome unknown
                raise
            finally:
                slots.release()
            for (digest, size), problem in zip(batch, results, strict=True):
                if problem is None:
                    counters.swept += 1
                    counters.swept_bytes += size
                    self.report.swept(digest, size)
                    if swept_keys is not None:
                        swept_keys.add(blob_key(digest))
                else:
                    counters.failed += 1
                    log.error("sweep: %s", problem)
                    if existing is not None:
                        existing.add(blob_key(digest))

        # Batches come from the spool one at a time, so memory stays bounded.
        async with asyncio.TaskGroup() as group:
            for batch in self._spool_batches():
                try:
                    async with self.stop.interruptible():
                        await slots.acquire()
                except StopRequested:
                    break  # a stop while waiting for a slot starts nothing
                # Checked with the slot in hand too: the wait may end as the stop comes.
                if self.stop.stop_requested:
                    slots.release()
                    break
                group.create_task(sweep(batch))

    def _spool_batches(self) -> Iterator[list[tuple[str, int]]]:
        self._candidates.flush()
        self._candidates.seek(0)
        batch: list[tuple[str, int]] = []
        for line in self._candidates:
            digest, _, size = line.rstrip("\n").partition("\t")
            batch.append((digest, int(size)))
            if len(batch) >= SWEEP_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    # -- optional extras ----------------------------------------------------------------

    async def _prune_layer_links(self, name: str) -> None:
        existing, swept = self.existing, self.swept_keys
        assert existing is not None
        if swept is not None and name not in self._repositories_with_manifests:
            return  # distribution 3 does not see a repository without _manifests
        links = await self.view.layer_links(name)
        dangling = []
        marked = self.marked
        for hex_part in links:
            key = blob_key("sha256:" + hex_part)
            # A marked blob's link stays even if no listing showed the blob (one that
            # came after the listing): a link the mark needs is never dangling.
            if key not in existing and key not in marked and (swept is None or key in swept):
                dangling.append(hex_part)
        if dangling and len(dangling) == len(links) and name in self._repositories_with_manifests:
            # Never empty the _layers of a repository with manifests: on object storage
            # the folder would vanish with its last key, and then 2.8's garbage-collect no
            # longer sees the repository (it sweeps what its manifests reference) and
            # 3's stops on it. One dangling link costs nothing.
            dangling.remove(min(dangling))
        if not dangling:
            return
        keys = self.view.layer_link_removal_keys(name, dangling)
        results = await self.store.delete_many(keys.keys, directories=keys.directories)
        self.report.counters.layer_links_removed += sum(1 for r in results if r is None)

    async def _purge_uploads(self, name: str) -> None:
        assert self.settings.purge_uploads_s is not None
        cutoff = self.clock() - self.settings.purge_uploads_s
        for upload, started in await self.view.uploads(name):
            if not isinstance(started, bytes):
                continue  # no startedat: the registry's purge never removes those either
            try:
                when = datetime.fromisoformat(started.decode("ascii").strip()).timestamp()
            except (UnicodeDecodeError, ValueError):
                continue
            if when >= cutoff:
                continue
            keys = await self.view.upload_removal_keys(name, upload)
            results = await self.store.delete_many(keys.keys, directories=keys.directories)
            if all(r is None for r in results):
                self.report.counters.uploads_removed += 1
