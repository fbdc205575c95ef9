"""Extra links from a task to the Dreamina gallery's page of its request, and to RunComfy's output.

RunComfy's output URLs expire; the gallery plays the stored video for as long as it is kept. On
Airflow 3 a link is computed in the task's own process when it finishes (or defers) and stored as
an XCom, so ``get_link`` reads what the running task noted (:func:`note`): the request it worked
on and, once succeeded, its first output URL. A task that noted no request (one that failed before
knowing it) falls back to its rendered ``request_id`` field, then to its own ``request_id`` XCom.

The second link, "Dreamina video", is RunComfy's own output URL, for as long as it is valid.

Importing this module costs nothing beyond ``airflow.sdk``: operators attach the links at DAG
parse time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

from airflow_provider_dreamina.defaults import XCOM_REQUEST_ID

#: Where Airflow's API server mounts the gallery (see ``plugins/plugin.py``).
GALLERY_PATH = "/dreamina"


def _api_base_url() -> str:
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 3.1 keeps the configuration in core only
        from airflow.configuration import conf
    base: Any = conf.get("api", "base_url", fallback="") or ""
    return str(base).rstrip("/")


def gallery_url(request_id: str | None = None, kind: str = "page") -> str:
    """The gallery (``kind="page"``), or the newest stored ``"video"`` / ``"poster"`` of a request.

    Absolute when ``[api] base_url`` is set, else relative to the Airflow UI's host.
    """
    base = f"{_api_base_url()}{GALLERY_PATH}"
    if not request_id:
        return f"{base}/"
    if kind == "page":
        return f"{base}/?request_id={quote(request_id, safe='')}"
    return f"{base}/requests/{quote(request_id, safe='')}/{kind}"


def _rendered_request_id(operator: Any) -> str | None:
    value = getattr(operator, "request_id", None)
    if isinstance(value, str):
        value = value.strip()
        if value and value != "None" and "{{" not in value:
            return value
    return None


#: Where a running task keeps what its links show. Airflow computes the links in the task's own
#: process when it finishes or defers, so they need not read back the XComs just pushed (each
#: read is a call to the API server, twice per task that defers).
_NOTED = "_dreamina_links"


def note(operator: Any, *, request_id: str | None = None, output_url: str | None = None) -> None:
    """Remember, on the running task, the request and output its links point to."""
    noted = operator.__dict__.setdefault(_NOTED, {})
    if request_id:
        noted["request_id"] = request_id
    if output_url:
        noted["output_url"] = output_url


def forget(operator: Any) -> None:
    """Start a run with nothing noted (an operator object run twice, as a test may, links anew)."""
    operator.__dict__.pop(_NOTED, None)


def _noted(operator: Any, key: str) -> str | None:
    value = getattr(operator, "__dict__", {}).get(_NOTED, {}).get(key)
    return value if isinstance(value, str) and value else None


def request_id_for(operator: Any, ti_key: Any) -> str | None:
    """The request a task worked on: what it noted while it ran, else its rendered ``request_id``
    field, else its own ``request_id`` XCom."""
    found = _noted(operator, "request_id") or _rendered_request_id(operator)
    if found:
        return found
    from airflow.sdk.execution_time.xcom import XCom

    value = XCom.get_value(ti_key=ti_key, key=XCOM_REQUEST_ID)
    return str(value) if value else None


class DreaminaGalleryLink(BaseOperatorLink):
    """ "Dreamina gallery": the gallery's page of the task's request (its stored video and facts)."""

    name = "Dreamina gallery"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        request_id = request_id_for(operator, ti_key)
        return gallery_url(request_id) if request_id else ""


class DreaminaOutputLink(BaseOperatorLink):
    """Link to the first output video of the request, once it exists (RunComfy's URL: it expires)."""

    name = "Dreamina video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # Noted by the task when its request succeeded (the link is computed in the same process,
        # and stored). The URL came from RunComfy's answer: a link is only ever a web URL, never
        # javascript: or data:.
        url = _noted(operator, "output_url")
        return url if url is not None and url.lower().startswith(("https://", "http://")) else ""
