"""locations: one meaning of "a path or a storage URI" everywhere, and atomic small writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_dreamina.locations import NotOnThisMachine, locate, scheme_of, write_atomically
from airflow_provider_dreamina.outputs.destinations import open_destination


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("/data/frames", "/data/frames"),
        ("file:///data/frames", "/data/frames"),
        ("file://localhost/data/frames", "/data/frames"),
        ("FILE:///data/a%20b", "/data/a b"),
        # Decoded once: a literal "%41" in a name is stored as %2541 by Path.as_uri().
        (Path("/data/escaped %41.mp4").as_uri(), "/data/escaped %41.mp4"),
        ("local:///data/frames", "/data/frames"),
    ],
)
def test_local_forms_name_a_path_on_this_machine(text: str, path: str) -> None:
    location = locate(text)
    assert (location.path, location.uri, location.is_local) == (Path(path), None, True)


def test_home_is_expanded() -> None:
    assert locate("~/frames").path == Path.home() / "frames"


@pytest.mark.parametrize("text", ["s3://bucket/videos/", "gs://b/x", "memory://ledger", "abfss://c@a/x"])
def test_storage_uris_stay_uris(text: str) -> None:
    location = locate(text)
    assert (location.path, location.uri, location.scheme) == (None, text, scheme_of(text))


def test_a_file_uri_of_another_machine_is_refused() -> None:
    with pytest.raises(NotOnThisMachine, match=r"another\.host"):
        locate("file://another.host/etc/passwd")


def test_an_atomic_write_leaves_only_the_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "record.json"
    write_atomically(target, b"old")
    write_atomically(target, b"new", temporary_prefix=".record.json.partial-")
    assert target.read_bytes() == b"new"
    assert sorted(path.name for path in target.parent.iterdir()) == ["record.json"]


def test_a_destination_through_a_symlinked_directory_records_the_real_one(tmp_path: Path) -> None:
    real = tmp_path / "volume"
    real.mkdir()
    (tmp_path / "data").symlink_to(real)
    destination = open_destination(str(tmp_path / "data" / "videos"))
    destination.prepare()
    assert destination.uri("clip.mp4") == (real / "videos" / "clip.mp4").as_uri()
