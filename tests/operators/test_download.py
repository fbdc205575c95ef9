"""DreaminaDownloadOperator and DreaminaHook.download_output against the emulator, over real HTTP.

Destinations: a local path, a file:// URI, fsspec's memory:// store and, when moto, s3fs and the
Amazon provider are installed, s3:// on a moto server started here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from airflow.exceptions import AirflowFailException
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_dreamina import links
from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import DreaminaDownloadError
from airflow_provider_dreamina.hooks.dreamina import DOWNLOAD_CHUNK_SIZE, DownloadedOutput, DreaminaHook
from airflow_provider_dreamina.models import DEFAULT_MODEL_ID, ImageToVideoInput
from airflow_provider_dreamina.operators.dreamina import DreaminaDownloadOperator
from tests.helpers import FakeTI, mp4_body, wait_until
from tests.operators.download_server import OutputHost, output_host

PROMPT = "a red fox running through fresh snow"
SEED = 7


# -- helpers --------------------------------------------------------------------------------------


def submit_finished(emulator: EmulatorHandle, **script: Any) -> str:
    """Submit a request that finishes at once (or as scripted) and return its id."""
    emulator.script_jobs(**{"queue_seconds": 0, "run_seconds": 0, **script})
    request = ImageToVideoInput(prompt=PROMPT, image_urls=[emulator.sample_image_url], seed=SEED)
    with DreaminaHook() as hook:
        return hook.submit(request).request_id


def output_bytes(request_id: str, index: int = 0) -> bytes:
    """What the emulator serves for an output, fetched independently of the code under test."""
    with DreaminaHook() as hook:
        url = hook.get_result(request_id).output_urls[index]
    return httpx.get(url, trust_env=False).content


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def downloads(emulator: EmulatorHandle) -> int:
    return int(emulator.counters()["calls"]["download"])


def make_operator(**kwargs: Any) -> DreaminaDownloadOperator:
    operator = DreaminaDownloadOperator(task_id="download", **kwargs)
    # Retries back off for milliseconds, not seconds: the tests exercise them, not wait for them.
    operator.hook.retry_backoff = 0.01
    return operator


def run(operator: DreaminaDownloadOperator, events: OutletEventAccessors | None = None) -> list[str]:
    context = {"outlet_events": events if events is not None else OutletEventAccessors(), "ti": FakeTI()}
    return operator.execute(cast(Any, context))


def failure(operator: DreaminaDownloadOperator) -> BaseException:
    """The exception the task fails with; a permanent download problem fails without retries."""
    with pytest.raises((AirflowFailException, DreaminaDownloadError)) as info:
        run(operator)
    return info.value


def download_error(operator: DreaminaDownloadOperator) -> DreaminaDownloadError:
    error = failure(operator)
    cause = error.__cause__ if isinstance(error, AirflowFailException) else error
    assert isinstance(cause, DreaminaDownloadError), error
    assert str(cause) in str(error)
    return cause


def names(directory: Path) -> list[str]:
    """Every entry, hidden ones (temporary files) included."""
    return sorted(os.listdir(directory)) if directory.exists() else []


class BytesSink:
    """An OutputSink in memory that remembers how it was written to."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.writes: list[int] = []
        self.restarts = 0

    def write(self, chunk: bytes) -> None:
        self.data += chunk
        self.writes.append(len(chunk))

    def restart(self) -> None:
        self.data.clear()
        self.restarts += 1


class HashingSink:
    """Keeps nothing but a hash, so the test measures the download's own memory."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)

    def restart(self) -> None:
        self.digest = hashlib.sha256()


@pytest.fixture
def fast_retries(emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two retries per download, so a transfer that keeps failing gives up quickly."""
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(max_retries=2))


@pytest.fixture
def host(emulator: EmulatorHandle) -> Iterator[OutputHost]:
    with output_host() as running:
        yield running


@pytest.fixture
def memory_root() -> Iterator[str]:
    from airflow.sdk.io import attach
    from fsspec.implementations.memory import MemoryFileSystem

    attach("memory", fs=MemoryFileSystem())
    root = f"memory://dreamina-tests/{uuid.uuid4().hex}"
    yield root
    # MemoryFileSystem keeps one store per process: leave nothing for the next test.
    fs, path = MemoryFileSystem(), root.removeprefix("memory:/")
    if fs.exists(path):
        fs.rm(path, recursive=True)


