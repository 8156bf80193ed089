"""Pushes and re-tags while regcleaner runs: every tag, old or new, still pulls after."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from testkit import images
from testkit.api import RegistryAPI
from testkit.registry import RegistryProcess
from tests.conftest import clean_args


def test_concurrent_pushes_and_retags_never_lose_a_tag(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    repos = [f"busy/r{i}" for i in range(4)]
    old: dict[str, list[str]] = {}
    for repo in repos:
        pushed = [images.push_image(api, repo, "v", seed=f"{repo}-{i}") for i in range(25)]
        old[repo] = [p.digest for p in pushed[:-1]]
    # Age the history on disk, so that --min-age 1h does not keep it: a re-tag during
    # the run rewrites the revision link and makes it young again.
    aged = time.time() - 7200
    for link in (registry.root / "docker/registry/v2/repositories/busy").glob(
        "*/_manifests/revisions/sha256/*/link"
    ):
        os.utime(link, (aged, aged))
    report = tmp_path / "r.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "regcleaner",
         *clean_args(registry, "--rate", "40", "--min-age", "1h"),
         "--report", str(report)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    created: list[tuple[str, str]] = []
    stop = threading.Event()
    rng = random.Random(7)

    def pusher() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            n += 1
            repo = rng.choice(repos)
            if n % 2:
                tag = f"new{n}"
                images.push_image(api, repo, tag, seed=f"during-{n}")
            else:
                digest = rng.choice(old[repo])
                got = api.get_manifest(repo, digest)
                if got.status != 200:
                    continue  # already deleted: nothing to re-tag
                tag = f"revived{n}"
                api.put_manifest(repo, tag, got.body, got.headers["Content-Type"])
            created.append((repo, tag))
            stop.wait(0.05)  # a busy CI pipeline's pace, not a wait for anything

    thread = threading.Thread(target=pusher)
    thread.start()
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        stop.set()
        thread.join(60)
    assert process.returncode == 0, stderr
    document = json.loads(report.read_text())
    reasons = [k["reason"] for r in document["repositories"] for k in r["kept"]]
    revived = [t for _, t in created if t.startswith("revived")]
    assert len(created) > 10
    assert revived, "the pusher never re-tagged an old digest during the run"
    assert document["summary"]["deleted"] > 0
    # Tags made during the run, and the originals, all resolve and pull.
    for repo in repos:
        assert api.tags(repo)
        for tag in api.tags(repo):
            api.pull(repo, tag)
    for repo, tag in created:
        assert tag in api.tags(repo), f"{repo}:{tag} created during the run is gone"
    during = [r for r in reasons if r.startswith(("pushed-during-run", "tagged-during-run"))]
    assert during or not revived
