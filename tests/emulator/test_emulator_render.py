"""The emulator's outputs are real videos: rendered from the input image, decodable frame by frame."""

from __future__ import annotations

import base64
import io
import sys
import threading
from typing import Any

import av
import httpx
import pytest
from PIL import Image

from airflow_provider_dreamina.emulator import MODEL_ID, EmulatorHandle
from airflow_provider_dreamina.emulator.__main__ import main
from airflow_provider_dreamina.emulator.jobs import Emulator
from airflow_provider_dreamina.emulator.render import (
    INSTALL_HINT,
    RendererUnavailable,
    RenderRequest,
    camera_move,
    require_renderer,
)
from airflow_provider_dreamina.emulator.server import EmulatorApp
from airflow_provider_dreamina.emulator.settings import DEFAULT_TOKEN, EmulatorConfig
from airflow_provider_dreamina.outputs.video import inspect_file
from tests.video_samples import top_level_boxes

SUBMIT_PATH = f"/v1/models/{MODEL_ID}"
PROMPT = "a lighthouse at dusk, waves rolling in"


def png_uri(width: int, height: int) -> str:
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def output(api: httpx.Client, emulator: EmulatorHandle, **fields: Any) -> bytes:
    """Submit a job that finishes at once and download its video."""
    emulator.script_jobs(queue_seconds=0, run_seconds=0)
    body = {"prompt": PROMPT, "image_urls": [emulator.sample_image_url], "seed": 7, **fields}
    submitted = api.post(SUBMIT_PATH, json=body)
    assert submitted.status_code == 200, submitted.text
    result = api.get(f"/v1/requests/{submitted.json()['request_id']}/result")
    response = api.get(result.json()["output"]["video"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    return response.content


@pytest.mark.parametrize(("frames", "seconds"), [(121, 5.04), (241, 10.04)])
def test_every_frame_of_an_output_decodes(
    api: httpx.Client, emulator: EmulatorHandle, frames: int, seconds: float
) -> None:
    data = output(api, emulator, frames=frames)

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        decoded = [frame for frame in container.decode(stream)]
        assert len(decoded) == frames
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == 24
        assert stream.duration is not None
        assert float(stream.duration * stream.time_base) == pytest.approx(seconds, abs=0.005)
        # The sample input is 640x480: the output keeps its shape.
        assert (decoded[0].width, decoded[0].height) == (640, 480)
        # The camera moves: the first and last frames are different pictures.
        assert decoded[0].to_image().tobytes() != decoded[-1].to_image().tobytes()
    facts = inspect_file(io.BytesIO(data))
    assert (facts.frames, facts.fps, facts.width, facts.height) == (frames, 24.0, 640, 480)
    assert facts.codec == "h264"


def test_the_index_comes_before_the_frames(api: httpx.Client, emulator: EmulatorHandle) -> None:
    kinds = [kind for kind, _, _ in top_level_boxes(output(api, emulator))]

    assert kinds.index("moov") < kinds.index("mdat")


def test_same_image_prompt_and_seed_give_the_same_video(api: httpx.Client, emulator: EmulatorHandle) -> None:
    first = output(api, emulator)

    assert output(api, emulator) == first
    assert output(api, emulator, seed=8) != first
    assert output(api, emulator, prompt="a different prompt") != first


def test_a_random_seed_gives_a_different_video_each_time(api: httpx.Client, emulator: EmulatorHandle) -> None:
    assert output(api, emulator, seed=-1) != output(api, emulator, seed=-1)


@pytest.mark.parametrize(
    ("image", "long_side", "expected"),
    [((400, 800), None, (320, 640)), ((900, 400), None, (640, 284)), ((900, 400), 320, (320, 142))],
)
def test_the_output_follows_the_image_shape_and_the_configured_long_side(
    api: httpx.Client,
    emulator: EmulatorHandle,
    image: tuple[int, int],
    long_side: int | None,
    expected: tuple[int, int],
) -> None:
    if long_side is not None:
        emulator.configure(output_long_side=long_side)

    facts = inspect_file(io.BytesIO(output(api, emulator, image_urls=[png_uri(*image)])))

    assert (facts.width, facts.height) == expected


def test_an_output_is_rendered_once_for_every_download(api: httpx.Client, emulator: EmulatorHandle) -> None:
    before = emulator.counters()["renders"]
    emulator.script_jobs(queue_seconds=0, run_seconds=0)
    submitted = api.post(SUBMIT_PATH, json={"prompt": "once", "image_urls": [emulator.sample_image_url]})
    url = api.get(f"/v1/requests/{submitted.json()['request_id']}/result").json()["output"]["video"]

    # Concurrent first downloads share one render; later ones (ranges included) reuse it.
    with httpx.Client(timeout=60, trust_env=False) as client:
        threads = [threading.Thread(target=client.get, args=(url,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        whole = client.get(url).content
        part = client.get(url, headers={"Range": "bytes=100-199"})

    assert part.status_code == 206
    assert part.content == whole[100:200]
    assert emulator.counters()["renders"] == before + 1


def test_the_server_keeps_answering_while_it_renders(api: httpx.Client, emulator: EmulatorHandle) -> None:
    # A 241-frame render takes a second or more; a health check takes milliseconds.
    downloaded: list[bytes] = []
    download = threading.Thread(
        target=lambda: downloaded.append(output(api, emulator, frames=241, prompt="slow render"))
    )
    download.start()
    try:
        while emulator.counters()["calls"]["download"] == 0:
            pass
        emulator.health()
        assert download.is_alive(), "the health check waited for the render"
    finally:
        download.join()
    assert inspect_file(io.BytesIO(downloaded[0])).frames == 241


def test_synthetic_outputs_have_the_configured_size_and_need_no_render(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    before = emulator.counters()["renders"]
    emulator.configure(output_bytes=3_000_000)

    data = output(api, emulator, frames=241, prompt="synthetic")

    assert len(data) == 3_000_000
    assert inspect_file(io.BytesIO(data)).frames == 241
    assert emulator.counters()["renders"] == before


def test_moves_differ_between_outputs_of_one_job() -> None:
    requests = [
        RenderRequest(image=b"image", prompt="p", seed=1, frames=121, long_side=640, variant=variant)
        for variant in range(20)
    ]

    assert len({camera_move(request) for request in requests}) == 20


def test_without_pyav_the_emulator_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "av", None)

    with pytest.raises(RendererUnavailable) as info:
        require_renderer()
    assert INSTALL_HINT in str(info.value)
    assert INSTALL_HINT == "pip install 'airflow-provider-dreamina[emulator]'"

    # At start-up, before it listens: `run_emulator` shows this in its error.
    with pytest.raises(SystemExit) as stopped:
        main(["--port", "0"])
    assert stopped.value.code == 1
    assert INSTALL_HINT in capsys.readouterr().err


async def test_without_pyav_a_download_answers_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    app = EmulatorApp(Emulator(EmulatorConfig(queue_seconds=0, run_seconds=0))).app
    monkeypatch.setitem(sys.modules, "av", None)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://emulator",
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
    ) as client:
        submitted = await client.post(SUBMIT_PATH, json={"prompt": PROMPT, "image_urls": [png_uri(640, 480)]})
        result = await client.get(f"/v1/requests/{submitted.json()['request_id']}/result")
        response = await client.get(result.json()["output"]["video"])

    assert response.status_code == 500
    assert INSTALL_HINT in response.json()["error_message"]
