"""The gallery's FastAPI app, mounted by Airflow's API server under ``/dreamina``.

Endpoints (each requires a signed-in Airflow user and shows only DAGs that user may read):

- ``GET /dreamina/``: the page (filters ``dag_id``, ``day``, ``request_id``; paging ``before``);
- ``GET /dreamina/api/generations``: the same generations as JSON;
- ``GET /dreamina/media/{event_id}/{index}/video`` and ``.../poster``: the stored file, with
  HTTP Range support, found through the provider's record (never through a path in the request)
  and served only while it holds the bytes that record names (:mod:`integrity`);
- ``GET /dreamina/requests/{request_id}/video``, ``.../poster``, ``.../page``: redirects to the
  newest stored video of a request (links in review requests and extra links use these).

Every answer, errors included, carries the security headers of :data:`page.SECURITY_HEADERS`.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from airflow.api_fastapi.common.db.common import SessionDep
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_dreamina.models import is_request_id
from airflow_provider_dreamina.plugins import access, catalog, files, integrity, page, streaming
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


def _open(recorded: RecordedFile) -> files.StoredFile:
    try:
        return files.open_stored(recorded.uri, recorded.conn_id)
    except files.StoredFileMissing:
        raise HTTPException(410, f"{recorded.name} is not in its storage any more") from None
    except files.StoredFileRefused as error:
        raise HTTPException(404, f"{recorded.name} is not served: {error}") from None


def _open_verified(recorded: RecordedFile) -> files.StoredFile:
    """A video or poster, opened and holding exactly the bytes recorded (409 when it does not)."""
    if recorded.sha256 is None or recorded.size is None:
        raise HTTPException(404, f"{recorded.name} is not served: no size and SHA-256 were recorded")
    stored = _open(recorded)
    try:
        integrity.verified.verify(stored, sha256=recorded.sha256, size=recorded.size)
    except (integrity.NotAsRecorded, files.StoredFileChanged) as error:
        stored.close()
        raise HTTPException(
            409, f"{recorded.name} is not the file that was recorded ({error}); it is not served"
        ) from None
    except BaseException:
        stored.close()
        raise
    return stored


def _poster(poster: RecordedFile) -> files.StoredFile:
    """The poster, opened and as recorded, if it is an image of its type and of a poster's size."""
    stored = _open_verified(poster)
    if (
        stored.size > MAX_POSTER_BYTES
        or poster.content_type not in IMAGE_TYPES
        or not stored.read_at(0, 16).startswith(_IMAGE_MAGIC[poster.content_type])
    ):
        stored.close()
        raise HTTPException(404, "This video has no poster")
    return stored


def _serve(
    request: Request, recorded: RecordedFile, stored: files.StoredFile, *, etag: str | None
) -> Response:
    return streaming.file_response(
        request, stored, content_type=recorded.content_type, etag=etag, download_name=recorded.name
    )


class _Guarded:
    """Adds :data:`page.SECURITY_HEADERS` to every answer, errors of the server included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [
            (name.lower().encode(), value.encode()) for name, value in page.SECURITY_HEADERS.items()
        ]
        self.names = {name for name, _ in self.headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in self.names
                ]
                message = {**message, "headers": [*kept, *self.headers]}
            await send(message)

        await self.app(scope, receive, guarded)


class _GalleryApi(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # Outside Starlette's own error middleware, so its 500 answers are guarded too.
        return _Guarded(super().build_middleware_stack())


def create_app() -> FastAPI:
    """The gallery app; Airflow mounts it at ``URL_PREFIX`` (see :mod:`plugin`)."""
    app = _GalleryApi(title="Dreamina gallery", docs_url=None, redoc_url=None, openapi_url=None)

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
        stored = _open_verified(generation.video)
        return _serve(request, generation.video, stored, etag=generation.video.sha256)

    @app.api_route("/media/{event_id}/{index}/poster", methods=["GET", "HEAD"])
    def poster(
        request: Request, user: access.SignedInUser, session: SessionDep, event_id: int, index: int
    ) -> Response:
        generation = _recorded(session, user, event_id, index)
        if not generation.playable or generation.poster is None:
            raise HTTPException(404, "This video has no poster")
        return _serve(request, generation.poster, _poster(generation.poster), etag=generation.poster.sha256)

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
