"""What the emulator tells about its model and its account, shaped like RunComfy's undocumented answers.

The model's catalog entry (``GET /v1/models/{model_id}``) carries the price and the input schema,
as RunComfy's own CLI and MCP server read them; the balance (``GET /prod/v2/balance``, on the
account host in RunComfy's case and on the emulator's own port here) carries ``balance_usd`` and
``currency``.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_dreamina.emulator.settings import EmulatorConfig
from airflow_provider_dreamina.emulator.validation import (
    DEFAULT_FRAMES,
    DEFAULT_SEED,
    FRAME_COUNTS,
    MAX_PROMPT_CHARS,
)

BALANCE_PATH = "/prod/v2/balance"

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["prompt", "image_urls"],
    "properties": {
        "prompt": {"type": "string", "maxLength": MAX_PROMPT_CHARS},
        "image_urls": {
            "type": "array",
            "items": {"type": "string", "format": "uri"},
            "minItems": 1,
            "maxItems": 1,
        },
        "seed": {"type": "integer", "default": DEFAULT_SEED},
        "frames": {"type": "integer", "enum": list(FRAME_COUNTS), "default": DEFAULT_FRAMES},
    },
}


def model_entry(model_id: str, config: EmulatorConfig) -> dict[str, Any]:
    """The catalog entry of the emulated model at the configured price."""
    per = "second of video" if config.price_unit == "second" else "video"
    return {
        "model_id": model_id,
        "display_name": "Dreamina 3.0 Pro image-to-video (emulated)",
        "categories": ["video"],
        "kind": "image-to-video",
        "input_schema": INPUT_SCHEMA,
        "base_price_usd": config.price_usd,
        "price_unit": config.price_unit,
        "pricing_note": f"{config.price_usd} USD per {per}",
    }


def balance_answer(balance_usd: float | None) -> dict[str, Any]:
    """The account's balance; an unlimited emulator balance is answered without ``balance_usd``."""
    answer: dict[str, Any] = {"currency": "USD"}
    if balance_usd is not None:
        answer["balance_usd"] = round(balance_usd, 6)
    return answer
