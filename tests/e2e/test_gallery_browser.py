"""The gallery and the review, in a real Airflow and a real browser (headless Chromium).

One Airflow (scheduler, triggerer, dag processor, API server; simple auth manager with a real
login) serves the module. ``dreamina_image_to_video`` runs once against the emulator, whose
output is a real H.264 video served from a local host, so the player can decode and seek it. The
content pipeline then runs with ``review`` on, answered row by row. Screenshots go to
``test-artifacts/browser/`` (see ``browser.artifacts_dir``).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import pytest

from airflow_provider_dreamina.emulator import EmulatorHandle, run_emulator
from tests.e2e.browser import (
    CHROMIUM_FLAGS,
    artifacts_dir,
    chromium_path,
    make_video,
    missing_for_browser_tests,
    write_poster,
)
from tests.e2e.harness import Airflow, run_airflow
from tests.operators.download_server import Behaviour, OutputHost, output_host

_missing = missing_for_browser_tests()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(_missing is not None, reason=str(_missing)),
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = ROOT / "example_dags"
IMAGES = EXAMPLE_DAGS / "data"
USER, PASSWORD = "admin", f"pw-{secrets.token_hex(6)}"
PIPELINE = "dreamina_content_pipeline"
SINGLE = "dreamina_image_to_video"
WAITING_FOR_A_PERSON = {"awaiting_input", "deferred"}  # 3.3+ parks the task; 3.1/3.2 defer it


@dataclass
class Stack:
    airflow: Airflow
    emulator: EmulatorHandle
    outputs: OutputHost
    output_dir: Path
    video: bytes
    #: The generation of the single-video DAG: request id and stored path.
    request_id: str
    stored: Path


def local_path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def anonymous(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.airflow.api_url, timeout=30, trust_env=False)


def signed_in(stack: Stack) -> httpx.Client:
    client = anonymous(stack)
    client.headers["Authorization"] = stack.airflow._http.headers["Authorization"]
    return client


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("airflow")
    output_dir = home / "videos"
    video = make_video(home / "lighthouse.mp4", IMAGES / "lighthouse.png")
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    with output_host() as outputs, run_emulator(queue_seconds=0.5, run_seconds=1) as emulator:
        outputs.behaviour = Behaviour(body=video, content_type="video/mp4")
        env = {
            "AIRFLOW_CONN_DREAMINA_DEFAULT": emulator.connection_json(),
            "AIRFLOW_VAR_DREAMINA_OUTPUT_DIR": str(output_dir),
            # A real sign-in: not every request is an admin's.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        }
        with run_airflow([EXAMPLE_DAGS], env=env, home=home) as airflow:
            airflow.login(USER, PASSWORD)
            airflow.set_pool("dreamina", 4, include_deferred=True)
            airflow.wait_for_dags([SINGLE, PIPELINE], timeout=90)
            emulator.script_jobs(count=1, output_urls=[outputs.url("/out/lighthouse.mp4", "sig=abc")])
            run_id = airflow.trigger_dag(SINGLE, {"seed": 7})
            run = airflow.wait_for_run(SINGLE, run_id, timeout=180)
            assert run["state"] == "success", airflow.describe_run(SINGLE, run_id)
            (uri,) = xcom(airflow, SINGLE, run_id, "download")
            stored = local_path(uri)
            # As the download's poster option does: `<video name>.jpg` beside the video, recorded.
            write_poster(stored, IMAGES / "lighthouse.png")
            yield Stack(airflow, emulator, outputs, output_dir, video, stored.stem, stored)


def xcom(airflow: Airflow, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
    return airflow.api("GET", path, params={"map_index": map_index, "stringify": False}).json()["value"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    """A signed-in page, 1280 px wide, after logging in through Airflow's own login form."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    opened.goto(f"{stack.airflow.api_url}/")
    opened.locator("input[name=username]").fill(USER)
    opened.locator("input[name=password]").fill(PASSWORD)
    opened.get_by_role("button", name="Sign in").click()
    opened.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)
    yield opened
    context.close()


def screenshot(target: Any, name: str) -> Path:
    # Players and posters first (in the gallery's frame too): a screenshot of spinners says nothing.
    for frame in target.frames:
        with suppress(Exception):
            frame.wait_for_function(
                "Array.from(document.querySelectorAll('video'))"
                ".every(v => (v.readyState >= 1 && v.networkState !== 2) || v.error)",
                timeout=20_000,
            )
    target.wait_for_timeout(1_500)  # the players' loading spinners fade out
    path = artifacts_dir() / name
    target.screenshot(path=str(path))
    return path


