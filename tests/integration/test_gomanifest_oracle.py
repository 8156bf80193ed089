"""The real distribution (2.8.2, and 3.1.1 where it differs) is the oracle for
``regcleaner.gomanifest``.

Each manifest is written straight into a registry root in distribution's disk layout
(one repository each) and ``docker-registry garbage-collect --dry-run`` reads it: for
every revision it prints ``<repo>: marking manifest <digest> `` and then, after
``manifestStore.Get`` and ``References()`` succeeded, ``<repo>: marking blob <digest>``
for each reference, in order (registry/storage/garbagecollect.go). A Get error, or the
panic of the mediaType-less case, stops the whole run with a non-zero exit: that
manifest is recorded as failed, the repositories already read are removed, and the run
goes on with the rest. So a batch costs one process per failing manifest plus one.

3.1.1 prints the same lines, but each blob once per run (its mark set is shared), and
refuses schema1: see ``assert_agrees`` and ``V3_DIFFERS``.

The verdicts: 2.8.2 read it ⇔ ``decode_manifest`` returns references equal to what was
marked (or refuses it with ``stricter`` set, a documented deliberate refusal); 2.8.2 failed
⇔ ``decode_manifest`` raises a ``GoManifestError`` that is not ``stricter``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regcleaner.gomanifest import GoManifestError, decode_manifest
from testkit.registry import V2, V3, Flavour, find_registry_binary

pytestmark = pytest.mark.integration


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"

MARK_MANIFEST = re.compile(rb"(m\d{4}): marking manifest sha256:[0-9a-f]{64} ")
MARK_BLOB = re.compile(rb"(m\d{4}): marking blob (.*)")


@dataclass(frozen=True)
class Verdict:
    """What garbage-collect made of one manifest."""

    ok: bool
    marked: tuple[str, ...] = ()
    error: str = ""
    earlier: frozenset[str] = frozenset()
    """Blobs printed before this manifest in the same run: 3.x prints each blob once
    per run (its mark set is shared), so it does not print these again."""


def write_manifest(root: Path, repo: str, data: bytes) -> None:
    """The blob and the revision link, as distribution lays them out on disk."""
    hexdigest = hashlib.sha256(data).hexdigest()
    v2 = root / "docker/registry/v2"
    blob = v2 / "blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    repository = v2 / "repositories" / repo
    link = repository / "_manifests/revisions/sha256" / hexdigest / "link"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.write_text(f"sha256:{hexdigest}")
    # catalog.go's handleRepository finds a repository by its _layers directory.
    (repository / "_layers").mkdir(exist_ok=True)


def run_gc(binary: str, config: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [binary, "garbage-collect", "--dry-run", str(config)],
        capture_output=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )


def oracle(manifests: list[bytes], flavour: Flavour = V2) -> list[Verdict]:
    """Run the registry's mark phase over ``manifests`` and say what it made of each."""
    binary = find_registry_binary(flavour)
    with tempfile.TemporaryDirectory(prefix="gomanifest-oracle-") as tmp:
        root = Path(tmp) / "root"
        names = [f"m{i:04d}" for i in range(len(manifests))]
        for name, data in zip(names, manifests, strict=True):
            write_manifest(root, name, data)
        config = Path(tmp) / "config.yml"  # JSON is YAML
        config.write_text(
            json.dumps(
                {
                    "version": 0.1,
                    "log": {"level": "error"},
                    "storage": {"filesystem": {"rootdirectory": str(root)}},
                }
            )
        )
        verdicts: dict[str, Verdict] = {}
        while len(verdicts) < len(names):
            result = run_gc(binary, config)
            order: list[str] = []
            marked: dict[str, list[str]] = {}
            printed: set[str] = set()
            earlier: dict[str, frozenset[str]] = {}
            for line in result.stdout.split(b"\n"):
                if found := MARK_MANIFEST.fullmatch(line):
                    repo = found.group(1).decode()
                    order.append(repo)
                    marked[repo] = []
                    earlier[repo] = frozenset(printed)
                elif found := MARK_BLOB.fullmatch(line):
                    blob = found.group(2).decode("utf-8", "surrogateescape")
                    marked[found.group(1).decode()].append(blob)
                    printed.add(blob)
            assert not set(order) & set(verdicts), "a repository was read twice"
            done = order if result.returncode == 0 else order[:-1]
            for repo in done:
                verdicts[repo] = Verdict(True, tuple(marked[repo]), earlier=earlier[repo])
            if result.returncode != 0:
                assert order, result.stderr.decode(errors="replace")
                stderr = result.stderr.decode(errors="replace").strip()
                verdicts[order[-1]] = Verdict(False, error=stderr.splitlines()[0][:300])
            else:
                assert len(verdicts) == len(names), "garbage-collect skipped a repository"
            for repo in order:
                shutil.rmtree(root / "docker/registry/v2/repositories" / repo)
        return [verdicts[name] for name in names]


