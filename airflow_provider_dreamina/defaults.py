"""Names, defaults and modes that DAG files see, kept free of imports so parsing a DAG stays cheap."""

from __future__ import annotations

from typing import Any, Literal, get_args

DEFAULT_MODEL_ID = "bytedance/dreamina-3-0/pro/image-to-video"
DEFAULT_CONN_ID = "dreamina_default"
CONN_TYPE = "dreamina"

#: Dreamina renders 24 frames per second: 121 frames is about 5 s, 241 about 10 s.
FRAMES_PER_SECOND = 24
DEFAULT_FRAMES = 121

#: XCom key of the request id every task that starts or follows a request pushes.
XCOM_REQUEST_ID = "request_id"
#: The manifest beside each stored file is named after it with this suffix added.
MANIFEST_SUFFIX = ".json"
#: Key under which the submit operator keeps its record in ``task_state_store`` (Airflow 3.3+).
STATE_KEY = "dreamina_request"

#: Seconds between status polls while a request runs.
DEFAULT_POLL_INTERVAL = 10.0
#: Transient failed polls in a row (each after the hook's own retries) a wait tolerates.
DEFAULT_MAX_CONSECUTIVE_ERRORS = 5
#: The largest output a download stores unless told otherwise (as RunComfy's own CLI): 2 GiB.
DEFAULT_MAX_BYTES = 2 * 1024**3
#: How long a run of transient failed polls a wait tolerates (an outage of RunComfy's API).
DEFAULT_MAX_ERROR_SECONDS = 15 * 60.0
#: How much longer than a trigger's own deadline Airflow waits before it times a deferral out.
DEFER_TIMEOUT_MARGIN_SECONDS = 120

#: What the submit operator does when an earlier try recorded its intent to pay but no request id.
OnOrphanedSubmit = Literal["fail", "resubmit"]
#: What the submit operator does when a user clears a task whose request already exists.
OnClear = Literal["reuse", "regenerate"]
#: What the download operator does when a file of the same name exists.
IfExists = Literal["fail", "skip", "overwrite"]
#: How the download operator checks a video: its container as it streams, or every frame too.
VerifyMode = Literal["container", "decode"]


def check_mode(name: str, value: object, mode: Any) -> Any:
    """``value`` if it is one of the ``Literal`` ``mode``'s words; raises naming the field otherwise."""
    allowed: tuple[str, ...] = get_args(mode)
    if value not in allowed:
        raise ValueError(f"{name} is {value!r}; use one of {', '.join(map(repr, allowed))}")
    return value
