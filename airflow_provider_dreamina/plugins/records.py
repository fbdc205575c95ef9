"""Finding generations: the provider's asset events, and the manifest beside each stored video.

``DreaminaDownloadOperator`` announces what it stored in an asset event whose extra holds the
request id and each output (``uri``, ``sha256``, ``bytes``, ``content_type``), and writes
``<file>.json`` beside each file (prompt, seed, frames, cost, video facts, poster...). A
generation shown here is one video output of such an event; it is addressed by the event's id and
the output's position in it, so a request names a record, never a path.

A file is playable only when its record holds together: the event came from a task (not from
the REST API), it names the file's size and SHA-256, and the manifest beside the file names the
same request, size and SHA-256. Whether the bytes on disk are still those is checked when the file
is served (:mod:`integrity`). Manifests are read defensively: any key may be missing, and keys
added later (``video``, ``poster``) are used when present.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from airflow_provider_dreamina.outputs.manifest import MANIFEST_READ_LIMIT, Manifest, manifest_name
from airflow_provider_dreamina.plugins import files

VIDEO_TYPES = frozenset({"video/mp4", "video/quicktime", "video/webm", "video/x-m4v"})
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
_TYPES_BY_SUFFIX = {
    ".mp4": "video/mp4",
    ".m4v": "video/x-m4v",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII | re.IGNORECASE)
# Reading manifests is I/O (an object store may take tens of milliseconds each): a page reads
# them side by side, and keeps them a while, since a stored file's record rarely changes.
_READERS = 8
_CACHE_SECONDS = 60.0
_CACHE_ENTRIES = 1024


@dataclass(frozen=True)
class EventRow:
    """What the gallery needs of one ``asset_event`` row."""

    id: int
    timestamp: datetime
    extra: Mapping[str, Any]
    dag_id: str
    task_id: str
    run_id: str
    map_index: int


@dataclass(frozen=True)
class RecordedFile:
    """A stored file as its record describes it."""

    uri: str
    content_type: str
    sha256: str | None = None
    size: int | None = None
    conn_id: str | None = None

    @property
    def name(self) -> str:
        return files.file_name(self.uri)


@dataclass(frozen=True)
class Generation:
    """One stored video output of a request, with what its manifest says about it."""

    event_id: int
    index: int
    recorded_at: datetime
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    request_id: str
    video: RecordedFile
    manifest: Manifest = field(default_factory=Manifest)
    #: Why the file may not be played ("" when its record holds together).
    problem: str = "its manifest has not been read"
    poster: RecordedFile | None = None

    @property
    def key(self) -> str:
        return f"{self.event_id}-{self.index}"

    @property
    def playable(self) -> bool:
        return not self.problem

    @property
    def prompt(self) -> str | None:
        return self.manifest.prompt

    @property
    def seed(self) -> int | None:
        return self.manifest.seed

    @property
    def facts(self) -> Mapping[str, Any]:
        """The measured facts of the video (``video`` in the manifest), empty when not recorded."""
        video = self.manifest.video
        return video.model_dump(exclude_none=True) if video is not None else {}

    @property
    def frames(self) -> int | None:
        video = self.manifest.video
        return (video.frames if video is not None else None) or self.manifest.frames

    @property
    def duration_seconds(self) -> float | None:
        """The video's measured length; never the generation's wall time."""
        return self.manifest.video.duration_seconds if self.manifest.video is not None else None

    @property
    def cost_usd(self) -> float | None:
        return self.manifest.cost_usd

    @property
    def model_id(self) -> str | None:
        return self.manifest.model_id

    @property
    def finished_at(self) -> str | None:
        return self.manifest.finished_at or self.manifest.created_at


def _size(value: Any) -> int | None:
    """A recorded size: a JSON integer, not negative (the download writes nothing else)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _sha256(value: Any) -> str | None:
    """A recorded SHA-256: 64 hex digits, in lower case."""
    return value.lower() if isinstance(value, str) and _SHA256.fullmatch(value) else None


def media_type(content_type: Any, uri: str) -> str | None:
    """The media type of a recorded file: its recorded content type, else its name's suffix."""
    if isinstance(content_type, str) and content_type.strip():
        value = content_type.partition(";")[0].strip().lower()
        if value not in ("application/octet-stream", "binary/octet-stream"):
            return value
    return _TYPES_BY_SUFFIX.get(PurePosixPath(files.file_name(uri)).suffix.lower())


def _recorded_file(entry: Any, conn_id: str | None) -> RecordedFile | None:
    if isinstance(entry, str):
        entry = {"uri": entry}
    if not isinstance(entry, Mapping) or not isinstance(entry.get("uri"), str) or not entry["uri"]:
        return None
    uri = entry["uri"]
    kind = media_type(entry.get("content_type"), uri)
    if kind is None:
        return None
    own_conn = entry.get("conn_id")
    return RecordedFile(
        uri=uri,
        content_type=kind,
        sha256=_sha256(entry.get("sha256")),
        size=_size(entry.get("bytes")),
        conn_id=own_conn if isinstance(own_conn, str) else conn_id,
    )