def assert_agrees(
    data: bytes, verdict: Verdict, flavour: Flavour = V2, *, v3_reads: bool = False
) -> None:
    """``decode_manifest`` says what the registry said (or refuses on purpose where it
    read it). 3.x prints each blob once per run: what it printed for a manifest is what
    2.8.2 marks, less repeats and blobs an earlier manifest of the run marked. 3.x
    refuses schema1, which regcleaner reads as 2.8.2 does (it keeps those blobs), and
    reads what ``v3_reads`` says it does where regcleaner refuses."""
    try:
        manifest = decode_manifest(data)
    except GoManifestError as exc:
        error = exc
    else:
        ours = tuple(d.digest for d in manifest.references)
        if flavour == V3 and manifest.kind == "schema1":
            assert not verdict.ok, f"3.x read schema1: {verdict.marked}"
            assert "unrecognized manifest schema version 1" in verdict.error
            return
        assert verdict.ok, f"{flavour} failed ({verdict.error}), we read {ours}"
        if flavour == V3:
            ours = tuple(r for r in dict.fromkeys(ours) if r not in verdict.earlier)
        assert ours == verdict.marked
        return
    if error.stricter:
        assert verdict.ok, f"stricter refusal, but {flavour} failed too: {verdict.error}"
    elif v3_reads:
        assert verdict.ok, f"3.x was expected to read it: {verdict.error}"
    else:
        assert not verdict.ok, f"{flavour} read {verdict.marked} but we failed: {error}"


