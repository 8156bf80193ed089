"""Storage paths ↔ (repository, revision, tag), and the name grammar."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regcleaner import layout
from regcleaner.digest import Digest, digest_from_hex, parse_digest

HEX = "ab" * 32
component = st.from_regex(r"[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?", fullmatch=True)
names = st.lists(component, min_size=1, max_size=5).map("/".join)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}", fullmatch=True)
hexes = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)


@given(names, hexes)
def test_revision_path_round_trips(name: str, hex_part: str) -> None:
    digest = digest_from_hex(hex_part)
    path = layout.revision_link(name, digest)
    key = layout.parse_manifests_key(path.removeprefix(layout.REPOSITORIES + "/"))
    assert key == layout.ManifestKey(name, "revision", hex_part)


@given(names, tags)
def test_tag_path_round_trips(name: str, tag: str) -> None:
    path = layout.tag_current_link(name, tag)
    key = layout.parse_manifests_key(path.removeprefix(layout.REPOSITORIES + "/"))
    assert key == layout.ManifestKey(name, "tag", tag)


@pytest.mark.parametrize(
    "key",
    [
        f"app/_manifests/tags/v1/index/sha256/{HEX}/link",  # tag history is not "tagged"
        f"app/_manifests/revisions/sha256/{HEX}/signatures/sha256/{HEX}/link",  # schema1
        f"app/_manifests/revisions/sha256/{HEX[:-1]}/link",
        f"app/_manifests/revisions/sha512/{HEX}/link",
        f"app/_layers/sha256/{HEX}/link",
        f"_manifests/revisions/sha256/{HEX}/link",
        "app/_manifests/tags/v1/current",
    ],
)
def test_non_revision_non_tag_keys_are_ignored(key: str) -> None:
    assert layout.parse_manifests_key(key) is None


def test_blob_path_uses_two_character_fan_out() -> None:
    digest = Digest("sha256:" + HEX)
    assert layout.blob_data(digest) == f"docker/registry/v2/blobs/sha256/ab/{HEX}/data"


@given(names)
def test_generated_names_are_valid(name: str) -> None:
    assert layout.is_valid_repository_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "App",
        "a//b",
        "/a",
        "a/",
        "a/../b",
        "a b",
        "a/_b",
        "-a",
        "a-",
        "a..b",
        "x" * 256,
        "a/b%2f",
        "a\nb",
    ],
)
def test_invalid_repository_names(name: str) -> None:
    assert not layout.is_valid_repository_name(name)


@pytest.mark.parametrize(
    "text", ["sha256:" + HEX.upper(), "sha256:" + HEX + "\n", "sha512:" + HEX, HEX, ""]
)
def test_parse_digest_is_strict(text: str) -> None:
    with pytest.raises(ValueError, match="not a sha256 digest"):
        parse_digest(text)


# -- what the registry's garbage-collect accepts (reference.WithName, go-digest) ---------


@pytest.mark.parametrize(
    "name",
    [
        "app",
        "a/b/c",
        "a-b/c__d/e.f",
        "App/x",  # a domain may hold capitals
        "registry.example.com/team/app",
        "localhost:5000/app",
        "x" * 255,
    ],
)
def test_reference_names_with_name_accepts(name: str) -> None:
    assert layout.is_reference_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "", "App", "a..b", "a/B", "App/X", "a/../b", "-a/b", "a-/b", "a//b", "/a", "a/",
        "a b", "a/_b", ":5000/a", "a:/b", "a:x/b", "a:5000", "x" * 256, "a\nb",
    ],
)  # fmt: skip
def test_reference_names_with_name_rejects(name: str) -> None:
    assert not layout.is_reference_name(name)


@given(names)
def test_every_valid_repository_name_is_a_reference_name(name: str) -> None:
    assert layout.is_reference_name(name)
    assert layout.registry_can_open(name)


@pytest.mark.parametrize(
    ("name", "opens"),
    [("app", True), ("App/x", True), ("App", False), ("localhost:5000/app", False)],
)
def test_registry_can_open_needs_a_reference_name_and_a_driver_path(name: str, opens: bool) -> None:
    assert layout.registry_can_open(name) is opens


@pytest.mark.parametrize(
    ("key", "digest"),
    [
        (f"sha256/ab/{HEX}/data", f"sha256:{HEX}"),
        (f"sha384/ab/{'ab' * 48}/data", f"sha384:{'ab' * 48}"),
        (f"sha512/ab/{'ab' * 64}/data", f"sha512:{'ab' * 64}"),
    ],
)
def test_blob_keys_name_their_digest(key: str, digest: str) -> None:
    assert layout.blob_digest_at(key) == digest


@pytest.mark.parametrize(
    "key",
    [
        f"sha256/cd/{HEX}/data",  # the wrong fan-out folder
        f"sha256/AB/{HEX.upper()}/data",
        f"sha256/ab/{HEX[:-1]}/data",
        f"sha512/ab/{HEX}/data",  # a sha256 length under sha512
        f"md5/ab/{'ab' * 16}/data",  # an algorithm go-digest does not know
        f"sha256/{HEX}/data",  # no fan-out folder: the registry's sweep then fails
        f"sha256/ab/sha256/{HEX}/data",
        f"sha256/ab/{HEX}/sub/data",
        "sha256/ab/a/data",
        "sha256/data",
        "data",
        f"sha256/ab/{HEX}/link",
    ],
)
def test_other_blob_keys_name_no_digest(key: str) -> None:
    assert layout.blob_digest_at(key) is None


@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        (f"sha256/{HEX}/link", True),
        (f"sha256/{HEX}/signatures/sha256/{HEX}/link", True),
        ("sha512/A-b_c.d/link", True),
        ("sha256/x y/link", False),
        ("sha256/x:y/link", False),
        ("sha256/é/link", False),
    ],
)
def test_driver_paths(key: str, accepted: bool) -> None:
    assert layout.is_driver_path(key) is accepted