def outputs_of(extra: Mapping[str, Any]) -> list[RecordedFile | None]:
    """Each output an event lists, in its order (None where an entry is unusable)."""
    conn_id = extra.get("conn_id") if isinstance(extra.get("conn_id"), str) else None
    entries: Any = extra.get("outputs")
    if not isinstance(entries, list):
        if isinstance(extra.get("uri"), str):  # an AssetAlias event: one file per event
            entries = [extra]
        elif isinstance(extra.get("uris"), list):
            entries = extra["uris"]
        else:
            entries = []
    return [_recorded_file(entry, conn_id) for entry in entries]


def generations_in(row: EventRow) -> list[Generation]:
    """The video outputs of one event (images in it are posters, not generations)."""
    request_id = row.extra.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        return []
    found = []
    for index, output in enumerate(outputs_of(row.extra)):
        if output is None or output.content_type not in VIDEO_TYPES:
            continue
        found.append(
            Generation(
                event_id=row.id,
                index=index,
                recorded_at=row.timestamp,
                dag_id=row.dag_id,
                task_id=row.task_id,
                run_id=row.run_id,
                map_index=row.map_index,
                request_id=request_id,
                video=output,
            )
        )
    return found


def generation_at(row: EventRow, index: int) -> Generation | None:
    return next((found for found in generations_in(row) if found.index == index), None)


ReadSmall = Callable[[str, int, "str | None"], "bytes | None"]
SizeOf = Callable[[str, "str | None"], "int | None"]


def read_manifest(video: RecordedFile, read: ReadSmall = files.read_small) -> Manifest | None:
    return Manifest.read(read(manifest_name(video.uri), MANIFEST_READ_LIMIT, video.conn_id))


def record_problem(generation: Generation, manifest: Manifest | None) -> str:
    """Why the event and the manifest beside the file disagree ("" when they agree)."""
    video = generation.video
    if video.sha256 is None or video.size is None:
        # Only the download's own event vouches for the bytes: without both, nothing may be served.
        return f"its event records no size and SHA-256 of {video.name}, so nothing vouches for its bytes"
    if manifest is None:
        return f"no readable manifest beside {video.name} ({manifest_name(video.name)})"
    if manifest.request_id != generation.request_id:
        return f"the manifest beside {video.name} names another request"
    if manifest.stored_uri is not None and manifest.stored_uri != video.uri:
        return f"the manifest beside {video.name} describes another file"
    if _sha256(manifest.sha256) is None or _size(manifest.size_bytes) is None:
        return f"the manifest beside {video.name} records no SHA-256 and size"
    if video.sha256 != _sha256(manifest.sha256) or video.size != manifest.size_bytes:
        return f"{video.name} was replaced after this event (its manifest records other contents)"
    return ""


def find_poster(video: RecordedFile, manifest: Manifest | None) -> RecordedFile | None:
    """The poster the manifest records beside the video, with its size and SHA-256; None without one.

    Only an image in the video's own directory whose digest was recorded qualifies: the gallery
    serves it only while its bytes are those, as it does the video.
    """
    poster = manifest.poster if manifest is not None else None
    if poster is None:
        return None
    sha256, size = _sha256(poster.sha256), _size(poster.size_bytes)
    uri = None
    if poster.stored_uri is not None and files.same_directory(poster.stored_uri, video.uri):
        uri = poster.stored_uri
    elif poster.file_name is not None and files.is_plain_name(poster.file_name):
        uri = files.sibling(video.uri, poster.file_name)
    kind = media_type(None, uri) if uri is not None else None
    if uri is None or kind not in IMAGE_TYPES or sha256 is None or size is None:
        return None
    return RecordedFile(uri=uri, content_type=kind, sha256=sha256, size=size, conn_id=video.conn_id)


class _DetailsCache:
    """Manifests and posters read recently, per stored file and contents."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str | None], tuple[float, Any]] = {}

    def get(self, key: tuple[str, str | None]) -> Any:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > _CACHE_SECONDS:
            return None
        return entry[1]

    def put(self, key: tuple[str, str | None], value: Any) -> None:
        if len(self._entries) >= _CACHE_ENTRIES:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), value)

    def clear(self) -> None:
        self._entries.clear()


details_cache = _DetailsCache()


def with_details(generation: Generation, read: ReadSmall = files.read_small) -> Generation:
    """The generation with its manifest, its poster, and whether its record holds together."""
    key = (generation.video.uri, generation.video.sha256)
    cached = details_cache.get(key)
    if cached is None:
        try:
            manifest = read_manifest(generation.video, read)
            poster = find_poster(generation.video, manifest)
        except files.StoredFileRefused as error:
            return replace(generation, problem=str(error))
        except Exception as error:  # a store that cannot be reached must not break the page
            return replace(generation, problem=f"its storage could not be read ({type(error).__name__})")
        cached = (manifest, poster)
        if manifest is not None and poster is not None:  # what is still missing may appear soon
            details_cache.put(key, cached)
    manifest, poster = cached
    return replace(
        generation,
        manifest=manifest or Manifest(),
        poster=poster,
        problem=record_problem(generation, manifest),
    )


def with_details_all(generations: list[Generation]) -> list[Generation]:
    if len(generations) <= 1:
        return [with_details(found) for found in generations]
    with ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="dreamina-gallery") as pool:
        return list(pool.map(with_details, generations))
