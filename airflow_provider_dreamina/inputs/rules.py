"""The Dreamina schema's rules for an input image, checked from its header and size alone.

JPEG or PNG (judged by content, not by name); less than 4.7 MB; each side longer than 320 and at
most 4096 pixels; the long side less than three times the short one. The pixels are never decoded:
Pillow reads the header (imported when a check runs, so parsing a DAG file never pays for it). A
``data:`` URI is checked the same way, and a file that is read is inlined as one.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Literal

from pydantic import BaseModel, ConfigDict

from airflow_provider_dreamina.exceptions import DreaminaInvalidInputError

# The schema says "less than 4.7 MB"; RunComfy's web tooling counts decimal megabytes.
IMAGE_MAX_BYTES = 4_700_000
IMAGE_MIN_SIDE = 320  # exclusive: a side must be longer than this
IMAGE_MAX_SIDE = 4096  # inclusive
IMAGE_MAX_RATIO = 3.0  # exclusive: long side / short side must be below this
IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}
# Enough to hold any JPEG or PNG header; more is read only when the header is not found in it.
HEAD_BYTES = 256 * 1024
# A base64 payload longer than this decodes to more than the size limit.
_DATA_URI_MAX_CHARS = (IMAGE_MAX_BYTES + 2) // 3 * 4 + 4


class ImageInfo(BaseModel):
    """What the preflight learnt about an input image."""

    model_config = ConfigDict(frozen=True)

    format: Literal["JPEG", "PNG"]
    width: int
    height: int
    size_bytes: int

    @property
    def media_type(self) -> str:
        return IMAGE_FORMATS[self.format]


def check_image(head: bytes, size_bytes: int, *, source: str) -> ImageInfo:
    """Check an image against the Dreamina schema from its first bytes and its total size.

    ``head`` needs to hold only the image header (a few KiB); the pixels are never decoded.
    ``source`` is how the message names the image (see :func:`image_label`). Raises
    :class:`DreaminaInvalidInputError` naming the rule and the measured value.
    """
    from PIL import Image, UnidentifiedImageError

    def invalid(rule: str) -> DreaminaInvalidInputError:
        return DreaminaInvalidInputError(f"image_urls[0] ({source}): {rule}", field="image_urls")

    if size_bytes >= IMAGE_MAX_BYTES:
        raise invalid(
            f"image is {_megabytes(size_bytes)}; the limit is {_megabytes(IMAGE_MAX_BYTES)}"
            " (file size must be less than 4.7 MB)"
        )
    try:
        with Image.open(io.BytesIO(head)) as image:
            image_format, (width, height) = image.format, image.size
    except (UnidentifiedImageError, OSError, ValueError):
        raise invalid("is not a JPEG or PNG image (checked by content, not by name)") from None
    if image_format not in IMAGE_FORMATS:
        raise invalid(f"is a {image_format} image; only JPEG and PNG are accepted")
    short_side, long_side = sorted((width, height))
    if long_side > IMAGE_MAX_SIDE:
        raise invalid(
            f"image is {width}x{height} pixels; the maximum resolution is {IMAGE_MAX_SIDE}x{IMAGE_MAX_SIDE}"
        )
    if short_side <= IMAGE_MIN_SIDE:
        raise invalid(
            f"image is {width}x{height} pixels; the shortest side must be more than {IMAGE_MIN_SIDE} pixels"
        )
    if long_side / short_side >= IMAGE_MAX_RATIO:
        raise invalid(
            f"image is {width}x{height} pixels, a ratio of {long_side / short_side:.2f}:1;"
            " the ratio of long side to short side must be within 3:1"
        )
    return ImageInfo(format=image_format, width=width, height=height, size_bytes=size_bytes)


def _megabytes(size_bytes: int) -> str:
    return f"{size_bytes / 1_000_000:.1f} MB"


def check_data_uri(uri: str, *, validate: bool) -> None:
    """Check a ``data:`` URI: base64 image data, and with ``validate`` an image the schema accepts."""
    header, sep, payload = uri.partition(",")
    if not sep or not header.lower().startswith("data:image/") or not header.lower().endswith(";base64"):
        raise DreaminaInvalidInputError(
            "image_urls[0] is a data: URI that is not base64 image data (expected data:image/png;base64,...)",
            field="image_urls",
        )
    if len(payload) > _DATA_URI_MAX_CHARS:
        check_image(b"", len(payload) * 3 // 4, source="data: URI")
    if not validate:
        return
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise DreaminaInvalidInputError(
            "image_urls[0] is a data: URI whose base64 payload does not decode", field="image_urls"
        ) from None
    check_image(raw[:HEAD_BYTES], len(raw), source="data: URI")


def inline(raw: bytes, size: int, label: str, *, validate: bool) -> str:
    head = raw[:HEAD_BYTES]
    if validate:
        media_type = check_image(head, size, source=label).media_type
    else:
        if size >= IMAGE_MAX_BYTES:  # never inline more than the schema allows, checked or not
            check_image(b"", size, source=label)
        media_type = "image/jpeg" if head.startswith(b"\xff\xd8\xff") else "image/png"
    return f"data:{media_type};base64,{base64.b64encode(raw).decode('ascii')}"
