"""Empty repositories leave the catalog in the maintenance window, and nothing else
changes (both registries, through the ``registry`` fixture).

``beta`` is left with no tags and no revisions (its manifest deleted through the API);
``beta/nested`` is a real repository inside its folder; ``gamma`` has no manifests but
an upload in progress; ``alpha`` is an ordinary repository. In the window (registry
read-only) only ``beta`` goes: the catalog no longer lists it, and every tag of the
others still pulls.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from regcleaner.usage.command import prune_empty_repositories
from testkit.api import RegistryAPI
from testkit.images import push_image, push_multiarch
from testkit.registry import RegistryProcess
from tests.conftest import clean_args, run_cli

APP = typer.Typer()
APP.command("prune-empty-repositories")(prune_empty_repositories)
APP.command("unused")(lambda: None)

TAGS = {"alpha": ["v1", "multi"], "beta/nested": ["n1"]}


def catalog(api: RegistryAPI) -> list[str]:
    response = api.request("GET", "/v2/_catalog?n=1000")
    assert response.status == 200, response.body
    return list(json.loads(response.body)["repositories"])


def storage_files(root: Path) -> set[str]:
    """Every file under the storage root (relative paths)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def setup_registry(registry: RegistryProcess) -> RegistryAPI:
    api = RegistryAPI(registry.url)
    push_image(api, "alpha", "v1", seed="alpha")
    push_multiarch(api, "alpha", "multi", seed="alpha-multi")
    gone = push_image(api, "beta", "old", seed="beta")
    push_image(api, "beta/nested", "n1", seed="nested")
    response = api.request("DELETE", f"/v2/beta/manifests/{gone.digest}")
    assert response.status == 202
    started = api.request("POST", "/v2/gamma/blobs/uploads/", b"")
    assert started.status == 202  # an upload in progress: gamma has _uploads only...
    push_image(api, "gamma", "tmp", seed="gamma")  # ...and, once its manifest is gone,
    gamma = api.get_manifest("gamma", "tmp")
    digest = gamma.headers["Docker-Content-Digest"]
    assert api.request("DELETE", f"/v2/gamma/manifests/{digest}").status == 202
    return api


def window(registry: RegistryProcess, readonly: bool) -> None:
    registry.readonly = readonly
    registry.restart()


def prune(registry: RegistryProcess, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        APP,
        ["prune-empty-repositories", "--registry-url", registry.url, "--registry-dir",
         str(registry.root), "--progress-interval", "0", *extra],
        catch_exceptions=False,
    )  # fmt: skip
    return result.exit_code, result.stdout + result.stderr


def assert_nothing_else_changed(api: RegistryAPI) -> None:
    for repository, tags in TAGS.items():
        assert sorted(api.tags(repository)) == sorted(tags)
        for tag in tags:
            api.pull(repository, tag)


def test_an_empty_repository_leaves_the_catalog_after_the_window(
    registry: RegistryProcess,
) -> None:
    api = setup_registry(registry)
    assert "beta" in catalog(api)
    files = storage_files(registry.root)

    # A dry run lists what would go and changes nothing (no window needed).
    code, output = prune(registry, "--dry-run", "--min-age", "0")
    assert code == 0, output
    assert "would remove beta\n" in output
    assert "kept gamma: uploads in progress" in output
    assert storage_files(registry.root) == files

    # Outside the window: refused, nothing removed.
    code, output = prune(registry, "--min-age", "0")
    assert code == 2, output
    assert storage_files(registry.root) == files

    # With the default grace, blobs linked seconds ago keep the repository.
    window(registry, readonly=True)
    code, output = prune(registry)
    assert code == 0, output
    assert "kept beta: a blob was linked" in output
    assert storage_files(registry.root) == files

    code, output = prune(registry, "--min-age", "0")
    assert code == 0, output
    assert "removed beta\n" in output
    window(registry, readonly=False)

    listed = catalog(api)
    assert "beta" not in listed
    assert {"alpha", "beta/nested"} <= set(listed)
    left = storage_files(registry.root)
    gone = files - left
    assert gone
    assert all(f.startswith("docker/registry/v2/repositories/beta/_") for f in gone)
    assert not any(f.startswith("docker/registry/v2/repositories/beta/nested/") for f in gone)
    assert (registry.root / "docker/registry/v2/repositories/gamma/_uploads").is_dir()
    assert_nothing_else_changed(api)


def test_clean_direct_prunes_what_it_emptied(registry: RegistryProcess) -> None:
    api = RegistryAPI(registry.url)
    push_image(api, "alpha", "v1", seed="alpha")
    old = push_image(api, "delta", None, seed="delta-old")  # untagged: clean deletes it
    push_image(api, "beta/nested", "n1", seed="nested")
    assert "delta" in catalog(api)
    dry = run_cli(clean_args(registry, "--direct", "--dry-run", "--prune-empty-repositories",
                             "--output", "json"))  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["empty_repositories"]["would_remove"] == ["delta"]
    assert "delta" in catalog(api)
    window(registry, readonly=True)
    result = run_cli(clean_args(registry, "--direct", "--prune-empty-repositories"))
    assert result.exit_code == 0, result.output
    window(registry, readonly=False)
    assert "delta" not in catalog(api), result.output
    assert not api.manifest_exists("delta", old.digest)
    assert sorted(catalog(api)) == ["alpha", "beta/nested"]
    api.pull("alpha", "v1")
    api.pull("beta/nested", "n1")
