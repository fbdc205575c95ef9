"""What each stored output is called: the filename template, its fields, and the checks on a name.

A name is built from untrusted parts (the output URL's own name, a content type) and a template
the DAG author wrote; whatever they hold, a stored name is one plain, visible file name inside the
destination directory, or the download stops before anything is written.
"""

from __future__ import annotations

import string
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from airflow_provider_dreamina.exceptions import DreaminaDownloadError

#: The fields a filename template may use.
FILENAME_FIELDS = frozenset({"request_id", "index", "ext", "name"})
#: Dreamina image-to-video returns MP4: the suffix when neither the URL nor the content type tells.
FALLBACK_SUFFIX = ".mp4"
POSTER_SUFFIX = ".jpg"
_NAME_MAX_BYTES = 255
# Suffixes RunComfy outputs may have; anything else from a URL is ignored, never trusted.
_SUFFIXES_BY_TYPE = {
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}
_KNOWN_SUFFIXES = frozenset({*_SUFFIXES_BY_TYPE.values(), ".m4v", ".jpeg"})


def suffix_from_url(url: str) -> str | None:
    """The media suffix (``.mp4``) an output URL's path ends with, if it is a known one."""
    suffix = PurePosixPath(unquote(urlsplit(url).path)).suffix.lower()
    return suffix if suffix in _KNOWN_SUFFIXES else None


def suffix_from_content_type(content_type: str | None) -> str | None:
    media_type = (content_type or "").partition(";")[0].strip().lower()
    return _SUFFIXES_BY_TYPE.get(media_type)


def name_from_url(url: str) -> str:
    """The output's own name in its URL, without suffix; untrusted: check the name built from it."""
    # Decoded after splitting, so "..%2F..%2Fx.mp4" stays one (refused) name instead of becoming "x".
    segment = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    stem, dot, suffix = segment.rpartition(".")
    return stem if dot and stem and "/" not in suffix and "\\" not in suffix else segment


def check_name(name: str, destination: str) -> str:
    """Return ``name`` if it is one plain file name inside the destination; raise otherwise."""
    problem = None
    if not name or not name.strip():
        problem = "is empty"
    elif name in (".", "..") or "/" in name or "\\" in name:
        problem = "would leave the destination directory"
    elif name.startswith("."):
        problem = "starts with '.' (hidden and temporary files use such names)"
    elif any(ord(char) < 32 or ord(char) == 127 for char in name):
        problem = "contains control characters"
    elif len(name.encode()) > _NAME_MAX_BYTES:
        problem = f"is longer than {_NAME_MAX_BYTES} bytes"
    if problem:
        raise DreaminaDownloadError(
            f"refusing to store an output as {name!r} in {destination}: the name {problem}; "
            "check the filename template"
        )
    return name


def poster_name(video_name: str) -> str:
    """``clip.mp4`` → ``clip.jpg``: the poster beside its video."""
    stem, dot, _suffix = video_name.rpartition(".")
    return (stem if dot and stem else video_name) + POSTER_SUFFIX


class FileNames:
    """The names of a request's outputs in one destination, from the operator's ``filename``.

    :param template: ``str.format`` template with the fields of :data:`FILENAME_FIELDS`; default
        ``{request_id}{ext}``, or ``{request_id}-{index}{ext}`` when there are several outputs.
    :param destination: how messages name the destination.
    """

    def __init__(self, template: str | None, destination: str) -> None:
        self.template = template
        self.destination = destination

    def name(self, request_id: str, index: int, count: int, url: str, ext: str) -> str:
        template = self.template or ("{request_id}{ext}" if count == 1 else "{request_id}-{index}{ext}")
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
            unknown = sorted(fields - FILENAME_FIELDS)
            if unknown:
                raise KeyError(", ".join(unknown))
            name = template.format(request_id=request_id, index=index, ext=ext, name=name_from_url(url))
        except (KeyError, ValueError, IndexError, AttributeError) as error:
            raise DreaminaDownloadError(
                f"filename template {template!r} cannot be used ({type(error).__name__}: {error}); its "
                f"fields are {', '.join('{' + field + '}' for field in sorted(FILENAME_FIELDS))}"
            ) from None
        return check_name(name, self.destination)

    def planned(self, request_id: str, urls: list[str]) -> list[str]:
        """Every output's name, each from its URL's suffix (or MP4); refused when two collide."""
        names = [
            self.name(request_id, index, len(urls), url, suffix_from_url(url) or FALLBACK_SUFFIX)
            for index, url in enumerate(urls, start=1)
        ]
        if len(set(names)) < len(names):
            raise DreaminaDownloadError(
                f"filename template {self.template!r} gives the same name to several of the "
                f"{len(urls)} outputs of request {request_id}; include {{index}} in it"
            )
        return names
