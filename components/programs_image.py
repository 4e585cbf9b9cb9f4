"""The image every fedobs Job and CronJob runs (``programs/Containerfile``), as stack config.

``.github/workflows/release.yml`` builds it from a tag ``programs-v<version>``, pushes
``ghcr.io/fedobs/programs:<version>``, signs the pushed digest and records ``<repository>@sha256:<digest>``
(job summary, ``programs-image`` artifact, job outputs). A stack names it in ``fedobs:programsImage``,
and runs it **by digest**: a tag can be moved to other content after review, a digest cannot, and this
image handles the unseal record, the admin credential and the client CA.

A reference without a digest is a config error unless ``fedobs:developmentMode`` is true (config.py).
The shipped ``Pulumi.<stack>.yaml`` files hold :data:`PLACEHOLDER`, an all-zero digest no registry
serves, until an operator puts a released digest there (README, "The programs image"): like the
``secure: v1:placeholder-…`` secrets beside it, it stops ``pulumi preview`` with a message naming the key.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from components.settings import CONFIG_NAMESPACE
from components.versions import PROGRAMS_IMAGE_REPOSITORY

#: ``[registry[:port]/]path[:tag][@sha256:<64 hex>]`` (the OCI distribution reference grammar, lower case).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(
    rf"^(?P<name>(?:[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[^@]+))?$"
)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
#: The digest the shipped stack files carry until a release's digest is put there.
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
PLACEHOLDER = f"{PROGRAMS_IMAGE_REPOSITORY}@{PLACEHOLDER_DIGEST}"
EXAMPLE = f"{PROGRAMS_IMAGE_REPOSITORY}@sha256:<64 hex digits>"


def _image_reference(value: str) -> str:
    match = IMAGE_REFERENCE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not an image reference (expected {EXAMPLE})")
    digest = match["digest"]
    if digest is not None and not DIGEST.match(digest):
        raise ValueError(f"{value!r} has a malformed digest {digest!r} (expected sha256: and 64 lower-case hex digits)")
    if digest == PLACEHOLDER_DIGEST:
        raise ValueError(
            f"{value!r} is the placeholder shipped in Pulumi.<stack>.yaml: no registry serves it. Give the "
            "digest release.yml recorded for the release you deploy "
            f"(pulumi config set {CONFIG_NAMESPACE}:programsImage {EXAMPLE}; README, 'The programs image')"
        )
    return value


ProgramsImage = Annotated[str, AfterValidator(_image_reference)]


def is_pinned_by_digest(reference: str) -> bool:
    """Whether ``reference`` names its content by digest (a valid :data:`ProgramsImage`)."""
    match = IMAGE_REFERENCE.match(reference)
    return bool(match and match["digest"])
