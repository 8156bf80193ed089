"""The scan cache on real storage: a registry's own disk layout, changed through its API
between a cold and a warm run (disk validators: mtime and size), and the same
registry layout in a real S3 server (validators: ETags), where a warm run of an
unchanged bucket makes no GET."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from regcleaner import layout as paths
from regcleaner.config import S3Options
from regcleaner.digest import Digest
from regcleaner.manifests import ManifestRefs
from regcleaner.scancache import ScanCache
from regcleaner.storage.filesystem import FilesystemStore
from regcleaner.storage.s3 import S3Store
from testkit.api import RegistryAPI
from testkit.images import push_image
from testkit.registry import RegistryProcess
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3
from tests.unit.test_scan_cache import MODES, Outcome, build, scan

pytestmark = pytest.mark.integration


def run_on_disk(root: Path, cache: ScanCache | None) -> Outcome:
    return asyncio.run(scan(FilesystemStore(root), cache))


def test_warm_equals_cold_after_pushes_retags_and_deletes_through_the_registry(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    api = RegistryAPI(registry.url)
    first = push_image(api, "app", "v1", seed="one")
    second = push_image(api, "app", "v2", seed="two")
    push_image(api, "app", None, seed="three")
    push_image(api, "team/api", "latest", seed="four", oci=True)
    hour_ago = time.time() - 3600  # files this fresh are not cached (cachedreads.RACY_S)
    for file in registry.root.rglob("*"):
        os.utime(file, (hour_ago, hour_ago), follow_symlinks=False)
    path = tmp_path / "cache.sqlite"
    cold_before = run_on_disk(registry.root, ScanCache.open(path, "disk"))
    # Someone else's changes between the runs, through the registry.
    push_image(api, "app", "v3", seed="five")  # a push
    api.put_manifest("app", "v1", api.get_manifest("app", second.digest).body,
                     second.media_type)  # fmt: skip  # a re-tag
    deleted = api.request("DELETE", f"/v2/app/manifests/{first.digest}")
    assert deleted.status == 202
    corrupt = registry.root / paths.blob_data(Digest(second.digest))
    corrupt.write_bytes(corrupt.read_bytes()[:-1] + b" ")  # same size, new mtime
    cold = run_on_disk(registry.root, None)
    cache = ScanCache.open(path, "disk")
    warm = run_on_disk(registry.root, cache)
    assert warm == cold
    assert cache.hits > 0  # what did not change came from the cache
    assert warm != cold_before
    problems = [i for i in warm.manifests["app"].values() if not isinstance(i, ManifestRefs)]
    assert problems  # the corrupted manifest was read again and refused


@pytest.mark.parametrize("mode", MODES)
def test_a_warm_run_on_s3_reads_only_what_changed(
    moto_server: MotoS3, tmp_path: Path, mode: str
) -> None:
    registry = build([(4, 2, True), (3, 1, True)])
    bucket = f"scan-cache-{mode}"
    client = moto_server.client()
    client.create_bucket(Bucket=bucket)
    for key, found in registry.store.objects.items():
        client.put_object(Bucket=bucket, Key=f"root/{key}", Body=found.data)
    options = S3Options(bucket=bucket, prefix="/root", region=REGION,
                        endpoint_url=moto_server.url, access_key=ACCESS_KEY,
                        secret_key=SECRET_KEY)  # fmt: skip
    path = tmp_path / "cache.sqlite"

    def once(cached: bool) -> tuple[Outcome, S3Store]:
        store = S3Store(options)
        cache = ScanCache.open(path, store.describe()) if cached else None

        async def go() -> Outcome:
            try:
                return await scan(store, cache, mode)
            finally:
                await store.aclose()

        return asyncio.run(go()), store

    cold, cold_store = once(True)
    warm, warm_store = once(True)
    assert warm == cold
    assert cold_store.stats.get > 0
    assert warm_store.stats.get == 0
    assert warm_store.stats.head == (0 if mode != "head" else warm_store.stats.head)
    # A manifest blob rewritten in place (a new ETag): read again, and refused.
    victim = sorted(registry.manifests)[0]
    client.put_object(Bucket=bucket, Key=f"root/{paths.blob_data(victim)}", Body=b"{}")
    changed, changed_store = once(True)
    assert changed == once(False)[0]
    # Read again by the scan and by gc's marking, in each repository that has it: what
    # is unreadable is never cached.
    assert changed_store.stats.get == 2 * len(
        [m for m in changed.manifests.values() if victim in m]
    )
    infos = [m[victim] for m in changed.manifests.values() if victim in m]
    assert infos
    assert not any(isinstance(info, ManifestRefs) for info in infos)
