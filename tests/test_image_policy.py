"""The image source policy: a DAG-run param cannot make the worker read a file, or open storage
with a connection, that the DAG author or the deployment did not allow.

Every refusal happens before anything is read or paid for, and its message is the same whether
the file exists or not: it names the rule and how to allow the source, nothing more.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowFailException

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import (
    DreaminaConfigurationError,
    DreaminaError,
    DreaminaImageRefusedError,
    DreaminaInvalidInputError,
)
from airflow_provider_dreamina.inputs import sources
from airflow_provider_dreamina.operators.dreamina import DreaminaImageToVideoOperator
from tests.helpers import Api, fast_hook, image_bytes, make_context, sample_input

SIZE = (640, 480)


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """An allowed root with one image, and a secret image beside it, outside the root."""
    allowed = tmp_path / "allowed"
    secret_dir = tmp_path / "secret"
    allowed.mkdir()
    secret_dir.mkdir()
    (allowed / "frame.png").write_bytes(image_bytes(*SIZE))
    secret = secret_dir / "private.png"
    secret.write_bytes(image_bytes(*SIZE))
    (allowed / "link.png").symlink_to(secret)
    (allowed / "dir-link").symlink_to(secret_dir)
    return {"root": allowed, "secret": secret, "tmp": tmp_path}


def escapes(layout: dict[str, Path]) -> dict[str, str]:
    root, secret = layout["root"], layout["secret"]
    return {
        "absolute path": str(secret),
        "file:// URI": f"file://{secret}",
        "local:// URI": f"local://{secret}",
        "home directory": "~/secret/private.png",
        "symlink in the root": str(root / "link.png"),
        "symlinked directory in the root": str(root / "dir-link" / "private.png"),
        "dot-dot out of the root": f"{root}/../secret/private.png",
        "file:// dot-dot": f"file://{root}/../secret/private.png",
    }


@pytest.mark.parametrize(
    "form",
    [
        "absolute path",
        "file:// URI",
        "local:// URI",
        "home directory",
        "symlink in the root",
        "symlinked directory in the root",
        "dot-dot out of the root",
        "file:// dot-dot",
    ],
)
def test_a_param_cannot_read_a_file_outside_the_roots(
    emulator: EmulatorHandle,
    api: Api,
    layout: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    form: str,
) -> None:
    monkeypatch.setenv("HOME", str(layout["tmp"]))
    source = escapes(layout)[form]
    with pytest.raises(DreaminaImageRefusedError) as caught:
        api(
            fast_hook(),
            "submit",
            sample_input(emulator, image_urls=[source]),
            image_roots=[str(layout["root"])],
        )
    message = str(caught.value)
    if "/../" in source:
        # Refused as written, before any lookup (resolving it would tell which names are links).
        assert "'..' segment" in message
    else:
        assert "image_roots" in message and "allowed_image_roots" in message  # how to allow it
    assert "640x480" not in message and "MB" not in message  # nothing learnt about the file
    assert str(layout["secret"]) not in message or source.endswith(str(layout["secret"]))
    assert not caught.value.retryable
    assert emulator.counters()["calls"]["submit"] == 0


def test_without_roots_no_local_file_is_read(
    emulator: EmulatorHandle, api: Api, layout: dict[str, Path]
) -> None:
    with pytest.raises(DreaminaImageRefusedError, match="no image roots are set"):
        api(fast_hook(), "submit", sample_input(emulator, image_urls=[str(layout["root"] / "frame.png")]))
    assert emulator.counters()["calls"]["submit"] == 0


def test_the_refusal_does_not_tell_whether_a_file_exists(
    emulator: EmulatorHandle, layout: dict[str, Path]
) -> None:
    hook = fast_hook()
    messages = []
    for path in (layout["secret"], layout["secret"].with_name("missing.png"), Path("/etc/shadow")):
        with pytest.raises(DreaminaImageRefusedError) as caught:
            hook.prepare_image(str(path), image_roots=[str(layout["root"])])
        messages.append(str(caught.value).replace(str(path), "<path>"))
    assert len(set(messages)) == 1


def test_files_under_a_root_are_read_from_the_operator_or_the_connection(
    emulator: EmulatorHandle, api: Api, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = str(layout["root"] / "frame.png")
    api(fast_hook(), "submit", sample_input(emulator, image_urls=[frame]), image_roots=str(layout["root"]))
    monkeypatch.setenv(
        "AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(allowed_image_roots=[str(layout["root"])])
    )
    api(fast_hook(), "submit", sample_input(emulator, image_urls=[f"file://{frame}"]))
    assert emulator.counters()["submissions"] == 2


def test_a_root_is_a_directory_not_a_name_prefix(emulator: EmulatorHandle, layout: dict[str, Path]) -> None:
    sibling = layout["tmp"] / "allowed-but-not-really"
    sibling.mkdir()
    (sibling / "frame.png").write_bytes(image_bytes(*SIZE))
    with pytest.raises(DreaminaImageRefusedError):
        fast_hook().prepare_image(str(sibling / "frame.png"), image_roots=[str(layout["root"])])


@pytest.mark.timeout(60)
def test_a_fifo_under_a_root_is_refused_without_blocking(emulator: EmulatorHandle, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    outcome: list[BaseException | str] = []

    def prepare() -> None:
        try:
            outcome.append(fast_hook().prepare_image(str(fifo), image_roots=[str(tmp_path)]))
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=prepare, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the old behaviour's open() so the thread can end
        with open(fifo, "wb"):
            pass
        pytest.fail("opening the FIFO blocked")
    (error,) = outcome
    assert isinstance(error, DreaminaInvalidInputError)
    assert "not a regular file" in str(error)


def test_a_device_under_a_root_is_never_opened(emulator: EmulatorHandle) -> None:
    with pytest.raises(DreaminaInvalidInputError, match="not a regular file"):
        fast_hook().prepare_image("/dev/zero", image_roots=["/dev"])


# -- object storage ------------------------------------------------------------------------


@pytest.fixture
def stored_frame(memory_storage: None) -> str:
    from airflow.sdk import ObjectStoragePath

    for key in ("inputs/frame.png", "private/frame.png", "inputs-private/frame.png"):
        target = ObjectStoragePath(f"memory://bucket/{key}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as handle:
            handle.write(image_bytes(*SIZE))
    return "memory://bucket/inputs/frame.png"


@pytest.mark.parametrize(
    "source",
    [
        "memory://bucket/private/frame.png",
        "memory://bucket/inputs-private/frame.png",
        "memory://bucket/inputs/../private/frame.png",
        "memory://bucket/inputs/%2e%2e/private/frame.png",
        "memory://other-bucket/inputs/frame.png",
    ],
)
def test_object_storage_outside_the_roots_is_refused(
    emulator: EmulatorHandle, stored_frame: str, source: str
) -> None:
    with pytest.raises(DreaminaImageRefusedError):
        fast_hook().prepare_image(source, image_roots=["memory://bucket/inputs/"])
    assert (
        fast_hook().prepare_image(stored_frame, image_roots=["memory://bucket/inputs/"]).startswith("data:")
    )


@pytest.mark.parametrize(
    "source", ["memory://aws_default@bucket/inputs/frame.png", "s3://my_db@bucket/inputs/x.png"]
)
def test_a_connection_named_in_the_uri_is_refused_before_any_lookup(
    emulator: EmulatorHandle, api: Api, stored_frame: str, source: str
) -> None:
    """It was a way to open storage with any connection, and to list connection ids."""
    with pytest.raises(DreaminaImageRefusedError, match="image_conn_id") as caught:
        api(
            fast_hook(),
            "submit",
            sample_input(emulator, image_urls=[source]),
            image_roots=["memory://bucket/inputs/", "s3://bucket/inputs/"],
        )
    assert isinstance(caught.value, DreaminaError) and not caught.value.retryable
    assert "aws_default" not in str(caught.value).replace(source, "")
    assert emulator.counters()["calls"]["submit"] == 0


def test_object_storage_is_opened_with_image_conn_id(
    emulator: EmulatorHandle, stored_frame: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow.sdk

    opened: list[tuple[str, Any]] = []
    real = airflow.sdk.ObjectStoragePath

    def recording(uri: str, conn_id: Any = None) -> Any:
        opened.append((uri, conn_id))
        return real(uri)

    monkeypatch.setattr(airflow.sdk, "ObjectStoragePath", recording)
    fast_hook().prepare_image(
        stored_frame, image_roots=["memory://bucket/inputs"], image_conn_id="my_storage"
    )
    assert opened == [(stored_frame, "my_storage")]


def test_a_root_naming_a_connection_is_a_configuration_error(emulator: EmulatorHandle) -> None:
    with pytest.raises(DreaminaConfigurationError, match="without a connection"):
        fast_hook().prepare_image(
            "memory://bucket/inputs/frame.png", image_roots=["memory://conn@bucket/inputs"]
        )


# -- the operator ------------------------------------------------------------------------------


def test_the_operator_fails_a_param_outside_the_roots_without_retries(
    emulator: EmulatorHandle, layout: dict[str, Path]
) -> None:
    operator = DreaminaImageToVideoOperator(
        task_id="generate",
        prompt="a pier",
        image_url=str(layout["secret"]),
        image_roots=[str(layout["root"])],
    )
    with pytest.raises(AirflowFailException) as caught:
        operator.execute(make_context())
    assert isinstance(caught.value.__cause__, DreaminaImageRefusedError)
    assert emulator.counters()["calls"]["submit"] == 0


def test_the_operator_reads_under_its_roots(emulator: EmulatorHandle, layout: dict[str, Path]) -> None:
    operator = DreaminaImageToVideoOperator(
        task_id="generate",
        prompt="a pier",
        image_url=str(layout["root"] / "frame.png"),
        image_roots=[str(layout["root"])],
    )
    assert operator.execute(make_context())
    assert emulator.counters()["submissions"] == 1


def test_roots_and_storage_connection_cannot_be_templated_from_params() -> None:
    assert not {"image_roots", "image_conn_id"} & set(DreaminaImageToVideoOperator.template_fields)


def test_the_policy_joins_operator_and_connection_roots() -> None:
    from airflow_provider_dreamina.inputs.sources import ImagePolicy
    from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings

    settings = DreaminaSettings(
        conn_id="c",
        base_url="https://x",
        token="t",
        allowed_image_roots=("/deploy",),
        allowed_image_hosts=("h",),
    )
    policy = ImagePolicy.of(settings, "/dag", "store")
    assert policy.roots == ("/dag", "/deploy")
    assert policy.conn_id == "store"
    assert policy.allowed_hosts == ("h",)
    assert sources.source_kind("~/a.png") == "local"
    assert sources.source_kind("LOCAL:///a.png") == "local"
    assert sources.source_kind("gs://b/a.png") == "storage"
