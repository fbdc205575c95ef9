"""The gallery's FastAPI app, mounted by Airflow's API server under ``/dreamina``.

Endpoints (each requires a signed-in Airflow user and shows only DAGs that user may read):

- ``GET /dreamina/``: the page (filters ``dag_id``, ``day``, ``request_id``; paging ``before``);
- ``GET /dreamina/api/generations``: the same generations as JSON;
- ``GET /dreamina/media/{event_id}/{index}/video`` and ``.../poster``: the stored file, with
  HTTP Range support, found through the provider's record (never through a path in the request);
- ``GET /dreamina/requests/{request_id}/video``, ``.../poster``, ``.../page``: redirects to the
  newest stored video of a request (links in review requests and extra links use these).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from airflow.api_fastapi.common.db.common import SessionDep
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_dreamina.models import is_request_id
from airflow_provider_dreamina.plugins import access, catalog, files, page, streaming
from airflow_provider_dreamina.plugins.catalog import Filters
from airflow_provider_dreamina.plugins.plugin import URL_PREFIX
from airflow_provider_dreamina.plugins.records import IMAGE_TYPES, Generation, RecordedFile

PAGE_SIZE = 24
MAX_PAGE_SIZE = 100
# A poster is a single frame; anything bigger is not one.
MAX_POSTER_BYTES = 20 * 1024 * 1024
_IMAGE_MAGIC = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/webp": (b"RIFF",),
}


def _urls(request: Request) -> page.Urls:
    app_root = request.scope.get("root_path", "") or URL_PREFIX
    return page.Urls(app_root, app_root.removesuffix(URL_PREFIX))


def _filters(dag_id: str | None, day: str | None, request_id: str | None) -> Filters:
    try:
        parsed_day = date.fromisoformat(day) if day else None
    except ValueError:
        raise HTTPException(400, f"day must look like 2026-11-24, not {day!r}") from None
    if request_id and not is_request_id(request_id):
        raise HTTPException(400, "request_id holds characters a RunComfy request id never has")
    return Filters(dag_id=dag_id or None, day=parsed_day, request_id=request_id or None)


def _recorded(session: Any, user: Any, event_id: int, index: int) -> Generation:
    generation = catalog.find_generation(session, access.readable_dag_ids(user), event_id, index)
    if generation is None:
        # The same answer whether the record does not exist or the DAG is not readable.
        raise HTTPException(404, "No such video in the Dreamina gallery")
    return generation


def _serve(request: Request, recorded: RecordedFile, *, etag: str | None) -> Response:
    size = files.stored_size(recorded.uri, recorded.conn_id)
    if size is None:
        raise HTTPException(410, f"{recorded.name} is not in its storage any more")
    if recorded.size is not None and size != recorded.size:
        raise HTTPException(409, f"{recorded.name} changed since it was recorded; it is not served")
    return streaming.file_response(
        request,
        lambda: files.open_stored(recorded.uri, recorded.conn_id),
        size=size,
        content_type=recorded.content_type,
        etag=etag,
        download_name=recorded.name,
    )


def _check_image(poster: RecordedFile) -> None:
    size = files.stored_size(poster.uri, poster.conn_id)
    if size is None or size > MAX_POSTER_BYTES or poster.content_type not in IMAGE_TYPES:
        raise HTTPException(404, "This video has no poster")
    head = files.read_small(poster.uri, 16, poster.conn_id) or b""
    if not head.startswith(_IMAGE_MAGIC[poster.content_type]):
        raise HTTPException(404, "This video has no poster")


def create_app() -> FastAPI:
    """The gallery app; Airflow mounts it at ``URL_PREFIX`` (see :mod:`plugin`)."""
    app = FastAPI(title="Dreamina gallery", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def explain(request: Request, error: StarletteHTTPException) -> Response:
        # A browser that is not signed in gets a page with a way to sign in; the status stays.
        if error.status_code in (401, 403) and "text/html" in request.headers.get("accept", ""):
            login = access.login_url(str(request.url))
            return HTMLResponse(
                page.render_signed_out(login, error.status_code), status_code=error.status_code
            )
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)

    @app.get("/", response_class=HTMLResponse)
    def gallery_page(
        request: Request,
        user: access.SignedInUser,
        session: SessionDep,
        dag_id: str | None = None,
        day: str | None = None,
        request_id: str | None = None,
        before: int | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
    ) -> HTMLResponse:
        filters = _filters(dag_id, day, request_id)
        readable = access.readable_dag_ids(user)
        found = catalog.find_generations(session, readable, filters, before=before, limit=limit)
        dag_ids = catalog.dags_with_generations(session, readable)
        html = page.render_gallery(found, filters, dag_ids, _urls(request), limit=limit)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/api/generations")
    def list_generations(
        request: Request,
        user: access.SignedInUser,
        session: SessionDep,
        dag_id: str | None = None,
        day: str | None = None,
        request_id: str | None = None,
        before: int | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
    ) -> dict[str, Any]:
        filters = _filters(dag_id, day, request_id)
        found = catalog.find_generations(
            session, access.readable_dag_ids(user), filters, before=before, limit=limit
        )
        urls = _urls(request)
        return {
            "generations": [page.card(generation, urls) for generation in found.generations],
            "older_than": found.older_than,
        }

    @app.api_route("/media/{event_id}/{index}/video", methods=["GET", "HEAD"])
    def video(
        request: Request, user: access.SignedInUser, session: SessionDep, event_id: int, index: int
    ) -> Response:
        generation = _recorded(session, user, event_id, index)
        if not generation.playable:
            raise HTTPException(404, f"This video is not served: {generation.problem}")
        return _serve(request, generation.video, etag=generation.video.sha256 or generation.manifest.sha256)

    @app.api_route("/media/{event_id}/{index}/poster", methods=["GET", "HEAD"])
    def poster(
        request: Request, user: access.SignedInUser, session: SessionDep, event_id: int, index: int
    ) -> Response:
        generation = _recorded(session, user, event_id, index)
        if not generation.playable or generation.poster is None:
            raise HTTPException(404, "This video has no poster")
        _check_image(generation.poster)
        return _serve(request, generation.poster, etag=None)

    @app.get("/requests/{request_id}/{kind}")
    def by_request(
        request: Request,
        user: access.SignedInUser,
        session: SessionDep,
        request_id: str,
        kind: Literal["page", "video", "poster"],
    ) -> Response:
        urls = _urls(request)
        if kind == "page":
            return RedirectResponse(urls.gallery(request_id=request_id), status_code=307)
        _filters(None, None, request_id)
        generation = catalog.newest_for_request(session, access.readable_dag_ids(user), request_id)
        if generation is None:
            raise HTTPException(404, f"No stored video of request {request_id} that you may see (yet)")
        target = urls.video(generation) if kind == "video" else urls.poster(generation)
        return RedirectResponse(target, status_code=307)

    return app