def d(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


A, B, C = d(1), d(2), d(3)
PLACEHOLDERS = {
    "$V2": '"schemaVersion":2',
    "$A": json.dumps(A),
    "$B": json.dumps(B),
    "$C": json.dumps(C),
    "$IDX": json.dumps(OCI_INDEX),
    "$IMG": json.dumps(OCI_MANIFEST),
    "$LIST": json.dumps(DOCKER_LIST),
    "$DV2": json.dumps(DOCKER_V2),
}


def j(text: str) -> bytes:
    """JSON text with ``$``-placeholders (see PLACEHOLDERS), as UTF-8."""
    for name in sorted(PLACEHOLDERS, key=len, reverse=True):
        text = text.replace(name, PLACEHOLDERS[name])
    return text.encode()


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


SCHEMA1_PRETTY = j(
    '{\n   "schemaVersion": 1,\n   "name": "library/x",\n   "tag": "latest",\n'
    '   "architecture": "amd64",\n   "fsLayers": [\n      {"blobSum": $A},\n'
    '      {"blobSum": $B},\n      {"blobSum": $A}\n   ],\n'
    '   "history": [{"v1Compatibility": "{}"}],\n   "signatures": [{"header": {"alg": "ES256"},'
    ' "signature": "xx", "protected": "yy"}]\n}\n'
)

# (name, bytes, expected: True = 2.8.2 reads it, False = 2.8.2 fails)
CASES: list[tuple[str, bytes, bool]] = [
    # The four ways regcleaner used to miss children.
    ("Manifests", j('{$V2,"Manifests":[{"digest":$A}]}'), True),
    ("manifests then Manifests", j('{$V2,"manifests":[],"Manifests":[{"digest":$A}]}'), True),
    ("long s", j('{$V2,"manifeſts":[{"digeſt":$A}]}'), True),
    ("digest then Digest", j('{$V2,"manifests":[{"digest":$A,"Digest":$B}]}'), True),
    ("Digest then digest", j('{$V2,"manifests":[{"Digest":$A,"digest":$B}]}'), True),
    ("kelvin matches no field", j('{$V2,"manifests":[{"digest":$A,"\u212a":$B}]}'), True),
    ("MEDIATYPE", j('{$V2,"MEDIATYPE":$IDX,"manifests":[{"digest":$A}]}'), True),
    ("mediaType twice", j('{$V2,"mediaType":$IMG,"mediaType":$IDX,"manifests":[{"digest":$A}]}'),
     True),
    ("mediaType null", j('{$V2,"mediaType":$IDX,"mediaType":null,"manifests":[{"digest":$A}]}'),
     True),
    ("escaped key", j('{$V2,"m\\u0061nifests":[{"\\u0064igest":$A}]}'), True),
    ("docker list", j('{$V2,"mediaType":$LIST,"manifests":[{"digest":$A,"platform":'
                      '{"os":"linux","features":["sse4"],"OS.Version":"1"}}]}'), True),
    # Merges.
    ("slice resurrection", j('{$V2,"layers":[{"digest":$A},{"digest":$B},{"digest":$C}],'
                             '"layers":[{"size":1}],"layers":[{},{}]}'), True),
    ("slice regrown", j('{$V2,"layers":[{"digest":$A},{"digest":$B},{"digest":$C},{"digest":$A}],'
                        '"layers":[{}],"layers":[{},{},{},{},{}]}'), True),
    ("struct merge", j('{$V2,"config":{"digest":$A,"size":1},"Config":{"size":2}}'), True),
    ("element merge", j('{$V2,"manifests":[{"digest":$A}],"manifests":[{"mediaType":"x"}]}'), True),
    ("layers then null", j('{$V2,"layers":[{"digest":$A}],"layers":null}'), True),
    ("digest then null", j('{$V2,"config":{"digest":$A,"digest":null}}'), True),
    ("config null", j('{$V2,"config":{"digest":$A},"config":null}'), True),
    ("no mediaType, manifests null", j('{$V2,"manifests":null,"layers":[{"digest":$A}]}'), True),
    ("no mediaType, manifests []", j('{$V2,"manifests":[]}'), True),
    ("no mediaType, nothing", j("{$V2}"), True),
    ("no mediaType, manifests then null", j('{$V2,"manifests":[{"digest":$A}],"manifests":null}'),
     True),
    # Type errors.
    ("size string", j('{$V2,"manifests":[{"digest":$A,"size":"3"}]}'), False),
    ("size 1.5", j('{$V2,"manifests":[{"digest":$A,"size":1.5}]}'), False),
    ("size 2e0", j('{$V2,"layers":[{"digest":$A,"size":2e0}]}'), False),
    ("size 2.0", j('{$V2,"mediaType":$DV2,"config":{"size":2.0}}'), False),
    ("size int64 max", j('{$V2,"layers":[{"digest":$A,"size":9223372036854775807}]}'), True),
    ("size int64 min", j('{$V2,"layers":[{"digest":$A,"size":-9223372036854775808}]}'), True),
    ("size beyond int64", j('{$V2,"layers":[{"digest":$A,"size":9223372036854775808}]}'), False),
    ("size -0", j('{$V2,"layers":[{"digest":$A,"size":-0}]}'), True),
    ("size true", j('{$V2,"layers":[{"digest":$A,"size":true}]}'), False),
    ("size 1e400", j('{$V2,"layers":[{"digest":$A,"size":1e400}]}'), False),
    ("index platform 5", j('{$V2,"manifests":[{"digest":$A,"platform":5}]}'), False),
    ("index platform null", j('{$V2,"manifests":[{"digest":$A,"platform":null}]}'), True),
    ("index platform features 5",
     j('{$V2,"manifests":[{"digest":$A,"platform":{"features":5}}]}'), False),
    ("layer platform features 5 (unknown to v1.Platform)",
     j('{$V2,"layers":[{"digest":$A,"platform":{"features":5}}]}'), True),
    ("layer platform string", j('{$V2,"layers":[{"digest":$A,"platform":"x"}]}'), False),
    ("config platform os.features", j('{$V2,"config":{"platform":{"OS.Features":[1]}}}'), False),
    ("annotations number", j('{$V2,"manifests":[{"digest":$A,"annotations":{"a":1}}]}'), False),
    ("annotations null value", j('{$V2,"manifests":[{"digest":$A,"annotations":{"a":null}}]}'),
     True),
    ("manifest annotations list", j('{$V2,"annotations":[],"layers":[]}'), False),
    ("urls string", j('{$V2,"layers":[{"digest":$A,"urls":"x"}]}'), False),
    ("urls [null]", j('{$V2,"layers":[{"digest":$A,"urls":[null]}]}'), True),
    ("digest number", j('{$V2,"layers":[{"digest":5}]}'), False),
    ("layer is a string", j('{$V2,"layers":[$A]}'), False),
    ("unknown fields hold anything",
     j('{$V2,"x":{"size":"y"},"layers":[{"digest":$A,"sizes":"3","x":[1e400]}]}'), True),
    # Dispatch.
    ("unknown mediaType", j('{$V2,"mediaType":"application/json","config":{},"layers":[]}'), False),
    ("mediaType other case", j('{$V2,"mediaType":"application/vnd.OCI.image.manifest.v1+json"}'),
     False),
    ("schemaVersion 3", j('{"schemaVersion":3,"manifests":[]}'), False),
    ("schemaVersion string", j('{"schemaVersion":"2","manifests":[{"digest":$A}]}'), False),
    ("schemaVersion 2.0", j('{"schemaVersion":2.0,"manifests":[{"digest":$A}]}'), False),
    ("schemaVersion absent", j('{"manifests":[{"digest":$A}]}'), False),
    ("SCHEMAVERSION", j('{"SCHEMAVERSION":2,"manifests":[{"digest":$A}]}'), True),
    ("no mediaType, bad manifests: 2.8.2 panics", j('{$V2,"manifests":5}'), False),
    ("no mediaType, bad layers", j('{$V2,"layers":5}'), False),
    ("no mediaType, list ok, bad config", j('{$V2,"config":{"size":"1"}}'), False),
    ("schema2 explicit",
     j('{$V2,"mediaType":$DV2,"config":{"digest":$A},"layers":[{"digest":$B}]}'), True),
    ("top-level array", j("[]"), False),
    ("top-level null", j("null"), False),
    # Index / manifest confusion: 2.8.2 reads these (we refuse them, stricter).
    ("index with layers", j('{$V2,"mediaType":$IDX,"manifests":[{"digest":$A}],"layers":[]}'),
     True),
    ("image with manifests", j('{$V2,"mediaType":$IMG,"manifests":[{"digest":$A}],"layers":[]}'),
     True),
    ("no mediaType, both", j('{$V2,"manifests":[{"digest":$A}],"config":{"digest":$B}}'), True),
    ("subject type error", j('{$V2,"layers":[],"subject":5}'), True),
    ("subject ok", j('{$V2,"layers":[],"subject":{"digest":$A}}'), True),
    # Depth: Go accepts 10,000 levels in all, the top-level object included.
    ("depth 10000 unknown", j(f'{{$V2,"x":{deep(9999)}}}'), True),
    ("depth 10001 unknown", j(f'{{$V2,"x":{deep(10000)}}}'), False),
    ("depth 100000 unknown", j(f'{{$V2,"x":{deep(100_000)}}}'), False),
    ("depth 10000 in config", j(f'{{$V2,"config":{{"x":{deep(9998)}}}}}'), True),
    ("depth 10000 in layers", j(f'{{$V2,"layers":{deep(9999)}}}'), False),
    ("depth 100000 in layers", j(f'{{$V2,"layers":{deep(100_000)}}}'), False),
    ("huge integer, unknown field", j(f'{{$V2,"x":{"7" * 5000}}}'), True),
    # Syntax and encoding.
    ("invalid UTF-8 in digest",
     j('{$V2,"layers":[{"digest":"a') + b"\xff\xe2\x82\xed\xa0\x80" + j('b"}]}'), True),
    ("invalid UTF-8 in unknown", j('{$V2,"x":"') + b"\xc0\x80" + j('","layers":[]}'), True),
    ("invalid UTF-8 in key",
     j('{$V2,"lay') + b"\xff" + j('ers":5,"layers":[{"digest":$A}]}'), True),
    ("lone surrogate escape", j('{$V2,"layers":[{"digest":"\\ud800x\\udc00\\ud83d\\ude00"}]}'),
     True),
    ("BOM", b"\xef\xbb\xbf" + j('{$V2,"layers":[]}'), False),
    ("NaN", j('{$V2,"x":NaN,"layers":[]}'), False),
    ("Infinity", j('{$V2,"x":-Infinity,"layers":[]}'), False),
    ("trailing garbage", j('{$V2,"layers":[]}x'), False),
    ("two documents", j('{$V2,"layers":[]} {}'), False),
    ("trailing comma", j('{$V2,"layers":[],}'), False),
    ("control character", j('{$V2,"x":"a\tb","layers":[]}'), False),
    ("leading zero", j('{$V2,"x":01,"layers":[]}'), False),
    ("whitespace around", j(' \r\n\t{$V2,"layers":[]} \n'), True),
    # schema1: the stored signatures are not read; libtrust decodes into interface{}.
    ("schema1 pretty", SCHEMA1_PRETTY, True),
    ("schema1 compact", j('{"schemaVersion":1,"fsLayers":[{"blobSum":$A}]}'), True),
    ("schema1 tabs", j('{\n\t"schemaVersion":1,\n\t"fsLayers":[{"blobSum":$A}]\r\n}\r\n'), True),
    ("schema1 signatures junk", j('{"schemaVersion":1,"signatures":5,"fsLayers":[{"blobSum":$A}]}'),
     True),
    ("schema1 1e400", j('{"schemaVersion":1,"x":[1e400],"fsLayers":[{"blobSum":$A}]}'), False),
    ("schema1 -1e400", j('{"schemaVersion":1,"x":{"y":-1e400},"fsLayers":[]}'), False),
    ("schema1 huge integer", j(f'{{"schemaVersion":1,"x":{"9" * 400},"fsLayers":[]}}'), False),
    ("schema1 1e-400", j('{"schemaVersion":1,"x":1e-400,"fsLayers":[{"blobSum":$A}]}'), True),
    ("schema1 max float", j('{"schemaVersion":1,"x":1.7976931348623157e308}'), True),
    ("schema1 above max float", j('{"schemaVersion":1,"x":1.7976931348623159e308}'), False),
    ("schema1 blobSum number", j('{"schemaVersion":1,"fsLayers":[{"blobSum":5}]}'), False),
    ("schema1 history number", j('{"schemaVersion":1,"history":[{"v1Compatibility":5}]}'), False),
    ("schema1 name number", j('{"schemaVersion":1,"name":5}'), False),
    ("schema1 fold and merge", j('{"schemaVersion":1,"FSLAYERS":[{"blobSum":$A},{"blobSum":$B}],'
                                 '"fsLayerſ":[{"BlobSum":null}]}'), True),
    ("schema1 any mediaType", j('{"schemaVersion":1,"mediaType":"x","fsLayers":[{"blobSum":$A}]}'),
     True),
    ("schema1 deep unknown", j(f'{{"schemaVersion":1,"x":{deep(9999)},"fsLayers":[]}}'), True),
]  # fmt: skip

# Where 3.1.1's verdict is not 2.8.2's:
# - it refuses every schema1 manifest ("unrecognized manifest schema version 1");
#   regcleaner reads those as 2.8.2 does, so on 3 it keeps their blobs where 3's
#   garbage-collect stops;
# - V3_READS: it reads these, which 2.8.2 and regcleaner refuse; on 3 regcleaner's gc
#   refuses to sweep where 3's would go on (stricter, never the other way).
V3_READS = frozenset({"index platform features 5"})
V3_DIFFERS: dict[str, bool] = {
    **{name: False for name, _data, _ok in CASES if name.startswith("schema1")},
    **dict.fromkeys(V3_READS, True),
}


@pytest.fixture(scope="module")
def verdicts(registry_flavour: Flavour) -> dict[str, Verdict]:
    found = oracle([data for _name, data, _ok in CASES], registry_flavour)
    return {name: verdict for (name, _data, _ok), verdict in zip(CASES, found, strict=True)}


def test_case_names_are_unique() -> None:
    assert len({name for name, _data, _ok in CASES}) == len(CASES)


@pytest.mark.parametrize(("name", "data", "expected"), CASES, ids=[c[0] for c in CASES])
def test_agrees_with_the_registry(
    verdicts: dict[str, Verdict],
    registry_flavour: Flavour,
    name: str,
    data: bytes,
    expected: bool,
) -> None:
    """``expected`` is what 2.8.2 makes of the case; 3.1.1 differs only where
    V3_DIFFERS says."""
    verdict = verdicts[name]
    if registry_flavour == V3:
        expected = V3_DIFFERS.get(name, expected)
    assert verdict.ok is expected, verdict  # the oracle says what this case claims
    assert_agrees(data, verdict, registry_flavour,
                  v3_reads=registry_flavour == V3 and name in V3_READS)  # fmt: skip


def test_stricter_refusals_are_the_documented_ones(
    verdicts: dict[str, Verdict], registry_flavour: Flavour
) -> None:
    stricter = set()
    for name, data, _ok in CASES:
        try:
            decode_manifest(data)
        except GoManifestError as exc:
            if exc.stricter:
                stricter.add(name)
    assert stricter == {
        "index with layers",
        "image with manifests",
        "no mediaType, both",
        "subject type error",
    }
    assert all(verdicts[name].ok for name in stricter)


# Random manifests: key spellings, duplicates, nulls, merges and a few type errors.
KEY_SPELLINGS = {
    "schemaVersion": ["schemaVersion", "SchemaVersion", "schemaverſion"],
    "mediaType": ["mediaType", "MediaType", "MEDIATYPE"],
    "manifests": ["manifests", "Manifests", "manifeſts", "MANIFESTS"],
    "layers": ["layers", "Layers", "layerſ"],
    "config": ["config", "Config"],
    "digest": ["digest", "Digest", "digeſt", "DIGEST"],
    "size": ["size", "Size", "ſize"],
    "platform": ["platform", "Platform"],
    "other": ["digests", "x", "\u212aonfig", "layer", "manifest"],
}


def key(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from(KEY_SPELLINGS[name])


digests = st.sampled_from([A, B, C, d(4), ""])
# Mostly valid sizes; a few that 2.8.2 refuses.
sizes = st.one_of(
    st.integers(0, 10**9), st.integers(-(2**63), 2**63 - 1), st.sampled_from([None, "1", 1.5])
)


def member(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``"key":value`` with a random spelling of ``name``'s key and a JSON text value."""
    return st.tuples(key(name), values).map(lambda kv: f"{json.dumps(kv[0])}:{kv[1]}")


def json_of(values: list[object]) -> st.SearchStrategy[str]:
    return st.sampled_from([json.dumps(v) for v in values])


def json_object(members: st.SearchStrategy[list[str]]) -> st.SearchStrategy[str]:
    return members.map(lambda ms: "{" + ",".join(ms) + "}")


descriptor = json_object(
    st.lists(
        st.one_of(
            member("digest", json_of([A, B, C, d(4), "", None])),
            member("size", sizes.map(json.dumps)),
            member("mediaType", json_of([OCI_MANIFEST, None])),
            member("platform", json_of([None, {"os": "linux"}, {"features": ["a"]}])),
            member("other", json_of([1, "x", None])),
        ),
        max_size=4,
    )
)
descriptors = st.one_of(
    st.just("null"), st.lists(descriptor, max_size=5).map(lambda ds: "[" + ",".join(ds) + "]")
)
manifest = json_object(
    st.tuples(
        member("schemaVersion", st.just("2")),
        st.lists(
            st.one_of(
                member("manifests", descriptors),
                member("layers", descriptors),
                member("config", st.one_of(st.just("null"), descriptor)),
                member(
                    "mediaType", json_of([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_V2, None])
                ),
                member("other", st.sampled_from(["1", "null", '{"a":[1]}'])),
            ),
            max_size=6,
        ),
    ).map(lambda head_rest: [head_rest[0], *head_rest[1]])
).map(str.encode)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(manifest, min_size=1, max_size=6))
def test_random_manifests_agree_with_the_registry(
    registry_flavour: Flavour, manifests: list[bytes]
) -> None:
    for data, verdict in zip(manifests, oracle(manifests, registry_flavour), strict=True):
        assert_agrees(data, verdict, registry_flavour)
