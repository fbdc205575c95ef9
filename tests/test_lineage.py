"""OpenLineage: the datasets and facets the operators report, and operators that work without it."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.models import DEFAULT_MODEL_ID, ImageToVideoInput
from airflow_provider_dreamina.operators.dreamina import (
    DreaminaDownloadOperator,
    DreaminaImageToVideoOperator,
)
from tests.helpers import FakeTI, data_uri, make_context

pytest.importorskip("airflow.providers.openlineage", reason="the openlineage extra is not installed")

from airflow.providers.common.compat.openlineage.facet import (
    InputDataset,
    OutputDataset,
)

from airflow_provider_dreamina import lineage


@pytest.mark.parametrize(
    ("location", "dataset"),
    [
        ("/data/frames/fox.png", ("file", "/data/frames/fox.png")),
        ("file:///data/frames/fox.png", ("file", "/data/frames/fox.png")),
        ("file://localhost/data/a%20b.png", ("file", "/data/a b.png")),
        ("s3://bucket/inputs/fox.png", ("s3://bucket", "inputs/fox.png")),
        ("s3://bucket", ("s3://bucket", "/")),
        ("gs://bucket/videos/2026/r.mp4", ("gs://bucket", "videos/2026/r.mp4")),
        (
            "abfss://media@account.dfs.core.windows.net/videos/r.mp4",
            ("abfss://media@account.dfs.core.windows.net", "videos/r.mp4"),
        ),
        (
            "https://user:secret@Images.Example.com:8443/in/fox.png?X-Amz-Signature=abc#frag",
            ("https://images.example.com:8443", "/in/fox.png"),
        ),
        ("https://images.example.com", ("https://images.example.com", "/")),
        ("s3://key:secret@bucket/in.png", ("s3://bucket", "in.png")),
    ],
)
def test_datasets_are_named_by_openlineage_rules(location: str, dataset: tuple[str, str]) -> None:
    assert lineage.dataset_name(location) == dataset


@pytest.mark.parametrize("location", [data_uri(400, 400), "", "file://elsewhere/data/fox.png", "s3://"])
def test_inline_data_and_other_machines_are_no_dataset(location: str) -> None:
    assert lineage.dataset_name(location) is None


def test_a_relative_path_is_named_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert lineage.dataset_name("frames/fox.png") == ("file", str(tmp_path / "frames" / "fox.png"))


def test_submit_reports_the_image_and_the_generation(emulator: EmulatorHandle) -> None:
    operator = DreaminaImageToVideoOperator(
        task_id="generate",
        prompt="a paper boat on a rainy street",
        image_url=emulator.sample_image_url + "?token=secret",
        seed=5,
        frames=241,
        wait_for_completion=True,
        deferrable=False,
        poll_interval=0.1,
    )
    record = operator.execute(make_context())

    reported = operator.get_openlineage_facets_on_complete(FakeTI())

    (image,) = reported.inputs
    assert isinstance(image, InputDataset)
    host = emulator.sample_image_url.split("/")[2]
    assert (image.namespace, image.name) == (f"http://{host}", emulator.sample_image_url.split(host)[1])
    assert "secret" not in repr(reported)
    facet = reported.run_facets[lineage.RUN_FACET]
    assert (facet.request_id, facet.model_id, facet.seed, facet.frames) == (
        record["request_id"],
        DEFAULT_MODEL_ID,
        5,
        241,
    )
    assert facet.cost_usd == record["cost_usd"] is not None
    assert reported.outputs == []


def test_submit_without_waiting_reports_the_request_without_a_cost(emulator: EmulatorHandle) -> None:
    operator = DreaminaImageToVideoOperator(
        task_id="generate", prompt="a lighthouse", image_url=emulator.sample_image_url
    )
    request_id = operator.execute(make_context())

    facet = operator.get_openlineage_facets_on_complete(FakeTI()).run_facets[lineage.RUN_FACET]

    assert (facet.request_id, facet.cost_usd) == (request_id, None)


def test_an_inline_image_is_no_input_dataset() -> None:
    operator = DreaminaImageToVideoOperator(task_id="generate", prompt="a fox", image_url=data_uri(400, 400))

    reported = operator.get_openlineage_facets_on_complete(FakeTI())

    assert reported.inputs == []
    assert reported.run_facets[lineage.RUN_FACET].request_id is None


def test_an_input_that_failed_its_checks_still_names_its_image() -> None:
    operator = DreaminaImageToVideoOperator(
        task_id="generate", prompt="", image_url="s3://bucket/in/fox.png", frames=7
    )

    reported = operator.get_openlineage_facets_on_complete(FakeTI())

    assert [(dataset.namespace, dataset.name) for dataset in reported.inputs] == [
        ("s3://bucket", "in/fox.png")
    ]


def test_download_reports_each_stored_file_with_size_and_sha256(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    emulator.script_jobs(queue_seconds=0, run_seconds=0)
    with DreaminaHook() as hook:
        request_id = hook.submit(
            ImageToVideoInput(prompt="a fox", image_urls=[emulator.sample_image_url])
        ).request_id
    operator = DreaminaDownloadOperator(task_id="download", request_id=request_id, destination=str(tmp_path))
    assert operator.get_openlineage_facets_on_complete(FakeTI()) is None  # nothing stored yet
    (uri,) = operator.execute(cast(Any, {"outlet_events": OutletEventAccessors(), "ti": FakeTI()}))

    reported = operator.get_openlineage_facets_on_complete(FakeTI())

    (video,) = reported.outputs
    stored = tmp_path / f"{request_id}.mp4"
    assert uri == stored.as_uri()
    assert isinstance(video, OutputDataset)
    assert (video.namespace, video.name) == ("file", str(stored))
    body = stored.read_bytes()
    file_facet = video.facets[lineage.FILE_FACET]
    assert file_facet.sha256 == hashlib.sha256(body).hexdigest()
    assert file_facet.size_bytes == len(body)
    assert (file_facet.content_type, file_facet.request_id) == ("video/mp4", request_id)
    statistics = video.outputFacets["outputStatistics"]
    assert (statistics.size, statistics.fileCount) == (len(body), 1)
    assert reported.run_facets[lineage.RUN_FACET].request_id == request_id
    assert reported.inputs == []


def test_facets_serialize_as_openlineage_events_do() -> None:
    from openlineage.client.serde import Serde

    facet = lineage._GenerationRunFacet(request_id="r", model_id="m", seed=1, frames=121, cost_usd=0.3)

    serialized = Serde.to_dict(facet)

    assert serialized["request_id"] == "r" and serialized["cost_usd"] == 0.3
    assert serialized["_producer"] and serialized["_schemaURL"]


def test_operators_work_without_the_openlineage_provider(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the extra were not installed: importing OpenLineage (or this provider's use of it) fails.
    for name in list(sys.modules):
        if name == "airflow_provider_dreamina.lineage" or name.startswith("airflow.providers.openlineage"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage", None)
    emulator.script_jobs(queue_seconds=0, run_seconds=0)
    submit = DreaminaImageToVideoOperator(
        task_id="generate",
        prompt="a fox",
        image_url=emulator.sample_image_url,
        wait_for_completion=True,
        deferrable=False,
        poll_interval=0.1,
    )
    record = submit.execute(make_context())
    download = DreaminaDownloadOperator(
        task_id="download", request_id=record["request_id"], destination=str(tmp_path)
    )
    uris = download.execute(cast(Any, {"outlet_events": OutletEventAccessors(), "ti": FakeTI()}))

    assert uris and Path(tmp_path / f"{record['request_id']}.mp4").exists()
    assert submit.get_openlineage_facets_on_complete(FakeTI()) is None
    assert download.get_openlineage_facets_on_complete(FakeTI()) is None
