"""Registers the gallery with Airflow: a FastAPI app on the API server and a navigation entry.

Every Airflow process that loads plugins imports this module (schedulers and workers too), so it
stays cheap: the FastAPI app is built on the first request the API server passes to it.
"""

from __future__ import annotations

import threading
from typing import Any

try:  # Airflow 3.3: the Task SDK's own copy, so a worker need not import Airflow's core for it
    from airflow.sdk.plugins_manager import AirflowPlugin
except ImportError:  # Airflow 3.1 and 3.2
    from airflow.plugins_manager import AirflowPlugin  # type: ignore[assignment]

URL_PREFIX = "/dreamina"
# A film frame, drawn in the colour of Airflow's navigation icons.
_ICON = (
    "data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' "
    "stroke='%2351504f' stroke-width='2' stroke-linecap='round' stroke-linejoin='round'>"
    "<rect x='2' y='4' width='20' height='16' rx='2'/><path d='M10 9l5 3-5 3z'/></svg>"
)
_ICON_DARK = _ICON.replace("%2351504f", "%23d6d9de")


class _GalleryApp:
    """An ASGI app that builds the gallery's FastAPI app when it first receives a request."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        with self._lock:
            if self._app is None:
                from airflow_provider_dreamina.plugins.gallery import create_app

                self._app = create_app()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # nothing to set up or tear down
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await (self._app or self._build())(scope, receive, send)

    def __repr__(self) -> str:
        return "airflow_provider_dreamina.plugins.gallery:create_app"


class DreaminaGalleryPlugin(AirflowPlugin):
    """The "Dreamina videos" gallery in the Airflow UI (Airflow 3.1+)."""

    name = "dreamina_gallery"
    fastapi_apps = [{"name": "Dreamina gallery", "app": _GalleryApp(), "url_prefix": URL_PREFIX}]
    external_views = [
        {
            "name": "Dreamina videos",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "dreamina-videos",
            "icon": _ICON,
            "icon_dark_mode": _ICON_DARK,
        }
    ]
