"""``regcleaner.gomanifest``: manifests read the way distribution 2.8.2 (Go 1.19) reads them.

The expectations here are Go's behaviour as established from the 2.8.2 and go1.19 sources
(see the module docstring) and checked against the real binary in
tests/integration/test_gomanifest_oracle.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regcleaner import gojson
from regcleaner.gomanifest import GoDescriptor, GoManifest, GoManifestError, decode_manifest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
SCHEMA1_LAYER = "application/vnd.docker.container.image.rootfs.diff+x-gtar"


def d(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


A, B, C, D = d(1), d(2), d(3), d(4)
PLACEHOLDERS = {
    "$V2": '"schemaVersion":2',
    "$A": json.dumps(A),
    "$B": json.dumps(B),
    "$C": json.dumps(C),
    "$D": json.dumps(D),
    "$IDX": json.dumps(OCI_INDEX),
    "$IMG": json.dumps(OCI_MANIFEST),
    "$LIST": json.dumps(DOCKER_LIST),
    "$DV2": json.dumps(DOCKER_V2),
}


def j(text: str) -> bytes:
    """JSON text with ``$``-placeholders, as UTF-8 bytes."""
    for name in sorted(PLACEHOLDERS, key=len, reverse=True):
        text = text.replace(name, PLACEHOLDERS[name])
    return text.encode()


def refs(data: bytes) -> list[str]:
    return [r.digest for r in decode_manifest(data).references]


def refused(data: bytes) -> GoManifestError:
    with pytest.raises(GoManifestError) as info:
        decode_manifest(data)
    return info.value


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


# --- The four ways the exact-key reader lost children ------------------------------


def test_capitalised_manifests_key_is_read() -> None:
    manifest = decode_manifest(j('{$V2,"mediaType":$IDX,"Manifests":[{"digest":$A}]}'))
    assert manifest.kind == "index"
    assert manifest.references == (GoDescriptor("", A, 0),)


def test_later_fold_duplicate_replaces_an_empty_list() -> None:
    assert refs(j('{$V2,"manifests":[],"Manifests":[{"digest":$A},{"digest":$B}]}')) == [A, B]


def test_long_s_folds_to_s() -> None:
    manifest = decode_manifest(j('{$V2,"manifeſts":[{"digeſt":$A,"ſize":7}]}'))
    assert manifest.kind == "index"
    assert manifest.manifests == (GoDescriptor("", A, 7),)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('{"digest":$A,"Digest":$B}', B),  # each key is assigned in turn: the last wins
        ('{"Digest":$A,"digest":$B}', B),  # an exact match does not beat a later fold match
        ('{"DIGEST":$A,"digeſt":$B,"Digest":$C}', C),
        ('{"digest":$A,"Digest":null}', A),  # null into a string: no-op
    ],
)
def test_last_matching_key_wins_whatever_its_spelling(entry: str, expected: str) -> None:
    assert refs(j('{$V2,"manifests":[' + entry + "]}")) == [expected]


# --- Key folding ------------------------------------------------------------------


@pytest.mark.parametrize("key", ["mediaType", "MEDIATYPE", "mediatype", "MediaType", "mEdIaTyPe"])
def test_ascii_case_variants_match(key: str) -> None:
    manifest = decode_manifest(j('{$V2,"' + key + '":$IDX,"manifests":[]}'))
    assert manifest.media_type == OCI_INDEX


@pytest.mark.parametrize(
    "key",
    [
        "d\u0131gest",  # dotless i: Python upper-cases it to I, Go does not fold it
        "d\u0130gest",  # capital I with dot
        "digest\u200b",  # zero-width space
        "digest ",
        "dig est",
        "\uff44igest",  # fullwidth d
        "digeſt\u0307",
    ],
)
def test_other_unicode_never_folds(key: str) -> None:
    assert refs(j('{$V2,"manifests":[{"digest":$A,' + json.dumps(key) + ":$B}]}")) == [A]


def test_go_fold_rules() -> None:
    fold = gojson.go_fold
    assert fold("Digeſt") == "digest"
    assert fold("\u212aey") == "key"  # KELVIN SIGN folds to k (no 2.8.2 field has a k)
    assert fold("ſ\u212a") == "sk"
    assert fold("d\u0131gest") is None
    assert fold("é") is None


def test_kelvin_sign_matches_no_field_here() -> None:
    # No JSON name in the 2.8.2 structs contains a k, so a Kelvin sign never matches.
    data = j('{$V2,"manifests":[{"digest":$A,"\u212a":$B,"digest\u212a":$C}]}')
    assert refs(data) == [A]


def test_escaped_keys_are_matched_after_unescaping() -> None:
    assert refs(j('{$V2,"m\\u0061nifests":[{"\\u0064igest":$A}]}')) == [A]


def test_index_entry_platform_is_platformspec_not_the_descriptor_pointer() -> None:
    # "features" exists only in manifestlist.PlatformSpec, which shadows Descriptor.Platform.
    assert refs(j('{$V2,"manifests":[{"digest":$A,"platform":{"features":["x"]}}]}')) == [A]
    refused(j('{$V2,"manifests":[{"digest":$A,"platform":{"features":5}}]}'))
    # In a layer, "platform" is *v1.Platform, which has no "features": ignored.
    assert refs(j('{$V2,"layers":[{"digest":$A,"platform":{"features":5}}]}')) == ["", A]
    refused(j('{$V2,"layers":[{"digest":$A,"platform":{"os.features":5}}]}'))


# --- Duplicates merge ---------------------------------------------------------------


def test_duplicate_struct_merges() -> None:
    manifest = decode_manifest(j('{$V2,"config":{"digest":$A,"size":1},"Config":{"size":2}}'))
    assert manifest.config == GoDescriptor("", A, 2)


def test_duplicate_slice_merges_element_by_element() -> None:
    data = j('{$V2,"manifests":[{"digest":$A,"size":1},{"digest":$B}],"manifests":[{"size":5}]}')
    assert decode_manifest(data).manifests == (GoDescriptor("", A, 5),)


def test_truncated_elements_come_back_while_the_array_is_not_reallocated() -> None:
    # 3 elements: cap 4. Then 1 (len 1, cap 4), then 2: element 1 is the old B again.
    data = j(
        '{$V2,"layers":[{"digest":$A},{"digest":$B},{"digest":$C}],'
        '"layers":[{"size":1}],"layers":[{},{}]}'
    )
    manifest = decode_manifest(data)
    assert manifest.layers == (GoDescriptor("", A, 1), GoDescriptor("", B, 0))


def test_resurrected_elements_survive_growth() -> None:
    # 4 elements fill cap 4; [{}] cuts the length to 1; 5 elements: 1..3 come back from
    # the old array, then growth (cap 4 -> 6) copies all 4 and element 4 is fresh.
    data = j(
        '{$V2,"layers":[{"digest":$A},{"digest":$B},{"digest":$C},{"digest":$D}],'
        '"layers":[{}],"layers":[{},{},{},{},{}]}'
    )
    assert refs(data) == ["", A, B, C, D, ""]


def test_growth_inside_one_array_keeps_earlier_elements() -> None:
    data = j('{$V2,"layers":[{"digest":$A}],"layers":[{},{},{},{},{},{},{},{},{}]}')
    assert refs(data) == ["", A] + [""] * 8


def test_empty_array_makes_a_new_empty_slice() -> None:
    data = j('{$V2,"layers":[{"digest":$A},{"digest":$B}],"layers":[],"layers":[{},{}]}')
    assert refs(data) == ["", "", ""]


def test_null_makes_a_slice_nil() -> None:
    data = j('{$V2,"layers":[{"digest":$A},{"digest":$B}],"layers":null,"layers":[{}]}')
    assert refs(data) == ["", ""]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{$V2,"config":{"digest":$A,"size":3},"config":null}', [GoDescriptor("", A, 3)]),
        ('{$V2,"config":{"digest":$A,"digest":null}}', [GoDescriptor("", A, 0)]),
        ('{$V2,"config":{"digest":$A,"size":3,"size":null}}', [GoDescriptor("", A, 3)]),
        ('{$V2,"manifests":[{"digest":$A}],"manifests":[null]}', [GoDescriptor("", A, 0)]),
        ('{$V2,"layers":null}', [GoDescriptor("", "", 0)]),
        ('{$V2,"config":null,"layers":[null,null]}', [GoDescriptor("", "", 0)] * 3),
    ],
)
def test_null_per_go_kind(text: str, expected: list[GoDescriptor]) -> None:
    # Struct, string, int (and a slice element): no-op. Slice: nil.
    assert list(decode_manifest(j(text)).references) == expected


def test_null_media_type_keeps_the_earlier_value() -> None:
    manifest = decode_manifest(j('{$V2,"mediaType":$IDX,"mediaType":null,"manifests":[]}'))
    assert manifest.media_type == OCI_INDEX
    assert manifest.kind == "index"


def test_last_media_type_decides_the_handler() -> None:
    manifest = decode_manifest(j('{$V2,"mediaType":$IDX,"MediaType":$IMG,"layers":[]}'))
    assert manifest.kind == "oci-image"


# --- Dispatch ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("media_type", "kind"),
    [
        (OCI_INDEX, "index"),
        (DOCKER_LIST, "index"),
        (OCI_MANIFEST, "oci-image"),
        (DOCKER_V2, "schema2"),
    ],
)
def test_explicit_media_types(media_type: str, kind: str) -> None:
    shape = '"manifests":[{"digest":$A}]' if kind == "index" else '"config":{"digest":$A}'
    manifest = decode_manifest(j('{$V2,"mediaType":' + json.dumps(media_type) + "," + shape + "}"))
    assert manifest.kind == kind
    assert manifest.media_type == media_type
    assert [r.digest for r in manifest.references] == [A]


def test_image_references_are_config_then_layers() -> None:
    manifest = decode_manifest(
        j('{$V2,"mediaType":$DV2,"layers":[{"digest":$B,"size":2},{"digest":$C}],'
          '"config":{"digest":$A,"size":1,"mediaType":"c"}}')
    )  # fmt: skip
    assert manifest.config == GoDescriptor("c", A, 1)
    assert manifest.layers == (GoDescriptor("", B, 2), GoDescriptor("", C, 0))
    assert manifest.references == (manifest.config, *manifest.layers)
    assert manifest.manifests == ()
    assert manifest.fs_layers == ()
    assert manifest.subject is None


@pytest.mark.parametrize(
    "media_type",
    ["application/json", "application/vnd.OCI.image.manifest.v1+json", OCI_MANIFEST + " ", "x"],
)
def test_unknown_explicit_media_type_is_refused_even_with_an_image_shape(media_type: str) -> None:
    error = refused(
        j('{$V2,"mediaType":' + json.dumps(media_type) + ',"config":{"digest":$A},"layers":[]}')
    )
    assert "unrecognized manifest content type" in str(error)
    assert not error.stricter


def test_no_media_type_with_manifests_is_an_index() -> None:
    manifest = decode_manifest(j('{$V2,"manifests":[{"digest":$A}]}'))
    assert (manifest.kind, manifest.media_type) == ("index", "")
    assert manifest.config is None


def test_no_media_type_with_empty_manifests_is_an_index_without_children() -> None:
    manifest = decode_manifest(j('{$V2,"manifests":[]}'))
    assert manifest.kind == "index"
    assert manifest.references == ()


@pytest.mark.parametrize(
    "text",
    [
        "{$V2}",
        '{$V2,"manifests":null}',
        '{$V2,"manifests":[{"digest":$A}],"manifests":null}',
    ],
)
def test_no_media_type_without_manifests_is_an_oci_image_even_without_config(text: str) -> None:
    manifest = decode_manifest(j(text))
    assert manifest.kind == "oci-image"
    assert manifest.config == GoDescriptor("", "", 0)
    assert manifest.references == (GoDescriptor("", "", 0),)  # 2.8.2 marks the empty digest


def test_no_media_type_and_a_bad_manifests_member_fails_like_the_2_8_2_panic() -> None:
    error = refused(j('{$V2,"manifests":5,"layers":[]}'))
    assert "panics" in str(error)
    assert not error.stricter


def test_no_media_type_bad_config_is_not_seen_by_the_list_attempt_but_fails_the_image() -> None:
    refused(j('{$V2,"config":{"size":"1"}}'))


@pytest.mark.parametrize(
    "text",
    [
        '{"schemaVersion":3,"manifests":[]}',
        '{"schemaVersion":0}',
        '{"manifests":[{"digest":$A}]}',
        '{"schemaVersion":null,"manifests":[]}',
        '{"schemaVersion":-0,"manifests":[]}',
        "[]",
        "null",
        '"x"',
        "2",
        "{}",
    ],
)
def test_other_schema_versions_fail(text: str) -> None:
    assert not refused(j(text)).stricter


def test_schema_version_key_folds() -> None:
    assert decode_manifest(j('{"SchemaVerſion":2,"manifests":[]}')).schema_version == 2


# --- Index / manifest confusion (refused on purpose) --------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{$V2,"mediaType":$IDX,"manifests":[{"digest":$A}],"layers":[]}',
        '{$V2,"mediaType":$LIST,"manifests":[],"Config":{}}',
        '{$V2,"manifests":[{"digest":$A}],"config":{"digest":$B}}',
        '{$V2,"mediaType":$IMG,"manifests":[{"digest":$A}],"layers":[]}',
        '{$V2,"mediaType":$DV2,"Manifeſts":[],"layers":[]}',
        '{$V2,"layers":[],"subject":5}',
        '{$V2,"layers":[],"subject":{"size":"1"}}',
        '{$V2,"mediaType":$IDX,"manifests":[],"config":{"x":1e400},"config":null}',
    ],
)
def test_confusion_and_bad_subjects_are_refused_as_stricter_than_go(text: str) -> None:
    assert refused(j(text)).stricter


@pytest.mark.parametrize(
    "text",
    [
        '{$V2,"mediaType":$IDX,"manifests":[{"digest":$A}],"layers":null,"config":null}',
        '{$V2,"mediaType":$IDX,"manifests":[],"layers":[1],"Layers":null}',
        '{$V2,"mediaType":$IMG,"manifests":null,"layers":[]}',
        '{$V2,"manifests":null,"config":{"digest":$A}}',
        '{$V2,"mediaType":$IDX,"manifests":[],"configs":{},"layer":[]}',
    ],
)
def test_null_or_unmatched_confusing_members_are_fine(text: str) -> None:
    decode_manifest(j(text))


def test_subject_is_decoded_with_go_rules() -> None:
    manifest = decode_manifest(
        j('{$V2,"layers":[],"subject":{"digest":$A,"size":3},"Subject":{"size":4}}')
    )
    assert manifest.subject == GoDescriptor("", A, 4)
    assert (
        decode_manifest(j('{$V2,"layers":[],"subject":{"digest":$A},"subject":null}')).subject
        is None
    )
    index = decode_manifest(j('{$V2,"manifests":[],"ſUBJECT":{"digest":$A}}'))
    assert index.subject == GoDescriptor("", A, 0)
    assert index.references == ()  # 2.8.2's References() does not include it


# --- Type errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{$V2,"manifests":[{"digest":$A,"size":"3"}]}',
        '{$V2,"manifests":[{"digest":$A,"size":1.5}]}',
        '{$V2,"manifests":[{"digest":$A,"size":2.0}]}',
        '{$V2,"manifests":[{"digest":$A,"size":2e0}]}',
        '{$V2,"manifests":[{"digest":$A,"size":9223372036854775808}]}',
        '{$V2,"manifests":[{"digest":$A,"size":-9223372036854775809}]}',
        '{$V2,"manifests":[{"digest":$A,"size":1e400}]}',
        '{$V2,"manifests":[{"digest":$A,"size":true}]}',
        '{$V2,"manifests":[{"digest":$A,"size":[]}]}',
        '{$V2,"manifests":[{"digest":$A,"platform":5}]}',
        '{$V2,"manifests":[{"digest":$A,"platform":[]}]}',
        '{$V2,"manifests":[{"digest":$A,"platform":{"os":5}}]}',
        '{$V2,"manifests":[{"digest":$A,"platform":{"OS.Features":"x"}}]}',
        '{$V2,"manifests":[{"digest":$A,"annotations":{"a":1}}]}',
        '{$V2,"manifests":[{"digest":$A,"annotations":[]}]}',
        '{$V2,"manifests":[{"digest":$A,"annotations":"x"}]}',
        '{$V2,"manifests":[{"digest":$A,"urls":"x"}]}',
        '{$V2,"manifests":[{"digest":$A,"urls":[1]}]}',
        '{$V2,"manifests":[{"digest":5}]}',
        '{$V2,"manifests":[{"mediaType":{}}]}',
        '{$V2,"manifests":[$A]}',
        '{$V2,"manifests":{}}',
        '{$V2,"mediaType":$IDX,"manifests":[{"digest":$A}],"manifests":"x"}',
        '{$V2,"mediaType":5}',
        '{"schemaVersion":"2"}',
        '{"schemaVersion":2.0}',
        '{"schemaVersion":2e0}',
        '{$V2,"config":5}',
        '{$V2,"config":{"platform":"linux"}}',
        '{$V2,"config":{"platform":{"variant":[]}}}',
        '{$V2,"layers":[{"digest":$A}],"layers":[{"size":"1"}]}',
        '{$V2,"mediaType":$IMG,"annotations":{"a":true}}',
        '{$V2,"mediaType":$IMG,"annotations":[]}',
    ],
)
def test_type_errors_fail(text: str) -> None:
    error = refused(j(text))
    assert not error.stricter
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    "text",
    [
        '{$V2,"manifests":[{"digest":$A,"size":-0}]}',
        '{$V2,"manifests":[{"digest":$A,"size":-5}]}',
        '{$V2,"manifests":[{"digest":$A,"size":9223372036854775807}]}',
        '{$V2,"manifests":[{"digest":$A,"size":-9223372036854775808}]}',
        '{$V2,"manifests":[{"digest":$A,"platform":null,"annotations":null,"urls":null}]}',
        '{$V2,"manifests":[{"digest":$A,"annotations":{"a":null,"a":"b"},"urls":[null,"u"]}]}',
        '{$V2,"manifests":[{"digest":$A,"sizes":"x","Platforms":5,"x":{"y":[1e400]}}]}',
        '{$V2,"mediaType":$DV2,"annotations":5,"config":{"digest":$A}}',  # schema2: unknown
        '{$V2,"mediaType":$IDX,"config":5,"manifests":[{"digest":$A}],"config":null}',
    ],
)
def test_accepted_values(text: str) -> None:
    assert A in refs(j(text))


def test_size_is_the_go_int64() -> None:
    data = j('{$V2,"manifests":[{"digest":$A,"size":-9223372036854775808},{"size":-0}]}')
    assert [r.size for r in decode_manifest(data).references] == [-(2**63), 0]


# --- Syntax, encoding and depth ---------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b" ",
        b"\xef\xbb\xbf" + j('{$V2,"manifests":[]}'),
        j('{$V2,"manifests":[]}').decode().encode("utf-16"),
        j('{$V2,"x":NaN,"manifests":[]}'),
        j('{$V2,"x":Infinity,"manifests":[]}'),
        j('{$V2,"x":-Infinity,"manifests":[]}'),
        j('{$V2,"manifests":[]}x'),
        j('{$V2,"manifests":[]}{}'),
        j('{$V2,"manifests":[],}'),
        j('{$V2,"manifests":[1,]}'),
        j('{$V2,"x":01,"manifests":[]}'),
        j('{$V2,"x":1.,"manifests":[]}'),
        j('{$V2,"x":.5,"manifests":[]}'),
        j('{$V2,"x":+1,"manifests":[]}'),
        j('{$V2,"x":"a\tb","manifests":[]}'),
        j('{$V2,"x":"\\x41","manifests":[]}'),
        j('{$V2,"x":"\\u12","manifests":[]}'),
        j("{$V2,'x':1}"),
        j('{$V2,"x":tru,"manifests":[]}'),
        j('{$V2,"x":1\u0663,"manifests":[]}'),  # an Arabic-Indic digit
        j('{$V2,"manifests":[]') + b"\xff",
        j('{$V2,"manifests":[]}\x00'),
    ],
)
def test_syntax_go_rejects(data: bytes) -> None:
    error = refused(data)
    assert not error.stricter
    assert "\n" not in str(error)


def test_invalid_utf8_in_strings_becomes_one_replacement_per_bad_byte() -> None:
    # \xff: invalid; \xe2\x82 then b: truncated; \xed\xa0\x80: an encoded surrogate.
    data = j('{$V2,"layers":[{"digest":"a') + b"\xff\xe2\x82b\xed\xa0\x80c" + j('"}]}')
    assert refs(data) == ["", "a\ufffd\ufffd\ufffdb\ufffd\ufffd\ufffdc"]


def test_invalid_utf8_in_keys_and_unknown_fields() -> None:
    data = j('{$V2,"x":"') + b"\xff" + j('","lay') + b"\xff" + j('ers":5,"layers":[{"digest":$A}]}')
    assert refs(data) == ["", A]
    refused(j('{$V2,"layers":[]') + b"\xff}")  # outside a string: a syntax error


def test_lone_surrogate_escapes_become_replacement_characters() -> None:
    data = j('{$V2,"mediaType":$IDX,"manifests":[{"digest":"\\ud800x\\udc00\\ud83d\\ude00"}]}')
    assert refs(data) == ["\ufffdx\ufffd\U0001f600"]


@pytest.mark.parametrize("levels", [1_000, 5_000, 9_999])
def test_deep_unknown_member_is_fine_up_to_go_limit(levels: int) -> None:
    # The top-level object is level 1: 9,999 arrays inside make Go's limit of 10,000.
    assert refs(j('{$V2,"layers":[{"digest":$A}],"x":' + deep(levels) + "}")) == ["", A]


@pytest.mark.parametrize("levels", [10_000, 100_000])
def test_deeper_than_go_limit_fails(levels: int) -> None:
    error = refused(j('{$V2,"layers":[{"digest":$A}],"x":' + deep(levels) + "}"))
    assert "max depth" in str(error)
    refused(j('{$V2,"x":' + "{" * levels + "}" * levels + "}"))


@pytest.mark.parametrize("levels", [9_998, 10_000, 100_000])
def test_deep_inside_known_fields(levels: int) -> None:
    # An array where a Descriptor is expected is a type error at any depth.
    refused(j('{$V2,"layers":' + deep(levels) + "}"))
    inside_config = j('{$V2,"config":{"digest":$A,"x":' + deep(levels) + "}}")
    if levels <= 9_998:  # top object, config object, then 9,998 arrays: 10,000 levels
        assert refs(inside_config) == [A]
    else:
        refused(inside_config)


def test_deep_objects_nest_too() -> None:
    levels = 9_998
    member = '{"a":' * levels + "1" + "}" * levels
    assert refs(j('{$V2,"layers":[],"x":[' + member + "]}")) == [""]


def test_huge_integer_literals() -> None:
    assert refs(j('{$V2,"x":' + "9" * 10_000 + ',"layers":[]}')) == [""]
    refused(j('{$V2,"layers":[{"size":' + "9" * 10_000 + "}]}"))
    refused(j('{"schemaVersion":1,"x":' + "9" * 10_000 + "}"))


def test_recursion_error_never_escapes() -> None:
    # Even deeper than CPython's C stack guard: the iterative parser stops at Go's limit.
    for data in (b"[" * 1_000_000, b'{"a":' * 300_000, j("{$V2,") + b"[" * 200_000):
        assert not refused(data).stricter


# --- schema1 ----------------------------------------------------------------------


SCHEMA1 = j(
    '{\n   "schemaVersion": 1,\n   "name": "library/x",\n   "tag": "latest",\n'
    '   "architecture": "amd64",\n   "fsLayers": [\n      {"blobSum": $A},\n'
    '      {"blobSum": $B},\n      {"blobSum": $A}\n   ],\n'
    '   "history": [{"v1Compatibility": "{}"}],\n   "signatures": [{"header": {"alg": "ES256"},'
    ' "signature": "xx", "protected": "yy"}]\n}\n'
)


def test_schema1_fs_layers_in_order_with_duplicates() -> None:
    manifest = decode_manifest(SCHEMA1)
    assert manifest.kind == "schema1"
    assert manifest.schema_version == 1
    assert manifest.fs_layers == (A, B, A)
    assert manifest.references == tuple(GoDescriptor(SCHEMA1_LAYER, x, 0) for x in (A, B, A))
    assert (manifest.config, manifest.layers, manifest.manifests, manifest.subject) == (
        None,
        (),
        (),
        None,
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"schemaVersion":1}',
        '{"schemaVersion":1,"signatures":5,"fsLayers":[{"blobSum":$A}]}',  # never parsed
        '{"schemaVersion":1,"mediaType":"anything","fsLayers":[]}',
        '{"schemaVersion":1,"x":1e-400}',  # underflow is fine for ParseFloat
        '{"schemaVersion":1,"x":[-1.7976931348623157e308]}',
        '{"schemaVersion":1,"x":' + "9" * 308 + "}",
        '{\r\n\t"schemaVersion":1\r\n}\r\n',
    ],
)
def test_schema1_accepted(text: str) -> None:
    assert decode_manifest(j(text)).kind == "schema1"


@pytest.mark.parametrize(
    "text",
    [
        '{"schemaVersion":1,"x":1e400}',  # libtrust decodes everything into interface{}
        '{"schemaVersion":1,"x":{"y":[-1e400]}}',
        '{"schemaVersion":1,"x":1.7976931348623159e308}',
        '{"schemaVersion":1,"x":' + "9" * 309 + "}",
        '{"schemaVersion":1,"fsLayers":[{"blobSum":5}]}',
        '{"schemaVersion":1,"fsLayers":{}}',
        '{"schemaVersion":1,"history":[{"v1Compatibility":{}}]}',
        '{"schemaVersion":1,"name":5}',
        '{"schemaVersion":1,"tag":[]}',
        '{"schemaVersion":1,"architecture":true}',
        '{"schemaVersion":1,"mediaType":5}',
    ],
)
def test_schema1_refused(text: str) -> None:
    assert not refused(j(text)).stricter


def test_schema1_folds_and_merges_like_the_rest() -> None:
    data = j(
        '{"schemaVersion":1,"FSLAYERS":[{"blobSum":$A},{"blobSum":$B}],'
        '"fsLayerſ":[{"BlobSum":null}],"fslayers":[{},{"BLOBSUM":$C}]}'
    )
    assert decode_manifest(data).fs_layers == (A, C)


# --- The result ---------------------------------------------------------------------


def test_results_are_frozen_slotted_dataclasses() -> None:
    manifest = decode_manifest(j('{$V2,"manifests":[{"digest":$A}]}'))
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.kind = "schema2"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.references[0].digest = B  # type: ignore[misc]
    assert not hasattr(manifest, "__dict__")
    assert not hasattr(manifest.references[0], "__dict__")
    assert isinstance(manifest, GoManifest)


def test_error_is_one_line_and_names_the_go_failure() -> None:
    error = refused(j('{$V2,"mediaType":$IMG,"layers":[{"digest":$A,"size":"3"}]}'))
    assert str(error) == (
        "ocischema: json: cannot unmarshal string into Go struct field "
        "ocischema.Manifest.layers.size of type int64"
    )
    assert error.stricter is False


# --- Properties ---------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_any_bytes_give_a_manifest_or_a_go_manifest_error(data: bytes) -> None:
    with contextlib.suppress(GoManifestError):
        decode_manifest(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(st.tuples(st.text(max_size=4), children), max_size=4)
    ),
    max_leaves=20,
)


def dump(value: Any) -> str:
    """JSON text for ``value``; a list of pairs is an object (duplicates allowed)."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    json_values, st.integers(0, 40), st.sampled_from(["", " ", ",", "]", "}", '"', "\\", "1e", "x"])
)
def test_iterative_parser_agrees_with_the_c_parser(value: Any, cut: int, noise: str) -> None:
    text = dump(value)
    for candidate in (text, text[:cut] + noise + text[cut:], " " + text + "\n"):
        try:
            expected: Any = gojson._DECODER.decode(candidate)
        except (ValueError, gojson.GoSyntaxError):
            with pytest.raises(gojson.GoSyntaxError):
                gojson._parse_iterative(candidate)
        else:
            assert gojson._parse_iterative(candidate) == expected