def test_the_gallery_is_in_the_airflow_navigation_and_lists_the_video(stack: Stack, page: Any) -> None:
    page.get_by_role("link", name="Dreamina videos").first.click()
    page.wait_for_url("**/plugin/dreamina-videos", timeout=30_000)
    gallery = page.frame_locator("iframe")
    card = gallery.locator("article").filter(has_text=stack.request_id)
    card.wait_for(timeout=30_000)
    text = card.inner_text()
    assert "A lighthouse at dusk" in text
    assert "7" in text  # the seed
    assert "$0.50" in text  # the emulator's price
    assert card.locator("video").get_attribute("poster")
    page.wait_for_timeout(500)  # the poster image
    screenshot(page, "gallery-in-airflow.png")


def test_the_stored_video_plays_and_seeks(stack: Stack, page: Any) -> None:
    ranges: list[tuple[int, str | None]] = []
    page.on(
        "response",
        lambda response: (
            ranges.append((response.status, response.headers.get("content-range")))
            if "/dreamina/media/" in response.url and response.url.endswith("/video")
            else None
        ),
    )
    page.goto(f"{stack.airflow.api_url}/dreamina/?request_id={stack.request_id}")
    video = page.locator("article video").first
    video.focus()
    page.keyboard.press("Tab")  # the page is usable with the keyboard: focus moves on, visibly
    playing = video.evaluate(
        """async (video) => {
            video.muted = true;
            await video.play();
            const start = performance.now();
            while (video.currentTime < 0.5 && performance.now() - start < 20000) {
                await new Promise((resolve) => setTimeout(resolve, 100));
            }
            video.pause();
            return {readyState: video.readyState, currentTime: video.currentTime, duration: video.duration,
                    error: video.error && video.error.message};
        }"""
    )
    assert playing["error"] is None, playing
    assert playing["readyState"] >= 2, playing
    assert playing["currentTime"] >= 0.5, playing
    assert playing["duration"] == pytest.approx(4.0, abs=0.1)
    seeked = video.evaluate(
        """(video) => new Promise((resolve) => {
            video.addEventListener('seeked', () => resolve({currentTime: video.currentTime,
                                                           readyState: video.readyState}), {once: true});
            video.currentTime = 3.0;
        })"""
    )
    assert seeked["currentTime"] == pytest.approx(3.0, abs=0.05)
    assert seeked["readyState"] >= 2
    assert any(
        status == 206 and (content_range or "").startswith("bytes ") for status, content_range in ranges
    )
    screenshot(page, "gallery-player.png")


def test_the_gallery_works_with_the_keyboard(stack: Stack, page: Any) -> None:
    page.goto(f"{stack.airflow.api_url}/dreamina/")
    reached = []
    for _ in range(14):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate(
                """() => {
                    const element = document.activeElement;
                    const outline = getComputedStyle(element).outlineStyle;
                    const label = element.getAttribute('name') || element.textContent.trim().slice(0, 30);
                    return [element.tagName, label, outline !== 'none'];
                }"""
            )
        )
    tags = [tag for tag, _, _ in reached]
    # Skip link, the filters, then each card's player and links, in reading order.
    assert reached[0][:2] == ["A", "Skip to the videos"]
    order = [tag for index, tag in enumerate(tags) if index == 0 or tags[index - 1] != tag]  # the date's
    assert order[1:5] == ["SELECT", "INPUT", "BUTTON", "VIDEO"], reached  # fields are one INPUT each
    # Focus is visible on the page's own controls (the date's and the player's parts draw their own).
    assert all(visible for tag, _, visible in reached if tag in ("A", "SELECT", "BUTTON")), reached
    page.locator("article video").first.focus()  # reached by Tab above; now played from the keyboard
    page.keyboard.press("Space")  # the native controls play with the keyboard
    page.wait_for_function("() => document.querySelector('video').currentTime > 0.2", timeout=20_000)


def test_ranges_are_served_exactly(stack: Stack) -> None:
    with signed_in(stack) as client:
        (generation,) = client.get(
            "/dreamina/api/generations", params={"request_id": stack.request_id}
        ).json()["generations"]
        url = generation["video_url"]
        size = len(stack.video)
        middle = client.get(url, headers={"Range": "bytes=1000-1999"})
        assert middle.status_code == 206
        assert middle.headers["content-range"] == f"bytes 1000-1999/{size}"
        assert middle.content == stack.video[1000:2000]
        tail = client.get(url, headers={"Range": "bytes=-100"})
        assert (tail.status_code, tail.content) == (206, stack.video[-100:])
        assert client.get(url, headers={"Range": f"bytes={size}-"}).status_code == 416
        whole = client.get(url)
        assert (whole.status_code, whole.content) == (200, stack.video)
        assert whole.headers["accept-ranges"] == "bytes"
        poster = client.get(generation["poster_url"])
        assert poster.status_code == 200 and poster.content.startswith(b"\xff\xd8\xff")


