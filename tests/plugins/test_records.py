"""Generations from events and manifests: what is shown, and what is playable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_dreamina.plugins import records
from airflow_provider_dreamina.plugins.records import generations_in, with_details
from tests.plugins.gallery_records import event, recorded_poster, store_video


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    records.details_cache.clear()


def test_each_video_output_of_an_event_is_a_generation(tmp_path: Path) -> None:
    first = store_video(tmp_path, "req-1")
    poster = {"uri": (tmp_path / "req-1.jpg").as_uri(), "content_type": "image/jpeg"}
    found = generations_in(event(7, "req-1", [first, poster, {"uri": "s3://b/k.bin"}]))
    assert [(g.key, g.video.uri) for g in found] == [("7-0", first["uri"])]  # the image is a poster


def test_events_of_other_shapes(tmp_path: Path) -> None:
    output = store_video(tmp_path, "req-2")
    alias_event = event(1, "req-2", [])
    alias_event = alias_event.__class__(
        **{**alias_event.__dict__, "extra": {"request_id": "req-2", **output}}
    )
    assert [g.video.uri for g in generations_in(alias_event)] == [output["uri"]]
    uris_only = alias_event.__class__(
        **{**alias_event.__dict__, "extra": {"request_id": "r", "uris": [output["uri"]]}}
    )
    assert [g.video.content_type for g in generations_in(uris_only)] == ["video/mp4"]  # from the suffix
    no_request = alias_event.__class__(**{**alias_event.__dict__, "extra": {"files": [output["uri"]]}})
    assert generations_in(no_request) == []


def test_a_matching_manifest_makes_a_video_playable_with_its_facts(tmp_path: Path) -> None:
    output = store_video(
        tmp_path,
        "req-3",
        manifest={
            "cost_usd": 0.42,
            "generation_seconds": 37.5,  # wall time of the generation, not the length of the video
            "video": {"duration_seconds": 5.04, "frames": 121, "fps": 24, "width": 1280, "height": 720},
        },
    )
    (generation,) = generations_in(event(1, "req-3", [output]))
    generation = with_details(generation)
    assert generation.playable, generation.problem
    assert (generation.prompt, generation.seed, generation.frames) == ("prompt of req-3", 42, 121)
    assert generation.cost_usd == 0.42
    assert generation.duration_seconds == 5.04


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"request_id": "another"}, "names another request"),
        ({"sha256": "0" * 64}, "was replaced after this event"),
        ({"bytes": 1}, "was replaced after this event"),
        ({"stored_uri": "file:///etc/passwd"}, "describes another file"),
        ({"sha256": None}, "records no SHA-256"),
    ],
)
def test_a_manifest_that_disagrees_with_the_event_is_not_playable(
    tmp_path: Path, change: dict[str, object], problem: str
) -> None:
    output = store_video(tmp_path, "req-4", manifest=change)
    (generation,) = generations_in(event(1, "req-4", [output]))
    generation = with_details(generation)
    assert not generation.playable
    assert problem in generation.problem


def test_without_a_manifest_nothing_is_played(tmp_path: Path) -> None:
    output = store_video(tmp_path, "req-5", write_manifest=False)
    (generation,) = generations_in(event(1, "req-5", [output]))
    assert "no readable manifest" in with_details(generation).problem
    (tmp_path / "req-5.mp4.json").write_text("not json")
    records.details_cache.clear()
    assert "no readable manifest" in with_details(generation).problem


def test_the_poster_is_the_one_the_manifest_records_with_its_digest(tmp_path: Path) -> None:
    output = store_video(tmp_path, "req-6")
    (generation,) = generations_in(event(1, "req-6", [output]))
    # An image beside the video that no manifest records is no poster.
    (tmp_path / "req-6.jpg").write_bytes(b"\xff\xd8\xff poster")
    assert with_details(generation).poster is None
    manifest = json.loads((tmp_path / "req-6.mp4.json").read_text())
    for recorded, found in [
        (recorded_poster(tmp_path / "frame.png", b"\x89PNG\r\n\x1a\n")["poster"], "/frame.png"),
        # A poster outside the video's folder, or without a digest, never counts.
        ({"stored_uri": "file:///etc/hostname.jpg", "bytes": 3, "sha256": "0" * 64}, None),
        ({"file_name": "req-6.jpg", "stored_uri": (tmp_path / "req-6.jpg").as_uri()}, None),
    ]:
        manifest["poster"] = recorded
        (tmp_path / "req-6.mp4.json").write_text(json.dumps(manifest))
        records.details_cache.clear()
        poster = with_details(generation).poster
        assert (poster.uri[-len(found) :] if poster else None) == found
    assert poster is None


def test_a_storage_that_cannot_be_read_does_not_break_the_listing(tmp_path: Path) -> None:
    output = store_video(tmp_path, "req-7")
    (generation,) = generations_in(event(1, "req-7", [output]))

    def broken(uri: str, limit: int, conn_id: str | None) -> bytes | None:
        raise PermissionError("no")

    assert "could not be read" in with_details(generation, read=broken).problem
