"""The image, the Kubernetes manifests and the docs site, checked offline."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testkit import images
from testkit.api import RegistryAPI
from testkit.registry import V3, Flavour, RegistryProcess, find_registry_binary

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_hadolint_passes() -> None:
    done = subprocess.run([BIN / "hadolint", str(ROOT / "Dockerfile")], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_shape() -> None:
    steps = dockerfile_instructions()
    froms = [rest for kw, rest in steps if kw == "FROM"]
    assert len(froms) == 2, "multi-stage: build, then runtime"
    assert all("slim" in f for f in froms)
    user = [rest for kw, rest in steps if kw == "USER"][-1]
    assert not user.startswith(("0", "root"))
    assert ("ENTRYPOINT", '["regcleaner"]') in steps
    assert ("CMD", '["clean"]') in steps
    # On disk the CLI's default is /registry already; on S3 a value here would move the
    # older script's default (the bucket root).
    assert not any(kw == "ENV" and "REGISTRY_DIR" in rest for kw, rest in steps)
    assert ("VOLUME", '["/registry"]') in steps


@pytest.fixture
def registry_flavour() -> Flavour:
    """The image's install and entrypoint do not depend on the registry: this slow test
    runs once, against ``registry:3``'s version (the suite covers both elsewhere)."""
    find_registry_binary(V3)
    return V3


def test_dockerfile_steps_install_and_run_the_entrypoint(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    """Run the build stage's steps (COPY, venv, pip install) and the runtime's entrypoint."""
    steps = dockerfile_instructions()
    context = tmp_path / "src"
    build_stage = steps[: [kw for kw, _ in steps].index("FROM", 1)]
    for keyword, rest in build_stage:
        if keyword == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                target = context / source.rstrip("/").split("/")[-1]
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target,
                                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / source, target)
    run = next(rest for kw, rest in build_stage if kw == "RUN")
    venv = tmp_path / "opt-regcleaner"
    script = run.replace("/opt/regcleaner", str(venv)).replace(
        "python -m venv", f"{sys.executable} -m venv"
    )
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(["sh", "-c", script], cwd=context, env=env, capture_output=True,
                          text=True, check=False, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # The image runs with PYTHONDONTWRITEBYTECODE as a non-root user: the bytecode must
    # come from the build, or every start compiles aiohttp and regcleaner again.
    for module in ("regcleaner/engine.py", "aiohttp/client.py"):
        installed = next(venv.glob(f"lib/python*/site-packages/{module}"))
        assert list(installed.parent.glob(f"__pycache__/{installed.stem}.*.pyc")), module

    for i in range(3):
        images.push_image(api, "image/app", "v", seed=f"img{i}")
    # As `docker run -v ...:/registry -e REGISTRY_URL=... image`: env only, default CMD.
    run_env = {
        "PATH": f"{venv}/bin:/usr/bin:/bin",
        "REGISTRY_URL": registry.url,
        "REGISTRY_DIR": str(registry.root),
        "DRY_RUN": "true",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run([venv / "bin" / "regcleaner", "clean"], env=run_env,
                            capture_output=True, text=True, check=False, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "would delete" in result.stdout
    assert "uvloop" in subprocess.run([venv / "bin" / "pip", "list"], capture_output=True,
                                      text=True, check=True).stdout  # fmt: skip


@pytest.mark.parametrize("manifest", sorted((ROOT / "deploy/kubernetes").glob("*.yaml")),
                         ids=lambda p: p.name)  # fmt: skip
def test_kubernetes_manifests_validate(manifest: Path) -> None:
    done = subprocess.run([BIN / "kubernetes-validate", "--strict", "--quiet", str(manifest)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_kubernetes_manifests_are_operable() -> None:
    cron = (ROOT / "deploy/kubernetes/cronjob.yaml").read_text()
    assert "concurrencyPolicy: Forbid" in cron
    assert "successfulJobsHistoryLimit" in cron
    assert "failedJobsHistoryLimit" in cron
    job = (ROOT / "deploy/kubernetes/job.yaml").read_text()
    assert "readOnly: true" in job
    assert "REGISTRY_PASSWORD_FILE" in job
    indexed = (ROOT / "deploy/kubernetes/indexed-job.yaml").read_text()
    assert "completionMode: Indexed" in indexed
    assert "--shards" in indexed
    maintenance = (ROOT / "deploy/kubernetes/maintenance-job.yaml").read_text()
    assert '"--direct", "--gc"' in maintenance
    assert "{name: registry-data, mountPath: /registry}" in maintenance  # read-write
    assert "REGISTRY_URL" in maintenance  # the gate probes the registry
    for text in (cron, job, indexed, maintenance):
        assert "requests:" in text


def test_docs_build_strict(tmp_path: Path) -> None:
    done = subprocess.run(
        [BIN / "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site/index.html").exists()
    assert (tmp_path / "site/safety/index.html").exists()