def memory_names(root: str) -> list[str]:
    from fsspec.implementations.memory import MemoryFileSystem

    fs = MemoryFileSystem()
    path = root.removeprefix("memory:/")
    return sorted(name.rsplit("/", 1)[-1] for name in fs.ls(path, detail=False)) if fs.exists(path) else []


# -- local destinations ---------------------------------------------------------------------------


def test_saves_one_output_to_a_local_directory_it_creates(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator)
    destination = tmp_path / "videos" / "2024-06-01"

    uris = run(make_operator(request_id=request_id, destination=str(destination)))

    video = destination / f"{request_id}.mp4"
    assert uris == [video.as_uri()]
    assert names(destination) == [f"{request_id}.mp4", f"{request_id}.mp4.json"]
    assert video.read_bytes() == output_bytes(request_id)
    assert video.read_bytes()[4:8] == b"ftyp"


def test_file_uri_destination(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator)

    uris = run(make_operator(request_id=request_id, destination=(tmp_path / "out").as_uri() + "/"))

    assert uris == [(tmp_path / "out" / f"{request_id}.mp4").as_uri()]
    assert (tmp_path / "out" / f"{request_id}.mp4").read_bytes() == output_bytes(request_id)


def test_several_outputs_are_numbered(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator, outputs=3, output_key="videos")

    uris = run(make_operator(request_id=request_id, destination=str(tmp_path)))

    expected = [tmp_path / f"{request_id}-{index}.mp4" for index in (1, 2, 3)]
    assert uris == [path.as_uri() for path in expected]
    contents = [path.read_bytes() for path in expected]
    assert contents == [output_bytes(request_id, index) for index in range(3)]
    assert len({sha256(content) for content in contents}) == 3
    assert len(names(tmp_path)) == 6


def test_filename_template(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator, outputs=2, output_key="videos")

    uris = run(
        make_operator(request_id=request_id, destination=str(tmp_path), filename="clip_{index}_{name}{ext}")
    )

    assert [uri.rsplit("/", 1)[-1] for uri in uris] == ["clip_1_output-1.mp4", "clip_2_output-2.mp4"]


def test_suffix_comes_from_the_content_type_when_the_url_has_none(
    emulator: EmulatorHandle, host: OutputHost, tmp_path: Path
) -> None:
    host.behaviour.body = b"\x1aE\xdf\xa3" + bytes(5000)
    host.behaviour.content_type = "video/webm"
    request_id = submit_finished(emulator, output_urls=[host.url("/outputs/blob")])

    uris = run(make_operator(request_id=request_id, destination=str(tmp_path)))

    assert uris == [(tmp_path / f"{request_id}.webm").as_uri()]
    assert names(tmp_path) == [f"{request_id}.webm", f"{request_id}.webm.json"]


# -- object stores --------------------------------------------------------------------------------


def test_memory_store_with_several_outputs(emulator: EmulatorHandle, memory_root: str) -> None:
    from airflow.sdk import ObjectStoragePath

    request_id = submit_finished(emulator, outputs=2, output_key="videos")

    uris = run(make_operator(request_id=request_id, destination=f"{memory_root}/videos/"))

    assert uris == [f"{memory_root}/videos/{request_id}-{index}.mp4" for index in (1, 2)]
    for index, uri in enumerate(uris):
        assert ObjectStoragePath(uri).read_bytes() == output_bytes(request_id, index)
        manifest = json.loads(ObjectStoragePath(uri + ".json").read_text())
        assert manifest["stored_uri"] == uri
    assert memory_names(f"{memory_root}/videos") == sorted(
        [f"{request_id}-1.mp4", f"{request_id}-1.mp4.json", f"{request_id}-2.mp4", f"{request_id}-2.mp4.json"]
    )


def test_memory_store_failed_transfer_leaves_no_object(
    emulator: EmulatorHandle, memory_root: str, fast_retries: None
) -> None:
    request_id = submit_finished(emulator)
    emulator.inject_fault("download", "truncate", rate=1.0)

    error = download_error(make_operator(request_id=request_id, destination=f"{memory_root}/videos"))

    assert "after 3 attempts" in str(error)
    assert memory_names(f"{memory_root}/videos") == []


