"""Extra links the provider's tasks show in the Airflow UI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator, BaseOperatorLink

from airflow_provider_dreamina.defaults import XCOM_OUTPUT_URL

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey


class DreaminaOutputLink(BaseOperatorLink):
    """Link to the first output video of the request, once it exists (RunComfy's URL: it expires)."""

    name = "Dreamina video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        url = XCom.get_value(ti_key=ti_key, key=XCOM_OUTPUT_URL)
        return str(url) if url else ""
