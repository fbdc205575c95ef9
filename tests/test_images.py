"""Image rules and the preflight: every rule refused before anything is paid for."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import (
    DreaminaInvalidInputError,
)
from airflow_provider_dreamina.hooks.dreamina import (
    DreaminaHook,
)
from tests.helpers import (
    Api,
    CountingTransport,
    data_uri,
    fast_hook,
    image_bytes,
    sample_input,
)


@pytest.mark.parametrize(
    ("size", "rule"),
    [
        ((300, 300), "shortest side must be more than 320"),
        ((320, 600), "shortest side must be more than 320"),
        ((4097, 2000), "maximum resolution is 4096x4096"),
        ((1000, 330), "within 3:1"),
    ],
)
@pytest.mark.parametrize("form", ["data", "file", "url"])
def test_preflight_refuses_each_rule_before_paying(
    emulator: EmulatorHandle, api: Api, tmp_path: Any, size: tuple[int, int], rule: str, form: str
) -> None:
    if form == "data":
        source = data_uri(*size)
    elif form == "file":
        source = str(tmp_path / "input.png")
        (tmp_path / "input.png").write_bytes(image_bytes(*size))
    else:
        source = emulator.image_url(*size)
    with pytest.raises(DreaminaInvalidInputError, match=rule) as caught:
        api(fast_hook(), "submit", sample_input(emulator, image_urls=[source]), image_roots=[str(tmp_path)])
    assert caught.value.field == "image_urls"
    assert f"{size[0]}x{size[1]}" in str(caught.value)
    assert emulator.counters()["calls"]["submit"] == 0


def test_preflight_accepts_the_edges(emulator: EmulatorHandle, api: Api, tmp_path: Any) -> None:
    for name, size in {"a.png": (321, 900), "b.jpg": (4096, 1400)}.items():
        path = tmp_path / name
        path.write_bytes(image_bytes(*size, fmt="JPEG" if name.endswith("jpg") else "PNG"))
        api(
            fast_hook(), "submit", sample_input(emulator, image_urls=[str(path)]), image_roots=[str(tmp_path)]
        )
    assert emulator.counters()["submissions"] == 2


def test_local_file_is_sent_inline_as_a_data_uri(emulator: EmulatorHandle, api: Api, tmp_path: Any) -> None:
    path = tmp_path / "photo.jpeg"
    path.write_bytes(image_bytes(800, 600, fmt="JPEG"))
    api(
        fast_hook(),
        "submit",
        sample_input(emulator, image_urls=[f"file://{path}"]),
        image_roots=str(tmp_path),
    )
    assert emulator.counters()["submissions"] == 1


@pytest.mark.usefixtures("memory_storage")
def test_object_storage_image_is_read_and_inlined(emulator: EmulatorHandle, api: Api) -> None:
    from airflow.sdk import ObjectStoragePath

    target = ObjectStoragePath("memory://bucket/inputs/frame.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as handle:
        handle.write(image_bytes(640, 480))
    api(
        fast_hook(),
        "submit",
        sample_input(emulator, image_urls=["memory://bucket/inputs/frame.png"]),
        image_roots=["memory://bucket/inputs/"],
    )
    assert emulator.counters()["submissions"] == 1


def test_gif_is_refused_by_content_not_by_name(emulator: EmulatorHandle, tmp_path: Any) -> None:
    disguised = tmp_path / "really-a-gif.png"
    disguised.write_bytes(image_bytes(640, 480, fmt="GIF"))
    with pytest.raises(DreaminaInvalidInputError, match="GIF"):
        fast_hook().submit(sample_input(emulator, image_urls=[str(disguised)]), image_roots=[str(tmp_path)])


def test_oversized_file_is_refused_with_its_size(emulator: EmulatorHandle, tmp_path: Any) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(image_bytes(640, 480) + b"\0" * 5_100_000)
    with pytest.raises(DreaminaInvalidInputError, match=r"image is 5\.1 MB; the limit is 4\.7 MB"):
        fast_hook().submit(sample_input(emulator, image_urls=[str(big)]), image_roots=[str(tmp_path)])


def test_missing_file_under_a_root_names_the_path(emulator: EmulatorHandle, tmp_path: Any) -> None:
    missing = str(tmp_path / "nope.png")
    with pytest.raises(DreaminaInvalidInputError, match=r"nope\.png\) does not exist"):
        fast_hook().submit(sample_input(emulator, image_urls=[missing]), image_roots=[str(tmp_path)])


def test_oversized_remote_image_reads_at_most_the_cap(emulator: EmulatorHandle) -> None:
    transport = CountingTransport()
    url = emulator.image_url(640, 480, pad_bytes=8_000_000, chunked=True)
    with pytest.raises(DreaminaInvalidInputError, match=r"limit is 4\.7 MB"):
        DreaminaHook(transport=transport).prepare_image(url)
    # The probe stops one chunk past the cap; httpx reads in chunks of at most 64 KiB.
    assert transport.bytes_read[0] <= 4_700_000 + 1 + 65_536


def test_remote_image_with_content_length_reads_only_its_header(emulator: EmulatorHandle) -> None:
    transport = CountingTransport()
    url = emulator.image_url(1200, 900, pad_bytes=3_000_000)
    assert DreaminaHook(transport=transport).prepare_image(url) == url
    assert transport.bytes_read[0] < 1_000_000


def test_preflight_can_be_switched_off(emulator: EmulatorHandle) -> None:
    small = data_uri(300, 300)
    hook = fast_hook()
    assert hook.prepare_image(small, validate=False) == small


def test_bad_data_uri_is_refused(emulator: EmulatorHandle) -> None:
    with pytest.raises(DreaminaInvalidInputError, match="base64"):
        fast_hook().prepare_image("data:image/png;base64,@@@not-base64@@@")
    with pytest.raises(DreaminaInvalidInputError, match="data: URI"):
        fast_hook().prepare_image("data:text/plain,hello")
