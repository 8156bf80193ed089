"""Distribution's storage paths, mirrored from registry/storage/paths.go (v2.x and v3.x).

Pure: strings in, strings out. Paths are relative to the storage root and use ``/``
on every backend; the filesystem backend joins them to its root, the S3 backend
prefixes the bucket's ``rootdirectory``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from regcleaner.digest import Digest, hex_of

V2_ROOT = "docker/registry/v2"
REPOSITORIES = f"{V2_ROOT}/repositories"
BLOBS = f"{V2_ROOT}/blobs"
BLOBS_SHA256 = f"{BLOBS}/sha256"
MANIFESTS_DIR = "_manifests"
LAYERS_DIR = "_layers"
UPLOADS_DIR = "_uploads"
LINK = "link"
DATA = "data"
CURRENT_LINK = "current/link"

# distribution/reference grammar: path components joined by "/", 255 characters at most.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
MAX_NAME_LENGTH = 255
# reference.WithName also takes a domain before the path components: its components
# may hold capitals, and it may end in a port (reference/regexp.go, anchoredNameRegexp).
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_REFERENCE_NAME = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*")
# The storage driver's path grammar (storagedriver.PathRegexp), one component at a time.
_DRIVER_COMPONENT = re.compile(r"[A-Za-z0-9._-]+")
# The digest algorithms the registry's go-digest knows, and their hex lengths.
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX = re.compile(r"[0-9a-f]+")


def is_valid_repository_name(name: str) -> bool:
    """True if ``name`` obeys the distribution name grammar and is safe to put in a URL."""
    return len(name) <= MAX_NAME_LENGTH and _NAME.fullmatch(name) is not None


def is_reference_name(name: str) -> bool:
    """True if distribution's ``reference.WithName`` accepts ``name``: what
    ``is_valid_repository_name`` accepts, and also a domain-like first component
    (``App/x``, ``host:5000/x``)."""
    return len(name) <= MAX_NAME_LENGTH and _REFERENCE_NAME.fullmatch(name) is not None


def is_driver_path(key: str) -> bool:
    """True if the registry's storage driver accepts this path: every component made of
    ``A-Za-z0-9._-`` only (it refuses to read anything else)."""
    return all(_DRIVER_COMPONENT.fullmatch(part) for part in key.split("/"))


def registry_can_open(name: str) -> bool:
    """True if the registry's garbage-collect can open repository ``name``: WithName
    accepts it and the driver accepts its path (a domain's ``:port`` fails there)."""
    return is_reference_name(name) and is_driver_path(name)


def blob_digest_at(key: str) -> str | None:
    """The digest whose bytes ``key`` (relative to ``blobs/``) holds, if it is a blob's
    ``<algorithm>/<hex[:2]>/<hex>/data``, with an algorithm the registry knows and its
    exact lowercase hex; None for any other key. The registry's garbage-collect fails
    on any other file named ``data`` (or takes it for a blob whose folder it cannot
    remove), so a caller treats those as doubt."""
    parts = key.split("/")
    if len(parts) != 4 or parts[3] != DATA:
        return None
    algorithm, fan_out, hex_part, _ = parts
    if (
        len(hex_part) != DIGEST_HEX_LENGTHS.get(algorithm)
        or fan_out != hex_part[:2]
        or _LOWER_HEX.fullmatch(hex_part) is None
    ):
        return None
    return f"{algorithm}:{hex_part}"


def is_valid_component(component: str) -> bool:
    """True for one path component of a repository name."""
    return re.fullmatch(_COMPONENT, component) is not None


def is_valid_tag(tag: str) -> bool:
    """True if ``tag`` obeys the distribution tag grammar."""
    return _TAG.fullmatch(tag) is not None


def repository_dir(repository: str) -> str:
    """``docker/registry/v2/repositories/<name>``."""
    return f"{REPOSITORIES}/{repository}"


def manifests_dir(repository: str) -> str:
    """``.../repositories/<name>/_manifests``."""
    return f"{REPOSITORIES}/{repository}/{MANIFESTS_DIR}"


def revisions_dir(repository: str) -> str:
    """Folder that holds one ``<hex>/link`` per manifest ever pushed to the repository."""
    return f"{manifests_dir(repository)}/revisions/sha256"


def all_revisions_dir(repository: str) -> str:
    """``_manifests/revisions``: every algorithm's revisions (the registry's
    garbage-collect reads every link below it)."""
    return f"{manifests_dir(repository)}/revisions"


def revision_link(repository: str, digest: Digest) -> str:
    """The link whose presence makes ``digest`` a manifest of ``repository``."""
    return f"{revisions_dir(repository)}/{hex_of(digest)}/link"


def tags_dir(repository: str) -> str:
    """Folder of the repository's tags, one sub-folder per tag."""
    return f"{manifests_dir(repository)}/tags"


def revision_dir(repository: str, digest: Digest) -> str:
    """The folder of one revision: its ``link`` (and, for schema1, ``signatures/``)."""
    return f"{revisions_dir(repository)}/{hex_of(digest)}"


def tag_dir(repository: str, tag: str) -> str:
    """One tag's folder: ``current/link`` and the ``index/`` history."""
    return f"{tags_dir(repository)}/{tag}"


def tag_current_link(repository: str, tag: str) -> str:
    """The link naming the digest ``tag`` points at now (``index/`` is history, not this)."""
    return f"{tags_dir(repository)}/{tag}/{CURRENT_LINK}"


def tag_history_dir(repository: str, tag: str) -> str:
    """Folder of every digest ``tag`` ever pointed at, one ``<hex>/link`` each."""
    return f"{tags_dir(repository)}/{tag}/index/sha256"


def tag_history_entry(repository: str, tag: str, digest: Digest) -> str:
    """The folder of ``digest`` in ``tag``'s history."""
    return f"{tag_history_dir(repository, tag)}/{hex_of(digest)}"


def layers_dir(repository: str) -> str:
    """Folder of the blobs linked into a repository, one ``<hex>/link`` each."""
    return f"{REPOSITORIES}/{repository}/{LAYERS_DIR}/sha256"


def uploads_dir(repository: str) -> str:
    """Folder of the repository's unfinished uploads, one folder per upload id."""
    return f"{REPOSITORIES}/{repository}/{UPLOADS_DIR}"


def blob_dir(digest: Digest) -> str:
    """The folder of one blob: ``blobs/sha256/<hex[:2]>/<hex>``."""
    hex_part = hex_of(digest)
    return f"{BLOBS_SHA256}/{hex_part[:2]}/{hex_part}"


def blob_data(digest: Digest) -> str:
    """Where the bytes of a blob (layer, config or manifest JSON) live."""
    return f"{blob_dir(digest)}/{DATA}"


@dataclass(frozen=True, slots=True)
class ManifestKey:
    """What a key below ``_manifests/`` names: a revision or a tag's current link."""

    repository: str
    kind: str  # "revision" | "tag"
    name: str  # the 64-hex revision id, or the tag


def parse_manifests_key(key: str) -> ManifestKey | None:
    """Classify a path relative to ``repositories/``; None for anything that is neither.

    ``org/app/_manifests/revisions/sha256/<hex>/link`` is a revision and
    ``org/app/_manifests/tags/<tag>/current/link`` a tag. Tag ``index/`` history,
    schema1 ``signatures/`` and anything malformed give None.
    """
    repository, sep, rest = key.partition(f"/{MANIFESTS_DIR}/")
    if not sep or not repository:
        return None
    parts = rest.split("/")
    if (
        len(parts) == 4
        and parts[0] == "revisions"
        and parts[1] == "sha256"
        and parts[3] == "link"
        and re.fullmatch(r"[0-9a-f]{64}", parts[2])
    ):
        return ManifestKey(repository, "revision", parts[2])
    if len(parts) == 4 and parts[0] == "tags" and parts[2] == "current" and parts[3] == "link":
        return ManifestKey(repository, "tag", parts[1])
    return None
