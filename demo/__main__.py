"""Run the main job end to end on a throwaway local docker-registry.

1. start docker-registry on a free loopback port with a temporary root;
2. push sample images: re-pushed tags, a Docker manifest list, an OCI index, an index
   of indexes, an SBOM referrer and a cosign signature;
3. ``regcleaner clean --dry-run``, then ``regcleaner clean``;
4. ``docker-registry garbage-collect``, then pull every tag and check every digest;
5. the maintenance window on a second registry with the same images: read-only mode,
   ``regcleaner clean --direct --gc`` (removal and blob collection straight from
   storage, after proving the registry cannot write), restart writable, check again.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from testkit.api import RegistryAPI
from testkit.registry import RegistryProcess
from testkit.scenario import Expectation, build_scenario


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def regcleaner(*args: str) -> int:
    command = [sys.executable, "-m", "regcleaner", "clean", *args]
    print("$ regcleaner clean " + " ".join(args), flush=True)
    return subprocess.run(command, check=False).returncode


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="regcleaner-demo-"))
    registry = RegistryProcess(workdir)
    registries = [registry]
    try:
        banner(f"starting docker-registry at {registry.url} (storage {registry.root})")
        registry.start()
        api = RegistryAPI(registry.url)
        expectation = build_scenario(api)
        repos = sorted(expectation.repositories())
        print(
            f"pushed {len(expectation.keep) + len(expectation.delete)} manifests into "
            f"{len(repos)} repositories: {', '.join(repos)}"
        )
        print(f"{len(expectation.delete)} of them are untagged history no tag can reach.")

        args = [
            "--registry-url",
            registry.url,
            "--registry-dir",
            str(registry.root),
            "--progress-interval",
            "0",
            "--min-age",
            "0",
        ]
        banner("dry run: what would be deleted, and why the rest is kept")
        if regcleaner(*args, "--dry-run") != 0:
            return 1
        banner("clean")
        if regcleaner(*args, "--report", str(workdir / "report.json")) != 0:
            return 1
        print(f"JSON report: {workdir / 'report.json'}")

        banner("docker-registry garbage-collect, then pull every tag")
        registry.stop()
        output = registry.garbage_collect()
        print(output.strip().splitlines()[-1])
        registry.start()
        if not verify(api, expectation):
            return 1

        banner("maintenance window: the same images on a second registry, made read-only")
        window = RegistryProcess(workdir / "window")
        registries.append(window)
        window.start()
        window_api = RegistryAPI(window.url)
        expectation = build_scenario(window_api)
        window.readonly = True
        window.restart()
        print("storage.maintenance.readonly.enabled: true (pushes now get 405)")
        args = ["--registry-url", window.url, "--registry-dir", str(window.root),
                "--progress-interval", "0", "--min-age", "0"]  # fmt: skip
        if regcleaner(*args, "--direct", "--gc") != 0:
            return 1
        banner("restart the registry writable, then pull every tag")
        window.readonly = False
        window.restart()
        if not verify(window_api, expectation):
            return 1
        print("\nDemo passed: every tag still pulls and the untagged history is gone.")
        return 0
    finally:
        for server in registries:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def verify(api: RegistryAPI, expectation: Expectation) -> bool:
    """Every tag pulls completely, every kept manifest is served, the history is gone."""
    failures = 0
    for repo in sorted(expectation.repositories()):
        for tag in sorted(api.tags(repo)):
            try:
                digests = api.pull(repo, tag)
            except AssertionError as exc:
                failures += 1
                print(f"  FAIL {repo}:{tag}: {exc}")
            else:
                print(f"  ok   {repo}:{tag} pulls ({len(digests)} manifests and blobs verified)")
    for repo, digest in sorted(expectation.keep):
        if not api.manifest_exists(repo, digest):
            failures += 1
            print(f"  FAIL kept manifest {repo}@{digest} is not served")
    gone = sum(not api.manifest_exists(r, d) for r, d in expectation.delete)
    print(
        f"{gone}/{len(expectation.delete)} untagged history manifests are gone; "
        f"{len(expectation.keep)} in-use manifests (children, referrers, signatures) "
        "are all served."
    )
    if failures or gone != len(expectation.delete):
        print("DEMO FAILED")
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
