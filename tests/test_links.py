"""The "Dreamina gallery" extra link: from a task to the gallery's page of its request."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_dreamina import links
from airflow_provider_dreamina.links import DreaminaGalleryLink, gallery_url


class Task:
    def __init__(self, request_id: Any = None) -> None:
        self.request_id = request_id


@pytest.fixture
def xcom(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The task's own XComs, as ``XCom.get_value`` returns them on the worker."""
    from airflow.sdk.execution_time.xcom import XCom

    values: dict[str, Any] = {}
    monkeypatch.setattr(XCom, "get_value", lambda *, ti_key, key: values.get(key))
    return values


def test_the_link_leads_to_the_gallery_page_of_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    assert gallery_url("abc-1") == "/dreamina/?request_id=abc-1"
    assert gallery_url("abc-1", "video") == "/dreamina/requests/abc-1/video"
    assert gallery_url(None) == "/dreamina/"
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/")
    assert gallery_url("a b") == "https://airflow.example.com/dreamina/?request_id=a%20b"


def test_sensor_and_download_use_their_rendered_request_id(xcom: dict[str, Any]) -> None:
    xcom["request_id"] = "from-xcom"
    link = DreaminaGalleryLink()
    assert link.name == "Dreamina gallery"
    assert link.get_link(Task("rendered-id"), ti_key=object()).endswith("?request_id=rendered-id")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field", [None, "", "None", "{{ ti.xcom_pull(task_ids='submit', key='request_id') }}"]
)
def test_the_submit_task_uses_its_request_id_xcom(xcom: dict[str, Any], field: Any) -> None:
    xcom["request_id"] = "pushed-id"
    assert DreaminaGalleryLink().get_link(Task(field), ti_key=object()).endswith("?request_id=pushed-id")  # type: ignore[arg-type]


def test_no_request_no_link(xcom: dict[str, Any]) -> None:
    assert DreaminaGalleryLink().get_link(Task(None), ti_key=object()) == ""  # type: ignore[arg-type]
    assert links.request_id_for(Task("  "), object()) is None


def test_a_task_that_noted_its_request_and_output_reads_no_xcom(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow computes links in the task's process as it finishes or defers: what the task noted
    while it ran is enough, with no read of its XComs back through the API server."""
    from airflow.sdk.execution_time.xcom import XCom

    from airflow_provider_dreamina.links import DreaminaOutputLink

    def no_read(**_: Any) -> Any:
        raise AssertionError("an XCom was read back")

    monkeypatch.setattr(XCom, "get_value", no_read)
    task = Task(None)
    links.note(task, request_id="noted-id", output_url="https://files.runcomfy.net/out.mp4")
    assert DreaminaGalleryLink().get_link(task, ti_key=object()).endswith("?request_id=noted-id")  # type: ignore[arg-type]
    assert DreaminaOutputLink().get_link(task, ti_key=object()) == "https://files.runcomfy.net/out.mp4"  # type: ignore[arg-type]
    deferring = Task(None)  # noted its request, has no output yet
    links.note(deferring, request_id="noted-id")
    assert DreaminaOutputLink().get_link(deferring, ti_key=object()) == ""  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", " javascript:alert(1)", "data:text/html,x", "ftp://x/y.mp4", ""]
)
def test_the_output_link_is_only_ever_a_web_url(url: str) -> None:
    """The URL comes from RunComfy's answer (untrusted): the UI never gets a script link."""
    from airflow_provider_dreamina.links import DreaminaOutputLink

    noted = Task(None)
    links.note(noted, output_url=url)
    assert DreaminaOutputLink().get_link(noted, ti_key=object()) == ""  # type: ignore[arg-type]
