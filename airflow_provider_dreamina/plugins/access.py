"""Who is asking the gallery, and which DAGs' generations they may see.

Airflow does not protect a plugin's FastAPI app: every endpoint of the gallery depends on
:data:`SignedInUser`, which is Airflow's own ``get_user`` (a JWT in the ``Authorization`` header
or the UI's ``_token`` cookie; 401 without one, 403 for a bad one), and shows only what the auth
manager lets that user read (``GET`` on the DAG).
"""

from __future__ import annotations

from typing import Annotated, Any

from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends

#: The signed-in Airflow user of a request (Airflow's own dependency; raises 401 or 403).
SignedInUser = Annotated[Any, Depends(get_user)]


def readable_dag_ids(user: Any) -> set[str]:
    """The DAGs whose generations ``user`` may see: those they may read."""
    from airflow.api_fastapi.app import get_auth_manager

    dag_ids: set[str] = get_auth_manager().get_authorized_dag_ids(user=user, method="GET")
    return dag_ids


def login_url(next_url: str) -> str | None:
    """Where to sign in (the auth manager's page), for the page shown to a signed-out browser."""
    from airflow.api_fastapi.app import get_auth_manager

    try:
        url: str = get_auth_manager().get_url_login(next_url=next_url)
    except Exception:  # an auth manager without a login page still gets the 401
        return None
    return url
