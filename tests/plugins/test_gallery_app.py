"""The gallery's endpoints, in-process: who may call them, what the page shows, how files are served.

The metadata database is replaced by events built here; everything else (manifests, files, Range
answers, the page) is the real code. The same endpoints run in a real Airflow in
``tests/e2e/test_gallery_browser.py``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from airflow_provider_dreamina.plugins.plugin import DreaminaGalleryPlugin
from tests.plugins.conftest import FakeCatalog
from tests.plugins.gallery_records import VIDEO, event, store_video


def test_every_endpoint_refuses_a_request_without_a_signed_in_user(
    anonymous: TestClient, fake: FakeCatalog, tmp_path: Path
) -> None:
    fake.events.append(event(1, "req-1", [store_video(tmp_path, "req-1")]))
    for path in ["/", "/api/generations", "/media/1/0/video", "/media/1/0/poster", "/requests/req-1/video"]:
        answer = anonymous.get(path)
        assert answer.status_code == 401, path
        assert VIDEO[:64] not in answer.content
    page = anonymous.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 401
    assert "Sign in" in page.text and "/auth/login" in page.text


def test_the_page_shows_readable_generations_only(
    client: TestClient, fake: FakeCatalog, tmp_path: Path
) -> None:
    fake.events.append(
        event(1, "mine", [store_video(tmp_path, "mine", manifest={"prompt": "A <b>bold</b> sea"})])
    )
    fake.events.append(event(2, "theirs", [store_video(tmp_path, "theirs")], dag_id="dag_b"))
    page = client.get("/")
    assert page.status_code == 200
    assert "A &lt;b&gt;bold&lt;/b&gt; sea" in page.text  # escaped, never markup
    assert "mine" in page.text and "theirs" not in page.text
    assert 'src="/dreamina/media/1/0/video"' in page.text
    assert 'href="/dags/dag_a/runs/manual__1/tasks/download"' in page.text
    assert fake.readable_seen == [{"dag_a"}]
    listed = client.get("/api/generations").json()["generations"]
    assert [(g["request_id"], g["seed"], g["cost_usd"], g["playable"]) for g in listed] == [
        ("mine", 42, 0.5, True)
    ]


def test_an_empty_gallery_says_how_videos_get_there(client: TestClient) -> None:
    page = client.get("/")
    assert "No videos yet" in page.text
    assert "outlets" in page.text and "DreaminaDownloadOperator" in page.text
    filtered = client.get("/", params={"request_id": "abc-123"})
    assert "No videos match these filters" in filtered.text
    assert client.get("/", params={"day": "yesterday"}).status_code == 400
    assert client.get("/", params={"request_id": "../../etc"}).status_code == 400


def test_the_stored_video_is_served_whole_or_by_range(
    client: TestClient, fake: FakeCatalog, tmp_path: Path
) -> None:
    fake.events.append(event(1, "req-1", [store_video(tmp_path, "req-1")]))
    whole = client.get("/media/1/0/video")
    assert (whole.status_code, whole.content) == (200, VIDEO)
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["x-content-type-options"] == "nosniff"
    part = client.get("/media/1/0/video", headers={"Range": "bytes=100-199"})
    assert (part.status_code, part.content) == (206, VIDEO[100:200])
    assert part.headers["content-range"] == f"bytes 100-199/{len(VIDEO)}"
    assert client.get("/media/1/0/video", headers={"Range": f"bytes={len(VIDEO)}-"}).status_code == 416
    head = client.head("/media/1/0/video")
    assert (head.status_code, head.headers["content-length"], head.content) == (200, str(len(VIDEO)), b"")
    redirect = client.get("/requests/req-1/video", follow_redirects=False)
    assert (redirect.status_code, redirect.headers["location"]) == (307, "/dreamina/media/1/0/video")


def test_only_what_the_provider_recorded_is_served(
    client: TestClient, fake: FakeCatalog, tmp_path: Path
) -> None:
    recorded = store_video(tmp_path, "req-1")
    unrecorded = {"uri": (tmp_path / "other.mp4").as_uri(), "content_type": "video/mp4"}
    (tmp_path / "other.mp4").write_bytes(b"not recorded")
    fake.events.append(event(1, "req-1", [recorded, unrecorded]))
    fake.events.append(event(2, "req-2", [store_video(tmp_path, "req-2")], dag_id="dag_b"))
    assert client.get("/media/1/1/video").status_code == 404  # no manifest vouches for it
    assert client.get("/media/1/5/video").status_code == 404
    assert client.get("/media/2/0/video").status_code == 404  # a DAG this user may not read
    assert client.get("/media/99/0/video").status_code == 404
    assert client.get("/requests/req-2/video").status_code == 404
    (tmp_path / "req-1.mp4").write_bytes(VIDEO + b"changed")
    assert client.get("/media/1/0/video").status_code == 409
    (tmp_path / "req-1.mp4").unlink()
    assert client.get("/media/1/0/video").status_code == 410


def test_a_poster_must_be_an_image(client: TestClient, fake: FakeCatalog, tmp_path: Path) -> None:
    fake.events.append(event(1, "req-1", [store_video(tmp_path / "a", "req-1")]))
    assert client.get("/media/1/0/poster").status_code == 404
    fake.events.append(
        event(2, "req-2", [store_video(tmp_path / "b", "req-2", poster=b"<html>not a jpeg</html>")])
    )
    assert client.get("/media/2/0/poster").status_code == 404  # recorded, but not an image
    fake.events.append(
        event(3, "req-3", [store_video(tmp_path / "c", "req-3", poster=b"\xff\xd8\xff\xe0 a jpeg")])
    )
    poster = client.get("/media/3/0/poster")
    assert (poster.status_code, poster.headers["content-type"]) == (200, "image/jpeg")


def test_the_plugin_puts_the_gallery_in_the_navigation() -> None:
    (view,) = DreaminaGalleryPlugin.external_views
    assert (view["name"], view["destination"], view["href"]) == ("Dreamina videos", "nav", "/dreamina/")
    (app,) = DreaminaGalleryPlugin.fastapi_apps
    assert app["url_prefix"] == "/dreamina"
    # The app is built on its first request, so importing the plugin stays cheap.
    with TestClient(app["app"]) as lazy:
        refused = lazy.get("/")
        assert refused.status_code == 401
        assert "frame-ancestors 'self'" in refused.headers["content-security-policy"]  # as Airflow mounts it
