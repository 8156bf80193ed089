"""Manifest bytes → references, for every manifest kind and for garbage."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regcleaner import mediatypes
from regcleaner.digest import Digest
from regcleaner.errors import ManifestError
from regcleaner.manifests import MAX_MANIFEST_BYTES, Descriptor, ManifestKind, parse_manifest


def d(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def desc(n: int, media_type: str = mediatypes.OCI_MANIFEST) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": d(n), "size": 10}


def dumps(document: object) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "media_type", [mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST_LIST, None]
)
def test_index_children(media_type: str | None) -> None:
    doc: dict[str, Any] = {"schemaVersion": 2, "manifests": [desc(1), desc(2)]}
    if media_type:
        doc["mediaType"] = media_type
    refs = parse_manifest(dumps(doc))
    assert refs.kind is ManifestKind.INDEX
    assert refs.children == (d(1), d(2))


def test_image_blobs_and_subject() -> None:
    doc = {
        "schemaVersion": 2,
        "config": desc(3),
        "layers": [desc(4), desc(5)],
        "subject": desc(9),
    }
    refs = parse_manifest(dumps(doc))
    assert refs.kind is ManifestKind.IMAGE
    assert refs.blobs == tuple(Descriptor(Digest(d(n)), 10) for n in (3, 4, 5))
    assert refs.subject == d(9)
    assert refs.children == ()
    assert refs.references == (d(9),)


def test_index_with_subject_is_a_referrer_too() -> None:
    refs = parse_manifest(dumps({"schemaVersion": 2, "manifests": [desc(1)], "subject": desc(2)}))
    assert refs.children == (d(1),)
    assert refs.subject == d(2)
    assert refs.references == (d(1), d(2))


@pytest.mark.parametrize(
    "media_type", [mediatypes.OCI_ARTIFACT_MANIFEST, "application/vnd.example.image+json"]
)
def test_unknown_media_type_with_image_shape_is_unreadable(media_type: str) -> None:
    """distribution 2.8 refuses a mediaType it does not know, whatever the shape: it is
    never guessed to be an image."""
    doc = {"schemaVersion": 2, "mediaType": media_type, "config": desc(1), "layers": [desc(2)]}
    with pytest.raises(ManifestError, match="unrecognized manifest content type"):
        parse_manifest(dumps(doc))


@pytest.mark.parametrize(
    ("document", "children"),
    [
        ({"Manifests": [desc(1)]}, (1,)),
        ({"manifests": [], "Manifests": [desc(1), desc(2)]}, (1, 2)),
        ({"manifeſts": [desc(3)]}, (3,)),
        ({"manifests": [{"digest": d(1), "Digest": d(2)}]}, (2,)),
        ({"manifests": [{"Digest": d(2), "digest": d(1)}]}, (1,)),
    ],
)
def test_field_names_are_read_as_go_reads_them(
    document: dict[str, Any], children: tuple[int, ...]
) -> None:
    """Case-insensitive keys (with Unicode simple folding), the last duplicate wins:
    the children the registry sees are the children regcleaner keeps."""
    refs = parse_manifest(dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
                                 **document}))  # fmt: skip
    assert refs.kind is ManifestKind.INDEX
    assert refs.children == tuple(d(n) for n in children)


def test_json_nested_thousands_deep_is_unreadable_or_read_never_a_crash() -> None:
    deep = b'{"schemaVersion":2,"x":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    with pytest.raises(ManifestError):
        parse_manifest(deep)
    allowed = b'{"schemaVersion":2,"mediaType":"' + mediatypes.OCI_INDEX.encode() + b'",'
    allowed += b'"x":' + b"[" * 9_000 + b"]" * 9_000 + b',"manifests":[' + dumps(desc(1)) + b"]}"
    assert parse_manifest(allowed).children == (d(1),)


def test_schema1() -> None:
    doc = {"schemaVersion": 1, "fsLayers": [{"blobSum": d(1)}, {"blobSum": d(1)}]}
    refs = parse_manifest(dumps(doc))
    assert refs.kind is ManifestKind.SCHEMA1
    assert refs.blobs == (Descriptor(Digest(d(1))),)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'"text"',
        b"{not json",
        dumps({"hello": "world"}),
        dumps({"schemaVersion": 2, "manifests": "nope"}),
        dumps({"schemaVersion": 2, "manifests": [{"digest": "sha256:short"}]}),
        dumps({"schemaVersion": 2, "manifests": [{"size": 1}]}),
        dumps({"schemaVersion": 2, "manifests": [7]}),
        dumps({"schemaVersion": 2, "config": desc(1), "subject": {"digest": 5}}),
        dumps({"schemaVersion": 2, "mediaType": 5, "config": desc(1)}),
        dumps({"schemaVersion": "2", "config": desc(1)}),
        dumps({"schemaVersion": 2.0, "config": desc(1)}),
        dumps({"schemaVersion": 1, "fsLayers": [{}]}),
        b" " * (MAX_MANIFEST_BYTES + 1),
    ],
)
def test_garbage_raises_manifest_error(data: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.binary(max_size=200) | json_values.map(dumps))
def test_parse_never_raises_anything_but_manifest_error(data: bytes) -> None:
    try:
        refs = parse_manifest(data)
    except ManifestError:
        return
    blobs = [blob.digest for blob in refs.blobs]
    for digest in (*refs.children, *blobs, *([refs.subject] if refs.subject else [])):
        assert digest.startswith("sha256:")
        assert len(digest) == 71


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"layers": [{"digest": d(1)}, {"size": 3}]}, "layers[1] has no digest"),
        ({"manifests": [{"digest": d(1)}, "x"]}, "manifestlist: json: cannot unmarshal string"),
        ({"config": {"digest": "md5:00"}}, "config: not a sha256 digest"),
        ({"layers": [], "subject": {"digest": 7}}, "subject (2.8.2 ignores it): json: cannot"),
    ],
)
def test_errors_name_the_descriptor(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(json.dumps({"schemaVersion": 2, **document}).encode())
    assert str(caught.value).startswith(message)