def test_requests_without_a_signed_in_user_are_refused(stack: Stack, browser: Any) -> None:
    with signed_in(stack) as client:
        (generation,) = client.get(
            "/dreamina/api/generations", params={"request_id": stack.request_id}
        ).json()["generations"]
    paths = [
        "/dreamina/",
        "/dreamina/api/generations",
        generation["video_url"],
        generation["poster_url"],
        f"/dreamina/requests/{stack.request_id}/video",
    ]
    with anonymous(stack) as client:
        for path in paths:
            answer = client.get(path)
            assert answer.status_code == 401, (path, answer.status_code)
            assert stack.video[:4096] not in answer.content
        client.headers["Authorization"] = "Bearer not-a-token"
        assert all(client.get(path).status_code in (401, 403) for path in paths)
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    try:
        signed_out = context.new_page()
        answer = signed_out.goto(f"{stack.airflow.api_url}/dreamina/")
        assert answer is not None and answer.status == 401
        assert signed_out.get_by_role("link", name="Sign in").is_visible()
        screenshot(signed_out, "gallery-signed-out.png")
    finally:
        context.close()


def test_files_the_provider_did_not_record_are_refused(stack: Stack) -> None:
    airflow = stack.airflow
    (asset,) = [
        asset
        for asset in airflow.api("GET", "/assets").json()["assets"]
        if asset["name"] == "dreamina_videos"
    ]
    secret = stack.output_dir / "not-a-video.mp4"
    secret.write_bytes(b"private bytes " * 100)
    forged = {
        "request_id": "forged-request",
        "outputs": [{"uri": secret.as_uri(), "content_type": "video/mp4"}, {"uri": "file:///etc/passwd"}],
    }
    event = airflow.api(
        "POST", "/assets/events", json={"asset_id": asset["id"], "extra": forged}, expect=(200, 201)
    ).json()
    with signed_in(stack) as client:
        listed = client.get("/dreamina/api/generations").json()["generations"]
        assert "forged-request" not in {generation["request_id"] for generation in listed}
        for path in [
            f"/dreamina/media/{event['id']}/0/video",
            f"/dreamina/media/{event['id']}/1/video",
            "/dreamina/media/999999/0/video",
            "/dreamina/requests/forged-request/video",
            "/dreamina/media/1/0/..%2F..%2F..%2Fetc%2Fpasswd",
        ]:
            answer = client.get(path)
            assert answer.status_code == 404, (path, answer.status_code, answer.text)
            assert b"private bytes" not in answer.content and b"root:" not in answer.content
        # A recorded file whose bytes changed since is not served either.
        (generation,) = client.get(
            "/dreamina/api/generations", params={"request_id": stack.request_id}
        ).json()["generations"]
        original = stack.stored.read_bytes()
        try:
            stack.stored.write_bytes(original + b"appended")
            assert client.get(generation["video_url"]).status_code == 409
        finally:
            stack.stored.write_bytes(original)


def wait_for_a_person(
    airflow: Airflow, run_id: str, task_id: str, map_index: int, timeout: float = 180
) -> None:
    """Until the row's review waits for an answer (its mapped instance exists once the batch is read)."""
    deadline = time.monotonic() + timeout
    seen: list[str | None] = []
    while time.monotonic() < deadline:
        rows = {ti["map_index"]: ti["state"] for ti in airflow.task_instances(PIPELINE, run_id, task_id)}
        seen.append(rows.get(map_index))
        if rows.get(map_index) in WAITING_FOR_A_PERSON:
            return
        time.sleep(0.5)
    states = sorted(set(map(str, seen)))
    raise AssertionError(
        f"{task_id}[{map_index}] never waited for a person; states seen: {states}; "
        f"{airflow.describe_run(PIPELINE, run_id)}; runs: "
        f"{[(run['dag_run_id'], run['state']) for run in airflow.dag_runs(PIPELINE)]}"
    )


# A person takes seconds to answer. An answer within the second the task parked itself can reach the
# scheduler before the worker reports that try's end, and Airflow 3.3.2 then marks the resumed task
# failed ("finished with state success, but the task instance's state attribute is queued"): a
# scheduler race, not the provider's. The tests answer after a person's pause.
PERSON_PAUSE_SECONDS = 6.0