def test_unregistered_store_scheme_is_a_clear_error(emulator: EmulatorHandle) -> None:
    request_id = submit_finished(emulator)

    error = download_error(make_operator(request_id=request_id, destination="nosuchfs://bucket/videos"))

    assert "nosuchfs://bucket/videos" in str(error)
    assert downloads(emulator) == 0


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    pytest.importorskip("s3fs", reason="s3 tests need s3fs (pip install s3fs)")
    pytest.importorskip(
        "airflow.providers.amazon.aws.fs.s3", reason="s3 tests need apache-airflow-providers-amazon"
    )
    moto_server = pytest.importorskip("moto.server", reason="s3 tests need moto[server]")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket="videos")
    yield endpoint
    server.stop()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An aws connection 'moto_s3' to the moto server; returns a boto3 client to inspect the bucket."""
    import boto3

    monkeypatch.setenv(
        "AIRFLOW_CONN_MOTO_S3",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": s3_server, "region_name": "us-east-1"},
            }
        ),
    )
    return boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def s3_keys(client: Any, prefix: str) -> list[str]:
    answer = client.list_objects_v2(Bucket="videos", Prefix=prefix)
    return sorted(item["Key"] for item in answer.get("Contents", []))


def test_s3_destination_on_moto(emulator: EmulatorHandle, s3: Any) -> None:
    request_id = submit_finished(emulator, outputs=2, output_key="videos")
    prefix = f"runs/{uuid.uuid4().hex}/"

    uris = run(
        make_operator(
            request_id=request_id, destination=f"s3://videos/{prefix}", destination_conn_id="moto_s3"
        )
    )

    assert uris == [f"s3://videos/{prefix}{request_id}-{index}.mp4" for index in (1, 2)]
    assert s3_keys(s3, prefix) == sorted(
        f"{prefix}{request_id}-{index}.mp4{suffix}" for index in (1, 2) for suffix in ("", ".json")
    )
    for index in (1, 2):
        stored = s3.get_object(Bucket="videos", Key=f"{prefix}{request_id}-{index}.mp4")["Body"].read()
        assert stored == output_bytes(request_id, index - 1)
        manifest = json.loads(
            s3.get_object(Bucket="videos", Key=f"{prefix}{request_id}-{index}.mp4.json")["Body"].read()
        )
        assert manifest["sha256"] == sha256(stored)


def test_s3_failed_transfer_leaves_no_object(emulator: EmulatorHandle, s3: Any, fast_retries: None) -> None:
    request_id = submit_finished(emulator)
    prefix = f"runs/{uuid.uuid4().hex}/"
    emulator.inject_fault("download", "500", rate=1.0)

    download_error(
        make_operator(
            request_id=request_id, destination=f"s3://videos/{prefix}", destination_conn_id="moto_s3"
        )
    )

    assert s3_keys(s3, prefix) == []


# -- if_exists ------------------------------------------------------------------------------------


def test_if_exists_fail_keeps_the_existing_file(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator)
    (tmp_path / f"{request_id}.mp4").write_bytes(b"earlier file")

    error = download_error(make_operator(request_id=request_id, destination=str(tmp_path), if_exists="fail"))

    assert "already exists" in str(error) and f"{request_id}.mp4" in str(error)
    assert (tmp_path / f"{request_id}.mp4").read_bytes() == b"earlier file"
    assert names(tmp_path) == [f"{request_id}.mp4"]
    assert downloads(emulator) == 0


def test_if_exists_skip_keeps_the_file_and_reports_its_hash(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator)
    (tmp_path / f"{request_id}.mp4").write_bytes(b"earlier file")
    asset = Asset("dreamina_videos")
    events = OutletEventAccessors()

    uris = run(
        make_operator(request_id=request_id, destination=str(tmp_path), if_exists="skip", outlets=[asset]),
        events,
    )

    assert uris == [(tmp_path / f"{request_id}.mp4").as_uri()]
    assert (tmp_path / f"{request_id}.mp4").read_bytes() == b"earlier file"
    assert events[asset].extra["outputs"][0]["sha256"] == sha256(b"earlier file")
    assert downloads(emulator) == 0


def test_if_exists_skip_on_a_rerun_uses_the_manifest(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator)
    first = make_operator(request_id=request_id, destination=str(tmp_path), if_exists="skip")
    run(first)
    served = downloads(emulator)
    asset = Asset("dreamina_videos")
    events = OutletEventAccessors()

    run(
        make_operator(request_id=request_id, destination=str(tmp_path), if_exists="skip", outlets=[asset]),
        events,
    )

    assert downloads(emulator) == served
    stored = (tmp_path / f"{request_id}.mp4").read_bytes()
    assert events[asset].extra["outputs"][0] == {
        "uri": (tmp_path / f"{request_id}.mp4").as_uri(),
        "sha256": sha256(stored),
        "bytes": len(stored),
        "content_type": "video/mp4",
    }


def test_if_exists_overwrite_replaces_the_file(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator)
    (tmp_path / f"{request_id}.mp4").write_bytes(b"earlier file")

    run(make_operator(request_id=request_id, destination=str(tmp_path), if_exists="overwrite"))

    assert (tmp_path / f"{request_id}.mp4").read_bytes() == output_bytes(request_id)
    assert names(tmp_path) == [f"{request_id}.mp4", f"{request_id}.mp4.json"]


def test_arguments_are_checked_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="if_exists is 'replace'"):
        DreaminaDownloadOperator(task_id="d", request_id="r", destination="/tmp", if_exists="replace")
    with pytest.raises(ValueError, match="max_bytes is 0"):
        DreaminaDownloadOperator(task_id="d", request_id="r", destination="/tmp", max_bytes=0)
    operator = DreaminaDownloadOperator(task_id="d", request_id="r", destination="/tmp")
    assert "hook" not in operator.__dict__, "the hook must not be built at parse time"
    assert {"request_id", "destination", "filename", "destination_conn_id", "dreamina_conn_id"} <= set(
        operator.template_fields
    )


# -- broken transfers -----------------------------------------------------------------------------


def test_truncated_download_resumes_with_range(emulator: EmulatorHandle, tmp_path: Path) -> None:
    emulator.configure(output_bytes=600_000)
    request_id = submit_finished(emulator)
    emulator.inject_fault("download", "truncate", count=1)

    run(make_operator(request_id=request_id, destination=str(tmp_path)))

    counters = emulator.counters()
    assert counters["calls"]["download"] == 2
    # Resumed where it broke: no byte was sent twice.
    assert counters["bytes_served"] == 600_000
    stored = (tmp_path / f"{request_id}.mp4").read_bytes()
    assert sha256(stored) == sha256(output_bytes(request_id))
    manifest = json.loads((tmp_path / f"{request_id}.mp4.json").read_text())
    assert manifest["sha256"] == sha256(stored) and manifest["bytes"] == 600_000


@pytest.mark.parametrize("store", ["local", "memory"])
def test_server_that_cannot_resume_gets_a_fresh_start(
    emulator: EmulatorHandle, host: OutputHost, tmp_path: Path, memory_root: str, store: str
) -> None:
    body = mp4_body(200_000)
    host.behaviour.body = body
    host.behaviour.honour_range = False
    host.behaviour.truncate_at = 70_000
    request_id = submit_finished(emulator, output_urls=[host.url()])
    destination = str(tmp_path) if store == "local" else f"{memory_root}/videos"

    (uri,) = run(make_operator(request_id=request_id, destination=destination))

    from airflow.sdk import ObjectStoragePath

    assert ObjectStoragePath(uri).read_bytes() == body
    assert len(host.received) == 2 and host.received[1]["headers"]["Range"] == "bytes=70000-"
    listed = names(tmp_path) if store == "local" else memory_names(destination)
    assert listed == [f"{request_id}.mp4", f"{request_id}.mp4.json"]


@pytest.mark.parametrize("kind", ["500", "reset", "truncate"])
def test_transfer_that_keeps_failing_leaves_nothing(
    emulator: EmulatorHandle, tmp_path: Path, fast_retries: None, kind: str
) -> None:
    request_id = submit_finished(emulator)
    emulator.inject_fault("download", kind, rate=1.0)

    error = download_error(make_operator(request_id=request_id, destination=str(tmp_path)))

    assert error.retryable, "a flaky network is worth an Airflow retry"
    assert "failed after 3 attempts" in str(error)
    assert emulator.counters()["calls"]["download"] == 3
    assert names(tmp_path) == []


def test_expired_url_is_refreshed_once(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator)
    emulator.inject_fault("download", "expired", count=1)

    run(make_operator(request_id=request_id, destination=str(tmp_path)))

    calls = emulator.counters()["calls_per_request"][request_id]
    assert calls["download"] == 2
    assert calls["result"] == 2, "one result for the task, one fresh result for the expired URL"
    assert (tmp_path / f"{request_id}.mp4").read_bytes() == output_bytes(request_id)


def test_url_that_stays_expired_fails_clearly(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator)
    emulator.inject_fault("download", "expired", rate=1.0)

    error = download_error(make_operator(request_id=request_id, destination=str(tmp_path)))

    assert "HTTP 410 even with a fresh URL" in str(error)
    assert "?" not in (error.url or "") and "sig=" not in str(error)
    assert names(tmp_path) == []


# -- safety ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/outputs/video.mp4?sig=stolen",
        "http://cdn.runcomfy.net/outputs/video.mp4?sig=stolen",
        "https://runcomfy.net.evil.example.com/video.mp4?sig=stolen",
    ],
)
def test_output_on_a_host_not_allowed_is_refused(emulator: EmulatorHandle, tmp_path: Path, url: str) -> None:
    request_id = submit_finished(emulator, output_urls=[url])

    error = download_error(make_operator(request_id=request_id, destination=str(tmp_path)))

    assert "refusing to download output" in str(error) and "allowed_output_hosts" in str(error)
    assert url.split("?")[0] in str(error) and "stolen" not in str(error)
    assert names(tmp_path) == []


def test_redirect_to_a_host_not_allowed_is_refused(
    emulator: EmulatorHandle, host: OutputHost, tmp_path: Path
) -> None:
    host.behaviour.redirect_to = "https://evil.example.com/copy.mp4?sig=stolen"
    request_id = submit_finished(emulator, output_urls=[host.url("/redirect/video.mp4")])

    error = download_error(make_operator(request_id=request_id, destination=str(tmp_path)))

    assert "evil.example.com/copy.mp4 (redirected from" in str(error) and "stolen" not in str(error)
    assert names(tmp_path) == []


def test_redirect_within_allowed_hosts_is_followed(
    emulator: EmulatorHandle, host: OutputHost, tmp_path: Path
) -> None:
    host.behaviour.body = body = mp4_body(2_000, b"video bytes" * 200)
    host.behaviour.redirect_to = host.url("/final/video.mp4")
    request_id = submit_finished(emulator, output_urls=[host.url("/redirect/video.mp4")])

    run(make_operator(request_id=request_id, destination=str(tmp_path)))

    assert (tmp_path / f"{request_id}.mp4").read_bytes() == body
    assert [request["path"].split("?")[0] for request in host.received] == [
        "/redirect/video.mp4",
        "/final/video.mp4",
    ]


def test_token_is_never_sent_to_output_hosts(
    emulator: EmulatorHandle, host: OutputHost, tmp_path: Path
) -> None:
    host.behaviour.body = mp4_body(10_000)
    host.behaviour.truncate_at = 4_000
    request_id = submit_finished(emulator, output_urls=[host.url()])

    run(make_operator(request_id=request_id, destination=str(tmp_path)))

    assert len(host.received) == 2, "one truncated answer, one resumed"
    for request in host.received:
        headers = {name.lower(): value for name, value in request["headers"].items()}
        assert "authorization" not in headers
        assert not any(emulator.token in value for value in headers.values())
    assert host.received[1]["headers"]["Range"] == "bytes=4000-"


@pytest.mark.parametrize(
    ("filename", "url_path"),
    [
        ("{name}{ext}", "/outputs/..%2F..%2Fescape.mp4"),
        ("{name}{ext}", "/outputs/%2e%2e"),
        ("../{request_id}{ext}", "/outputs/video.mp4"),
        ("/etc/{request_id}{ext}", "/outputs/video.mp4"),
        ("{name}", "/outputs/.mp4"),
        ("{name}", "/outputs/"),
    ],
)
def test_name_that_would_leave_the_destination_is_refused(
    emulator: EmulatorHandle, tmp_path: Path, filename: str, url_path: str
) -> None:
    destination = tmp_path / "a" / "b"
    request_id = submit_finished(emulator, output_urls=[f"{emulator.base_url}{url_path}?sig=x"])

    error = download_error(
        make_operator(request_id=request_id, destination=str(destination), filename=filename)
    )

    assert "refusing to store an output as" in str(error) and str(destination) in str(error)
    assert downloads(emulator) == 0
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == []


def test_filename_template_with_an_unknown_field(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator)

    error = download_error(
        make_operator(request_id=request_id, destination=str(tmp_path), filename="{date}{ext}")
    )

    assert "filename template '{date}{ext}' cannot be used" in str(error) and "'date'" in str(error)
    assert "{request_id}" in str(error) and "{index}" in str(error)


def test_filename_template_that_collides_across_outputs(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator, outputs=2, output_key="videos")

    error = download_error(
        make_operator(request_id=request_id, destination=str(tmp_path), filename="clip{ext}")
    )

    assert "include {index}" in str(error)
    assert names(tmp_path) == []


def test_max_bytes_refused_from_content_length(emulator: EmulatorHandle, tmp_path: Path) -> None:
    emulator.configure(output_bytes=300_000)
    request_id = submit_finished(emulator)

    error = download_error(make_operator(request_id=request_id, destination=str(tmp_path), max_bytes=100_000))

    assert "is 300000 bytes; max_bytes allows 100000" in str(error)
    assert names(tmp_path) == []


def test_max_bytes_enforced_while_streaming(
    emulator: EmulatorHandle, host: OutputHost, tmp_path: Path
) -> None:
    host.behaviour.body = mp4_body(300_000)
    host.behaviour.send_length = False
    request_id = submit_finished(emulator, output_urls=[host.url()])

    error = download_error(make_operator(request_id=request_id, destination=str(tmp_path), max_bytes=100_000))

    assert "exceeded 100000 bytes while streaming" in str(error)
    assert names(tmp_path) == []


# -- requests that are not done -------------------------------------------------------------------


def test_request_not_finished(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator, queue_seconds=60)
    destination = tmp_path / "videos"

    with pytest.raises(AirflowFailException, match=f"request {request_id} has not finished"):
        run(make_operator(request_id=request_id, destination=str(destination)))

    assert not destination.exists()


def test_request_failed(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(
        emulator, outcome="failed", error={"type": "policy", "message": "unsafe content"}
    )

    with pytest.raises(AirflowFailException, match="failed: policy: unsafe content"):
        run(make_operator(request_id=request_id, destination=str(tmp_path / "videos")))

    assert not (tmp_path / "videos").exists()


def test_request_cancelled(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator, queue_seconds=60)
    with DreaminaHook() as hook:
        assert hook.cancel(request_id)

    with pytest.raises(AirflowFailException, match="was cancelled"):
        run(make_operator(request_id=request_id, destination=str(tmp_path / "videos")))

    assert not (tmp_path / "videos").exists()


def test_request_id_that_rendered_to_none(emulator: EmulatorHandle, tmp_path: Path) -> None:
    with pytest.raises(AirflowFailException, match="request_id rendered to 'None'"):
        run(make_operator(request_id="None", destination=str(tmp_path)))


def test_unwritable_destination_is_named(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator)
    (tmp_path / "blocker").write_text("a file where a directory should be")
    destination = tmp_path / "blocker" / "videos"

    error = download_error(make_operator(request_id=request_id, destination=str(destination)))

    assert f"destination {destination} cannot be written" in str(error)
    assert downloads(emulator) == 0


# -- manifest, assets, lineage, logs --------------------------------------------------------------


def test_manifest_contents(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator, cost=0.42)
    image = f"{emulator.sample_image_url}?token=signed-input"
    # What `{{ ti.xcom_pull(...) | tojson }}` renders a dict to.
    generation_input = json.dumps({"prompt": PROMPT, "image_urls": [image], "seed": SEED, "frames": 121})

    run(make_operator(request_id=request_id, destination=str(tmp_path), generation_input=generation_input))

    video = tmp_path / f"{request_id}.mp4"
    text = (tmp_path / f"{request_id}.mp4.json").read_text()
    manifest = json.loads(text)
    stored = video.read_bytes()
    assert manifest["request_id"] == request_id
    assert manifest["model_id"] == DEFAULT_MODEL_ID
    assert (manifest["prompt"], manifest["seed"], manifest["frames"]) == (PROMPT, SEED, 121)
    assert manifest["image_url"] == emulator.sample_image_url
    assert manifest["source_url"] == f"{emulator.base_url}/outputs/{request_id}/output.mp4"
    assert manifest["stored_uri"] == video.as_uri() and manifest["file_name"] == video.name
    assert (manifest["bytes"], manifest["sha256"]) == (len(stored), sha256(stored))
    assert manifest["content_type"] == "video/mp4"
    assert manifest["cost_usd"] == 0.42 and "cost" not in manifest
    created, finished = (datetime.fromisoformat(manifest[key]) for key in ("created_at", "finished_at"))
    assert (
        finished >= created
        and manifest["generation_seconds"] is not None
        and "duration_seconds" not in manifest
    )
    assert datetime.fromisoformat(manifest["downloaded_at"]) >= finished
    assert emulator.token not in text and "sig=" not in text and "signed-input" not in text


def test_manifest_takes_the_input_from_the_submit_operators_result(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    # What `generation_input=generate.output` resolves to: the waiting submit operator's result.
    request_id = submit_finished(emulator)
    submitted = {"model_id": DEFAULT_MODEL_ID, "prompt": PROMPT, "seed": SEED, "frames": 241}
    result = {
        "request_id": request_id,
        "state": "succeeded",
        "outputs": [f"{emulator.base_url}/outputs/{request_id}/output.mp4"],
        "input": {**submitted, "image_url": emulator.sample_image_url},
    }

    run(make_operator(request_id=request_id, destination=str(tmp_path), generation_input=result))

    manifest = json.loads((tmp_path / f"{request_id}.mp4.json").read_text())
    assert {key: manifest[key] for key in submitted} == submitted
    assert manifest["image_url"] == emulator.sample_image_url
    assert "outputs" not in manifest and "state" not in manifest


def test_the_generation_record_alone_names_the_request(emulator: EmulatorHandle, tmp_path: Path) -> None:
    # `generation_input=generate.output` and no request_id: one input from the submit task, not two.
    request_id = submit_finished(emulator)
    record = {
        "request_id": request_id,
        "state": "succeeded",
        "status": "completed",
        "input": {"prompt": PROMPT, "seed": SEED},
    }

    operator = make_operator(destination=str(tmp_path), generation_input=record)
    uris = run(operator)

    assert uris == [(tmp_path / f"{request_id}.mp4").as_uri()]
    assert links.request_id_for(operator, ti_key=None) == request_id  # its gallery link, no XCom read
    assert json.loads((tmp_path / f"{request_id}.mp4.json").read_text())["prompt"] == PROMPT


def test_a_request_id_that_is_not_the_records_is_refused(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator)
    record = {
        "request_id": "another-request",
        "state": "succeeded",
        "status": "completed",
        "input": {"prompt": PROMPT},
    }

    with pytest.raises(AirflowFailException, match="is not the request of generation_input"):
        run(make_operator(request_id=request_id, destination=str(tmp_path), generation_input=record))
    assert downloads(emulator) == 0


def test_a_sensors_record_names_the_request_too(emulator: EmulatorHandle, tmp_path: Path) -> None:
    # `generation_input=wait.output` of a DreaminaRequestSensor: a record without its input.
    request_id = submit_finished(emulator)
    record = {"request_id": request_id, "state": "succeeded", "status": "completed", "input": None}

    assert run(make_operator(destination=str(tmp_path), generation_input=record))


def test_without_a_request_id_or_a_record_the_task_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(AirflowFailException, match=r"pass generation_input=generate\.output"):
        run(make_operator(destination=str(tmp_path), generation_input={"prompt": PROMPT}))


def test_no_manifest_when_disabled(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator)

    run(make_operator(request_id=request_id, destination=str(tmp_path), write_manifest=False))

    assert names(tmp_path) == [f"{request_id}.mp4"]


def test_asset_events_carry_request_uris_and_hashes(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator, outputs=2, output_key="videos")
    asset, alias = Asset("dreamina_videos"), AssetAlias("dreamina_new_videos")
    events = OutletEventAccessors()

    uris = run(
        make_operator(request_id=request_id, destination=str(tmp_path), outlets=[asset, alias]), events
    )

    hashes = [sha256((tmp_path / f"{request_id}-{index}.mp4").read_bytes()) for index in (1, 2)]
    extra = events[asset].extra
    assert extra["request_id"] == request_id
    assert extra["uris"] == uris
    assert [output["sha256"] for output in extra["outputs"]] == hashes
    assert [output["uri"] for output in extra["outputs"]] == uris
    json.dumps(extra)  # an event extra must be JSON
    alias_events = events[alias].asset_alias_events
    assert [event.dest_asset_key.uri for event in alias_events] == uris
    assert [event.extra["sha256"] for event in alias_events] == hashes


def test_logs_name_each_file_and_never_a_secret(
    emulator: EmulatorHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    # Airflow keeps httpx at WARNING; a user who lowers it must not see signed URLs either.
    caplog.set_level(logging.INFO, logger="httpx")
    request_id = submit_finished(emulator)
    emulator.inject_fault("download", "expired", count=1)
    emulator.inject_fault("download", "truncate", count=1)

    uris = run(make_operator(request_id=request_id, destination=str(tmp_path)))

    # Library loggers reach caplog; Airflow renders the task's own logger to the console.
    captured = capsys.readouterr()
    logs = caplog.text + captured.out + captured.err
    stored = (tmp_path / f"{request_id}.mp4").read_bytes()
    assert f"to {uris[0]} ({len(stored)} bytes, sha256 {sha256(stored)})" in logs
    assert "fetching a fresh URL" in logs and "resuming" in logs
    assert "HTTP Request: GET" in logs, "httpx's request lines are logged, without queries"
    assert emulator.token not in logs
    assert "sig=" not in logs and "expires=" not in logs


# -- the hook's download method -------------------------------------------------------------------


def hook_and_url(emulator: EmulatorHandle, **script: Any) -> tuple[DreaminaHook, str, str]:
    request_id = submit_finished(emulator, **script)
    hook = DreaminaHook(retry_backoff=0.01)
    return hook, request_id, hook.get_result(request_id).output_urls[0]


def test_hook_download_output(emulator: EmulatorHandle) -> None:
    hook, request_id, url = hook_and_url(emulator)
    sink = BytesSink()

    downloaded = hook.download_output(url, sink)

    assert isinstance(downloaded, DownloadedOutput)
    assert bytes(sink.data) == output_bytes(request_id)
    assert downloaded.sha256 == sha256(bytes(sink.data)) and downloaded.size_bytes == len(sink.data)
    assert downloaded.content_type == "video/mp4"
    assert downloaded.source_url == url.split("?")[0]
    assert (downloaded.attempts, downloaded.resumed, downloaded.restarted) == (1, 0, 0)


def test_hook_resumes_a_truncated_download(emulator: EmulatorHandle) -> None:
    hook, request_id, url = hook_and_url(emulator)
    emulator.inject_fault("download", "truncate", count=1)
    sink = BytesSink()

    downloaded = hook.download_output(url, sink)

    assert (downloaded.attempts, downloaded.resumed, downloaded.restarted) == (2, 1, 0)
    assert sink.restarts == 0
    assert downloaded.sha256 == sha256(output_bytes(request_id))


def test_hook_refreshes_an_expired_url(emulator: EmulatorHandle) -> None:
    emulator.configure(output_url_ttl=0.2)
    hook, request_id, url = hook_and_url(emulator)
    wait_until(lambda: time.time() * 1000 > int(httpx.URL(url).params["expires"]))
    with pytest.raises(DreaminaDownloadError, match="HTTP 403"):
        hook.download_output(url, BytesSink())
    # The fresh URL must outlive its download, however busy the machine.
    emulator.configure(output_url_ttl=60)
    sink = BytesSink()

    downloaded = hook.download_output(url, sink, request_id=request_id, index=0)

    assert downloaded.refreshed
    assert bytes(sink.data) == output_bytes(request_id)


def test_hook_starts_again_when_the_server_ignores_range(host: OutputHost, emulator: EmulatorHandle) -> None:
    body = mp4_body(50_000)
    host.behaviour.body = body
    host.behaviour.honour_range = False
    host.behaviour.truncate_at = 20_000
    sink = BytesSink()

    downloaded = DreaminaHook(retry_backoff=0.01).download_output(host.url(), sink)

    assert host.received[1]["headers"]["Range"] == "bytes=20000-"
    assert (downloaded.resumed, downloaded.restarted, sink.restarts) == (0, 1, 1)
    assert bytes(sink.data) == body and downloaded.sha256 == sha256(body)


def test_hook_without_content_length_trusts_a_clean_end(host: OutputHost, emulator: EmulatorHandle) -> None:
    body = mp4_body(30_000)
    host.behaviour.body = body
    host.behaviour.send_length = False
    sink = BytesSink()

    downloaded = DreaminaHook().download_output(host.url(), sink)

    assert bytes(sink.data) == body and downloaded.size_bytes == len(body)


def test_hook_refuses_a_host_not_allowed_before_any_request(emulator: EmulatorHandle) -> None:
    with pytest.raises(
        DreaminaDownloadError, match=r"refusing to download output https://example\.org/v\.mp4:"
    ):
        DreaminaHook().download_output("https://example.org/v.mp4?sig=1", BytesSink())


def test_hook_download_memory_stays_flat(emulator: EmulatorHandle) -> None:
    size = 24 * 1024 * 1024
    emulator.configure(output_bytes=size)
    hook, _, url = hook_and_url(emulator)
    sink = HashingSink()

    tracemalloc.start()
    try:
        downloaded = hook.download_output(url, sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert downloaded.size_bytes == size
    assert peak < 4 * DOWNLOAD_CHUNK_SIZE, f"peak {peak} bytes while downloading {size}"
