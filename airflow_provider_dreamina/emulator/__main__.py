"""Command line: `python -m airflow_provider_dreamina.emulator --port 0`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from pydantic import ValidationError

from airflow_provider_dreamina.emulator.settings import DEFAULT_TOKEN, EmulatorConfig


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_dreamina.emulator",
        description="A local emulator of RunComfy's Model API serving Dreamina 3.0 Pro image-to-video.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the API token clients must send")
    parser.add_argument("--queue-seconds", type=float, help="time each job waits in the queue")
    parser.add_argument("--run-seconds", type=float, help="time each job runs")
    parser.add_argument(
        "--output-bytes", type=int, help="serve synthetic MP4s of this size instead of rendering videos"
    )
    parser.add_argument(
        "--config", default="{}", help="further startup settings as a JSON object, as POST /_emulator/config"
    )
    arguments = parser.parse_args(argv)

    try:
        settings = json.loads(arguments.config)
    except ValueError:
        parser.error("--config must be a JSON object")
    if not isinstance(settings, dict):
        parser.error("--config must be a JSON object")
    settings["token"] = arguments.token
    for name in ("queue_seconds", "run_seconds", "output_bytes"):
        if getattr(arguments, name) is not None:
            settings[name] = getattr(arguments, name)
    try:
        startup = EmulatorConfig.model_validate(settings)
    except ValidationError as error:
        parser.error(f"invalid settings: {error}")

    # Imported here so that `--help` and bad arguments answer without loading FastAPI and uvicorn.
    from airflow_provider_dreamina.emulator.render import RendererUnavailable, require_renderer
    from airflow_provider_dreamina.emulator.server import serve

    if startup.output_bytes is None:
        try:
            require_renderer()
        except RendererUnavailable as error:
            # Before listening, so `run_emulator` fails at once and shows this in its error.
            parser.exit(1, f"emulator: {error}\n")

    serve(arguments.host, arguments.port, startup)


if __name__ == "__main__":
    main()