def respond(airflow: Airflow, run_id: str, task_id: str, map_index: int, option: str) -> None:
    wait_for_a_person(airflow, run_id, task_id, map_index)
    time.sleep(PERSON_PAUSE_SECONDS)
    path = f"/dags/{PIPELINE}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"
    airflow.api("PATCH", path, json={"chosen_options": [option], "params_input": {}})


def review_request(airflow: Airflow, run_id: str, task_id: str, map_index: int) -> dict[str, Any]:
    path = f"/dags/{PIPELINE}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"
    detail: dict[str, Any] = airflow.api("GET", path).json()
    return detail


def test_a_review_publishes_exactly_the_approved_videos(stack: Stack, page: Any) -> None:
    airflow, emulator = stack.airflow, stack.emulator
    # Unpausing the daily DAG also starts its latest scheduled run (review off); this manual run
    # asks for review, and everything below looks at this run only.
    # Real videos for every take (the scheduled run's too), so the gallery's screenshot plays them.
    emulator.script_jobs(count=10, output_urls=[stack.outputs.url("/out/take.mp4", "sig=abc")])
    run_id = airflow.trigger_dag(PIPELINE, {"review": True})
    for index in range(3):
        # The daily run the unpausing started goes first (max_active_runs=1): a long first wait.
        wait_for_a_person(airflow, run_id, "video.review", index, timeout=420)
    rows = {ti["map_index"]: ti for ti in airflow.task_instances(PIPELINE, run_id, "video.review")}
    labels = {index: ti["rendered_map_index"] for index, ti in rows.items()}
    assert all(label and not label.isdigit() for label in labels.values()), labels  # rows read as prompts

    request = review_request(airflow, run_id, "video.review", 0)
    assert request["options"] == ["Approve", "Regenerate", "Reject"]
    request_id = xcom(airflow, PIPELINE, run_id, "video.generate", 0)["request_id"]
    assert f"/dreamina/requests/{request_id}/video" in request["body"]
    assert f"/dreamina/requests/{request_id}/poster" in request["body"]
    assert "seed" in request["body"] and "$0.50" in request["body"]
    page.goto(f"{airflow.api_url}/dags/{PIPELINE}/runs/{run_id}/required_actions")
    page.wait_for_timeout(2500)
    screenshot(page, "review-required-actions.png")

    respond(airflow, run_id, "video.review", 0, "Approve")
    respond(airflow, run_id, "video.review", 1, "Reject")
    respond(airflow, run_id, "video.review", 2, "Regenerate")
    respond(airflow, run_id, "video.review_again", 2, "Approve")
    run = airflow.wait_for_run(PIPELINE, run_id, timeout=240)
    assert run["state"] == "success", airflow.describe_run(PIPELINE, run_id)

    regenerations = airflow.task_instances(PIPELINE, run_id, "video.regenerate")
    assert {ti["map_index"]: ti["state"] for ti in regenerations} == {
        0: "skipped",
        1: "skipped",
        2: "success",
    }
    regenerated_id = xcom(airflow, PIPELINE, run_id, "video.regenerate", 2)["request_id"]
    (regenerated,) = [job for job in emulator.requests() if job["request_id"] == regenerated_id]
    assert regenerated["input"]["seed"] != -1  # a new, explicit seed
    approved = [
        xcom(airflow, PIPELINE, run_id, "video.download", 0)[0],
        xcom(airflow, PIPELINE, run_id, "video.download_again", 2)[0],
    ]
    (published,) = [
        event
        for event in airflow.asset_events(source_dag_id=PIPELINE)
        if "files" in event["extra"] and event["source_run_id"] == run_id
    ]
    assert published["extra"]["files"] == approved
    assert xcom(airflow, PIPELINE, run_id, "publish") == approved
    rejected = xcom(airflow, PIPELINE, run_id, "video.download", 1)[0]
    assert rejected not in published["extra"]["files"]

    # The gallery shows every stored video, the rejected and the first take of row 2 included.
    stored = [
        output["uri"]
        for event in airflow.asset_events(source_dag_id=PIPELINE)
        for output in event["extra"].get("outputs", [])
    ]
    assert {*approved, rejected} <= set(stored)
    for uri in stored:  # posters of each row's own image, recorded as the poster option records them
        manifest = json.loads(local_path(uri + ".json").read_text())
        write_poster(local_path(uri), Path(manifest["image_url"]))
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{airflow.api_url}/dreamina/?dag_id={PIPELINE}")
    assert page.locator("article").count() == len(stored)
    screenshot(page, "gallery-after-review.png")