# A small reference model of Go's decoding for random manifests made of random key
# spellings, duplicate members, nulls and merges (valid types only: type errors are
# tested above). Written directly, without the module's machinery.

SPELLINGS = {
    "manifests": ["manifests", "Manifests", "MANIFESTS", "manifeſts", "MANIFEſTS"],
    "layers": ["layers", "Layers", "LAYERS", "layerſ"],
    "config": ["config", "Config", "CONFIG"],
    "mediaType": ["mediaType", "MediaType", "mediatype", "MEDIATYPE"],
    "digest": ["digest", "Digest", "DIGEST", "digeſt", "DIGEſT"],
    "size": ["size", "Size", "ſize", "SIZE"],
    "platform": ["platform", "Platform", "PLATFORM"],
    "unknown": ["digests", "layer", "manifest", "\u212aonfig", "d\u0131gest", "confıg", "x"],
}


def key(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from(SPELLINGS[name])


@dataclasses.dataclass(frozen=True)
class Obj:
    """A generated JSON object: its members in order, duplicates allowed."""

    pairs: list[tuple[str, Any]]


digest_values = st.sampled_from([A, B, C, D, "", None])
descriptor_pairs = st.lists(
    st.one_of(
        st.tuples(key("digest"), digest_values),
        st.tuples(key("size"), st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
        st.tuples(key("mediaType"), st.sampled_from([OCI_MANIFEST, "m", None])),
        st.tuples(key("platform"), st.sampled_from([None, {"os": "linux"}, {"variant": None}])),
        st.tuples(key("unknown"), st.sampled_from([1, "x", None, [1.5], {"size": "no"}])),
    ),
    max_size=4,
).map(Obj)
descriptor_lists = st.one_of(
    st.none(), st.lists(st.one_of(st.none(), descriptor_pairs), max_size=6)
)
top_pairs = st.lists(
    st.one_of(
        st.tuples(key("manifests"), descriptor_lists),
        st.tuples(key("layers"), descriptor_lists),
        st.tuples(key("config"), st.one_of(st.none(), descriptor_pairs)),
        st.tuples(
            key("mediaType"),
            st.sampled_from([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_V2, None]),
        ),
        st.tuples(key("unknown"), st.sampled_from([None, 7, "s", {"a": [1]}])),
    ),
    max_size=7,
)


def to_json(value: Any) -> str:
    if isinstance(value, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.pairs) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


def matches(key: str, name: str) -> bool:
    # Go: exact, or ASCII case-insensitive with U+017F as s (and U+212A as k).
    if key == name:
        return True
    canonical = key.replace("ſ", "s").replace("\u212a", "k")
    return canonical.isascii() and canonical.lower() == name.lower()


def model_descriptor(obj: Obj | None, into: dict[str, Any]) -> None:
    for k, v in obj.pairs if obj else []:
        for name in ("digest", "size", "mediaType"):
            if matches(k, name) and v is not None:
                into[name] = v


class GoSlice:
    """A Go slice of descriptors: a backing array (its length is the cap) and a length."""

    def __init__(self) -> None:
        self.array: list[dict[str, Any]] = []
        self.length = 0


def model_slice(current: GoSlice | None, items: list[Any] | None) -> GoSlice | None:
    if items is None:
        return None
    fresh = GoSlice()
    if not items:
        return fresh
    s = current or fresh
    for i, item in enumerate(items):
        if i == len(s.array):  # full: a new array of cap*1.5 (at least 4), live part copied
            grown = GoSlice()
            grown.array = s.array[: s.length] + [
                {} for _ in range(max(4, len(s.array) * 3 // 2) - s.length)
            ]
            grown.length = s.length
            s = grown
        s.length = max(s.length, i + 1)
        model_descriptor(item, s.array[i])  # a null element is a no-op
    s.length = len(items)
    return s


def model(pairs: list[tuple[str, Any]]) -> tuple[str, list[str]] | str:
    """("kind", digests) as 2.8.2 reads it, or "refused" / "stricter"."""
    media_type = ""
    manifests: GoSlice | None = None
    layers: GoSlice | None = None
    config: dict[str, Any] = {}
    last: dict[str, Any] = {}
    for k, v in pairs:
        if matches(k, "mediaType") and v is not None:
            media_type = v
        if matches(k, "manifests"):
            manifests = model_slice(manifests, v)
        if matches(k, "layers"):
            layers = model_slice(layers, v)
        if matches(k, "config"):
            model_descriptor(v, config)
        for name in ("manifests", "layers", "config"):
            if matches(k, name):
                last[name] = v
    if media_type in (OCI_INDEX, DOCKER_LIST) or (media_type == "" and manifests is not None):
        if last.get("config") is not None or last.get("layers") is not None:
            return "stricter"
        return "index", [
            e.get("digest", "") for e in (manifests.array[: manifests.length] if manifests else [])
        ]
    if last.get("manifests") is not None:
        return "stricter"
    kind = "schema2" if media_type == DOCKER_V2 else "oci-image"
    children = layers.array[: layers.length] if layers else []
    return kind, [config.get("digest", "")] + [e.get("digest", "") for e in children]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(top_pairs)
def test_decode_agrees_with_a_reference_model(pairs: list[tuple[str, Any]]) -> None:
    data = (
        '{"schemaVersion":2' + "".join(f",{json.dumps(k)}:{to_json(v)}" for k, v in pairs) + "}"
    ).encode()
    expected = model(pairs)
    if expected == "stricter":
        assert refused(data).stricter
    else:
        manifest = decode_manifest(data)
        assert expected == (manifest.kind, [r.digest for r in manifest.references])


@given(top_pairs)
def test_a_deep_unknown_member_changes_nothing(pairs: list[tuple[str, Any]]) -> None:
    # The deep member forces the iterative parser for the whole document.
    body = "".join(f",{json.dumps(k)}:{to_json(v)}" for k, v in pairs)
    plain = ('{"schemaVersion":2' + body + "}").encode()
    deep_data = ('{"schemaVersion":2,"zz":' + deep(2_000) + body + "}").encode()
    try:
        expected: GoManifest | str = decode_manifest(plain)
    except GoManifestError as exc:
        expected = str(exc)
    try:
        got: GoManifest | str = decode_manifest(deep_data)
    except GoManifestError as exc:
        got = str(exc)
    assert got == expected
