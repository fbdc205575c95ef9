"""Validation of a submission body against the Dreamina 3.0 Pro image-to-video schema."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import TypedDict

import httpx

from airflow_provider_dreamina.emulator.media import MAX_IMAGE_BYTES, check_image

MAX_PROMPT_CHARS = 800
FRAME_COUNTS = (121, 241)
DEFAULT_SEED = -1
DEFAULT_FRAMES = 121
IMAGE_FETCH_TIMEOUT_SECONDS = 10.0


class ErrorDetail(TypedDict):
    """One entry of a 422 body's `detail` list, shaped like FastAPI's."""

    loc: list[str | int]
    msg: str
    type: str


@dataclass(frozen=True)
class SubmittedInput:
    """A submission that passed every rule, with the input image's dimensions and bytes."""

    prompt: str
    image_url: str
    seed: int
    frames: int
    image_width: int
    image_height: int
    # What the output is rendered from.
    image: bytes = field(default=b"", repr=False)


class ImageFetchError(Exception):
    """The input image could not be obtained from its URI."""


class ImageFetcher:
    """Fetches input images without blocking the event loop (the URL may be the emulator's own)."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    async def fetch(self, url: str) -> bytes:
        """Return the image's bytes, reading at most one byte past the size limit."""
        if self._client is None:
            # trust_env off: a proxy from the environment must not intercept fetches from 127.0.0.1.
            self._client = httpx.AsyncClient(
                timeout=IMAGE_FETCH_TIMEOUT_SECONDS, follow_redirects=True, trust_env=False
            )
        data = bytearray()
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ImageFetchError(f"fetching the image answered HTTP {response.status_code}")
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_IMAGE_BYTES:
                        break
        except httpx.HTTPError as error:
            raise ImageFetchError(f"the image could not be fetched: {type(error).__name__}") from error
        return bytes(data)


def _error(field: str, msg: str, kind: str) -> ErrorDetail:
    return {"loc": ["body", field], "msg": msg, "type": kind}


def _body_error(msg: str, kind: str) -> ErrorDetail:
    return {"loc": ["body"], "msg": msg, "type": kind}


def _decode_data_uri(uri: str) -> bytes:
    header, comma, payload = uri.partition(",")
    if not comma or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ImageFetchError("a data URI must look like data:image/<type>;base64,<data>")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as error:
        raise ImageFetchError("the data URI is not valid base64") from error


def _prompt(document: dict[str, object], errors: list[ErrorDetail]) -> str | None:
    prompt = document.get("prompt")
    if "prompt" not in document:
        errors.append(_error("prompt", "Field required", "missing"))
    elif not isinstance(prompt, str):
        errors.append(_error("prompt", "Input should be a valid string", "string_type"))
    elif not prompt.strip():
        errors.append(_error("prompt", "The prompt must not be blank", "string_too_short"))
    elif len(prompt) > MAX_PROMPT_CHARS:
        message = f"String should have at most {MAX_PROMPT_CHARS} characters, not {len(prompt)}"
        errors.append(_error("prompt", message, "string_too_long"))
    else:
        return prompt
    return None


def _image_url(document: dict[str, object], errors: list[ErrorDetail]) -> str | None:
    image_urls = document.get("image_urls")
    if "image_urls" not in document:
        errors.append(_error("image_urls", "Field required", "missing"))
    elif not isinstance(image_urls, list):
        errors.append(_error("image_urls", "Input should be a valid list", "list_type"))
    elif len(image_urls) != 1:
        message = f"List should have exactly 1 item, not {len(image_urls)}"
        errors.append(_error("image_urls", message, "list_length"))
    elif not isinstance(image_urls[0], str):
        errors.append(_error("image_urls", "Input should be a valid string", "string_type"))
    else:
        return image_urls[0]
    return None


def _seed(document: dict[str, object], errors: list[ErrorDetail]) -> int | None:
    seed = document.get("seed", DEFAULT_SEED)
    # JSON true/false arrive as bool, a subclass of int, and are not seeds.
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    errors.append(_error("seed", "Input should be a valid integer", "int_type"))
    return None


def _frames(document: dict[str, object], errors: list[ErrorDetail]) -> int | None:
    frames = document.get("frames", DEFAULT_FRAMES)
    if isinstance(frames, int) and not isinstance(frames, bool) and frames in FRAME_COUNTS:
        return frames
    errors.append(_error("frames", "Input should be 121 or 241", "literal_error"))
    return None


async def validate_submission(body: bytes, fetcher: ImageFetcher) -> SubmittedInput | list[ErrorDetail]:
    """Check a raw submission body; return the accepted input or every problem found."""
    if not body.strip():
        return [_body_error("Field required: the body must be a JSON object", "missing")]
    try:
        document = json.loads(body)
    # RecursionError: deeply nested arrays; ValueError: bad JSON, bad UTF-8, or over-long integers.
    except (ValueError, RecursionError):
        return [_body_error("The body is not valid JSON", "json_invalid")]
    if not isinstance(document, dict):
        return [_body_error("The body must be a JSON object", "model_attributes_type")]

    errors: list[ErrorDetail] = []
    prompt = _prompt(document, errors)
    image_url = _image_url(document, errors)
    seed = _seed(document, errors)
    frames = _frames(document, errors)
    if prompt is None or image_url is None or seed is None or frames is None:
        return errors

    try:
        if image_url.startswith("data:"):
            image = _decode_data_uri(image_url)
        elif image_url.startswith(("http://", "https://")):
            image = await fetcher.fetch(image_url)
        else:
            raise ImageFetchError("The image must be an http(s) URL or a data:image/...;base64 URI")
    except ImageFetchError as error:
        return [_error("image_urls", str(error), "image_fetch")]
    check = check_image(image)
    if check.problems or check.width is None or check.height is None:
        return [_error("image_urls", problem.message, problem.kind) for problem in check.problems]
    return SubmittedInput(prompt, image_url, seed, frames, check.width, check.height, image)
