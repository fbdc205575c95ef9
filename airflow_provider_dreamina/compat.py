"""The few names whose home differs between the Airflow versions the provider supports (3.1+)."""

from __future__ import annotations

try:
    from airflow.sdk.exceptions import AirflowFailException, AirflowRescheduleException, AirflowSensorTimeout
except ImportError:  # Airflow 3.1 keeps them in core only; 3.3 deprecates that location.
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
    )

__all__ = ["AirflowFailException", "AirflowRescheduleException", "AirflowSensorTimeout", "default_deferrable"]


def default_deferrable() -> bool:
    """``[operators] default_deferrable``, read when an operator is built."""
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 3.1 keeps the configuration in core only
        from airflow.configuration import conf
    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))
