"""Every answer of the gallery tells the browser what it may do with it.

Content-Security-Policy (nothing but the gallery's own origin; no script; framed only by the
Airflow UI), ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy`` on pages, JSON, media,
redirects, errors of every kind and the sign-in page, and a policy the page itself keeps.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.api_fastapi.common.db.common import _get_session
from airflow.api_fastapi.core_api.security import get_user
from fastapi import HTTPException
from fastapi.testclient import TestClient

from airflow_provider_dreamina.plugins import catalog
from airflow_provider_dreamina.plugins.gallery import create_app
from tests.plugins.conftest import FakeCatalog
from tests.plugins.gallery_records import event, store_video


def directives(policy: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *values = part.split()
        found[name.lower()] = values
    return found


def assert_guarded(answer: Any, what: str) -> None:
    headers = answer.headers
    assert headers.get("x-content-type-options") == "nosniff", what
    assert headers.get("referrer-policy") in ("same-origin", "no-referrer"), what
    policy = directives(headers.get("content-security-policy", "default-src *"))
    assert policy.get("default-src") in (["'self'"], ["'none'"]), (what, policy)
    assert policy.get("frame-ancestors") == ["'self'"], (what, policy)
    assert policy.get("script-src") == ["'none'"], (what, policy)
    assert policy.get("object-src") == ["'none'"], (what, policy)
    assert len(headers.get_list("content-security-policy")) == 1, what


@pytest.fixture
def forbidden(fake: FakeCatalog) -> Iterator[TestClient]:
    """A client whose token Airflow rejects (403), as an expired or forged one is."""

    def rejected() -> None:
        raise HTTPException(403, "Invalid JWT token")

    app = create_app()
    app.dependency_overrides[get_user] = rejected
    app.dependency_overrides[_get_session] = lambda: None
    with TestClient(app, root_path="/dreamina") as opened:
        yield opened


@pytest.fixture
def stored(fake: FakeCatalog, tmp_path: Path) -> None:
    fake.events.append(event(1, "req-1", [store_video(tmp_path, "req-1", poster=b"\xff\xd8\xff\xe0 poster")]))
    fake.events.append(event(2, "req-2", [{"uri": (tmp_path / "x.mp4").as_uri()}]))
    fake.events.append(event(3, "req-3", [store_video(tmp_path, "req-3")]))
    (tmp_path / "req-3.mp4").write_bytes(b"\0" * (tmp_path / "req-3.mp4").stat().st_size)
    fake.events.append(event(4, "req-4", [store_video(tmp_path, "req-4")]))
    (tmp_path / "req-4.mp4").unlink()


@pytest.mark.usefixtures("stored")
def test_every_answer_carries_the_security_headers(
    served: TestClient, anonymous: TestClient, forbidden: TestClient
) -> None:
    answers = {
        "page": served.get("/"),
        "filtered page": served.get("/", params={"request_id": "req-1"}),
        "json": served.get("/api/generations"),
        "video": served.get("/media/1/0/video"),
        "range": served.get("/media/1/0/video", headers={"Range": "bytes=0-9"}),
        "416": served.get("/media/1/0/video", headers={"Range": "bytes=99999999-"}),
        "head": served.head("/media/1/0/video"),
        "poster": served.get("/media/1/0/poster"),
        "redirect": served.get("/requests/req-1/video", follow_redirects=False),
        "page redirect": served.get("/requests/req-1/page", follow_redirects=False),
        "slash redirect": served.get("/api/generations/", follow_redirects=False),
        "400": served.get("/", params={"day": "yesterday"}),
        "404": served.get("/media/2/0/video"),
        "409": served.get("/media/3/0/video"),
        "410": served.get("/media/4/0/video"),
        "no route": served.get("/no/such/thing"),
        "405": served.post("/api/generations"),
        "422": served.get("/media/one/0/video"),
        "401 json": anonymous.get("/api/generations"),
        "401 page": anonymous.get("/", headers={"Accept": "text/html"}),
    }
    for accept in ("application/json", "text/html"):
        refused = forbidden.get("/", headers={"Accept": accept})
        assert refused.status_code == 403
        answers[f"403 {accept}"] = refused
    statuses = {what: answer.status_code for what, answer in answers.items()}
    assert statuses["video"] == 200 and statuses["poster"] == 200 and statuses["range"] == 206
    assert statuses["401 json"] == 401 and statuses["422"] == 422
    assert (statuses["409"], statuses["410"], statuses["416"]) == (409, 410, 416)
    for what, answer in answers.items():
        assert_guarded(answer, what)


def test_a_server_error_carries_them_too(
    served: TestClient, fake: FakeCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(catalog, "find_generations", broken)
    answer = served.get("/api/generations")
    assert answer.status_code == 500
    assert "database went away" not in answer.text
    assert_guarded(answer, "500")


@pytest.mark.usefixtures("stored")
def test_the_page_keeps_its_own_policy(served: TestClient, anonymous: TestClient) -> None:
    """No script, no inline style attribute or handler; each style block is allowed by its hash."""
    for answer in (served.get("/"), anonymous.get("/", headers={"Accept": "text/html"})):
        policy = directives(answer.headers["content-security-policy"])
        html = answer.text
        assert "<script" not in html.lower()
        assert not re.search(r"\s(on\w+|style)\s*=", html, flags=re.IGNORECASE)
        blocks = re.findall(r"<style>(.*?)</style>", html, flags=re.DOTALL)
        assert blocks
        for block in blocks:
            digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in policy["style-src"]
        assert "'unsafe-inline'" not in policy["style-src"]
        assert policy["media-src"] == ["'self'"] and policy["img-src"] == ["'self'"]
        assert policy["form-action"] == ["'self'"] and policy["base-uri"] == ["'none'"]
