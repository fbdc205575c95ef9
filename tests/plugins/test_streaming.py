"""HTTP Range and Content-Disposition: what a player or a browser asks for, and what it gets."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

from airflow_provider_dreamina.plugins.streaming import (
    ByteRange,
    RangeNotSatisfiable,
    content_disposition,
    parse_range,
)
from tests.plugins.conftest import FakeCatalog
from tests.plugins.gallery_records import VIDEO, event, store_video


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("bytes=0-", ByteRange(0, 999)),
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=500-", ByteRange(500, 999)),
        ("bytes=900-5000", ByteRange(900, 999)),  # the end is clamped to the file
        ("bytes=-100", ByteRange(900, 999)),  # the last 100 bytes
        ("bytes=-5000", ByteRange(0, 999)),
        ("BYTES = 10 - 19", ByteRange(10, 19)),
        ("bytes=0-18446744073709551615", ByteRange(0, 999)),  # an end past any file: to its end
        ("items=0-10", None),  # another unit: the whole file, as RFC 9110 requires
    ],
)
def test_ranges_a_player_sends(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1000-",
        "bytes=5000-6000",
        "bytes=-0",
        "bytes=20-10",  # start after end
        "bytes=0-1,5-9",  # several ranges: not served
        "bytes=0-1, 0-1",
        "bytes=-",
        "bytes=",
        "bytes",
        "bytes=abc-",
        "bytes=-5-10",
        "bytes=--5",
        "bytes=1-2-3",
        "bytes=+1-2",
        "bytes=٣-٤",  # digits, but not ASCII ones
        "bytes=1_000-",
        "bytes=0x10-",
        "bytes=" + "1" * 4300 + "-",  # the review's number: 4,300 digits
        "bytes=-" + "1" * 4300,
        "bytes=" + "1" * 100_000 + "-",
        "bytes=0-" + "9" * 21,  # more digits than any byte position has
        "bytes=-" + "9" * 21,
    ],
)
def test_ranges_that_cannot_be_satisfied_or_read(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


def test_a_range_knows_its_length() -> None:
    assert ByteRange(10, 19).length == 10


@pytest.mark.parametrize(
    "header",
    ["bytes=" + "1" * 4300 + "-", "bytes=-" + "9" * 4300, "bytes=0-1,5-9", "bytes=20-10", "bytes=x-"],
)
def test_absurd_ranges_answer_416_never_500(
    served: TestClient, fake: FakeCatalog, tmp_path: Path, header: str
) -> None:
    fake.events.append(event(1, "req-1", [store_video(tmp_path, "req-1")]))
    for method in ("GET", "HEAD"):
        answer = served.request(method, "/media/1/0/video", headers={"Range": header})
        assert answer.status_code == 416, (method, answer.status_code)
        assert answer.headers["content-range"] == f"bytes */{len(VIDEO)}"
        assert VIDEO[:64] not in answer.content


NAMES = [
    "视频 1.mp4",
    "Ünïcödé-ß.mp4",
    'quote"semi;colon.mp4',
    "back\\slash,comma.mp4",
    "emoji 🎬 100%.mp4",
    "tab\tand\x7fdel.mp4",
    "line\r\nBreak: injected.mp4",
]


@pytest.mark.parametrize(
    "name",
    [
        *NAMES,
        "escaped %41.mp4",  # a file:// URI's escapes are decoded once (locations.locate)
    ],
)
def test_a_stored_name_of_any_characters_is_served_with_an_ascii_fallback(
    served: TestClient, fake: FakeCatalog, tmp_path: Path, name: str
) -> None:
    recorded = store_video(tmp_path, "req-1")
    (tmp_path / name).write_bytes(VIDEO)
    (tmp_path / f"{name}.json").write_text(
        (tmp_path / "req-1.mp4.json").read_text().replace(recorded["uri"], (tmp_path / name).as_uri())
    )
    fake.events.append(event(1, "req-1", [{**recorded, "uri": (tmp_path / name).as_uri()}]))
    answer = served.get("/media/1/0/video")
    assert (answer.status_code, answer.content) == (200, VIDEO)
    disposition = answer.headers["content-disposition"]
    assert disposition.isascii() and disposition.isprintable()
    fallback, encoded = parse_disposition(disposition)
    assert fallback.isascii() and fallback.endswith(".mp4")
    assert encoded == name
    assert "Break: injected" not in answer.headers  # no header of its own


def parse_disposition(value: str) -> tuple[str, str]:
    """``inline; filename="..."; filename*=UTF-8''...`` → (fallback, decoded name)."""
    kind, _, rest = value.partition("; ")
    assert kind == "inline"
    assert rest.startswith('filename="')
    fallback, _, extended = rest[len('filename="') :].partition('"; ')
    assert extended.startswith("filename*=UTF-8''")
    encoded = extended[len("filename*=UTF-8''") :]
    assert all(char.isalnum() or char in "!#$&+-.^_`|~%" for char in encoded), encoded
    return fallback, unquote(encoded, errors="strict")


@pytest.mark.parametrize("name", [*NAMES, "plain.mp4", "", "\udcff.mp4", "a" * 2000 + ".mp4"])
def test_content_disposition_holds_any_name(name: str) -> None:
    value = content_disposition(name)
    assert value.isascii() and value.isprintable() and len(value) < 9000
    value.encode("latin-1")  # what an HTTP header must be
    fallback, decoded = parse_disposition(value)
    assert '"' not in fallback and "\\" not in fallback
    assert decoded == name.encode("utf-8", "replace").decode() if name else decoded == "video"
