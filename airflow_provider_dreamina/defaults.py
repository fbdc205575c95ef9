"""Names and defaults that DAG files see, kept free of imports so parsing a DAG stays cheap."""

from __future__ import annotations

DEFAULT_MODEL_ID = "bytedance/dreamina-3-0/pro/image-to-video"
DEFAULT_CONN_ID = "dreamina_default"
CONN_TYPE = "dreamina"

#: XCom key of the request id every task that starts or follows a request pushes.
XCOM_REQUEST_ID = "request_id"
#: XCom key of the first output URL of a succeeded request (the "Dreamina video" link).
XCOM_OUTPUT_URL = "output_url"

#: How much longer than a trigger's own deadline Airflow waits before it times a deferral out.
DEFER_TIMEOUT_MARGIN_SECONDS = 120
