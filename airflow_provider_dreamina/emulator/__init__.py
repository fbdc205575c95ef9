"""A local emulator of RunComfy's Model API serving Dreamina 3.0 Pro image-to-video.

It runs as its own process (`python -m airflow_provider_dreamina.emulator --port 0`) and is steered
over HTTP under `/_emulator`, so tests, demos, end-to-end runs and benchmarks in other processes can
share it. Importing this package loads only the control client; the server lives in `server`.
"""

from __future__ import annotations

from airflow_provider_dreamina.emulator.control import (
    EmulatorClient,
    EmulatorError,
    EmulatorHandle,
    run_emulator,
)
from airflow_provider_dreamina.emulator.settings import DEFAULT_TOKEN, MODEL_ID

__all__ = ["DEFAULT_TOKEN", "MODEL_ID", "EmulatorClient", "EmulatorError", "EmulatorHandle", "run_emulator"]
