"""Hypothesis strategies for answers nobody on the team wrote, and the profiles that bound them.

An answer is anything RunComfy (or a proxy, or an attacker in its place) could send: any status,
any headers (``Retry-After``, ``Content-Length`` and ``Content-Encoding`` garbage included), a
body of any JSON value in any position (numbers where text belongs, nulls, objects, ``1e999``,
``NaN``, duplicate keys, invalid UTF-8, nesting near the bound), or a transport failure. Known
fields are drawn both plausible and hostile, so generated answers reach deep into the parsers
instead of stopping at the first type check; the API token is planted in values, keys, nested
lists, error messages, ``detail`` and the status line, padded so that every cut the provider
makes (200, 300, 500, 2,000 and 4,000 characters) can land inside it.

Profiles: ``default`` (what ``make test`` runs: a bounded, derandomized number of examples) and
``fuzz`` (``make fuzz``: many more, random, with the example database kept so a failure replays).
Pick one with ``HYPOTHESIS_PROFILE``; ``FUZZ_EXAMPLES`` sets the fuzz profile's count.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from airflow_provider_dreamina.runcomfy.reading import MAX_JSON_DEPTH

_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
# The same examples on every run (derandomized), so nothing to keep between runs.
settings.register_profile(
    "default",
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=_SLOW_IS_FINE,
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "2000")),
    deadline=None,
    suppress_health_check=_SLOW_IS_FINE,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
#: pytest-timeout's limit for one property test: none when fuzzing (thousands of examples).
TIMEOUT_SECONDS = 0 if settings().max_examples > 500 else 600

#: The connection's API token in every property; long and plain, like RunComfy's.
TOKEN = "rc-live-7f3a9c2e5b1d4f6a8c0e2b4d6f8a1c3e"
#: The lengths the provider cuts texts to, so a planted token can straddle each cut.
CUTS = (50, 80, 200, 300, 500, 2000, 4000, 8192)
#: HTTP codes RunComfy's documentation and clients name, and a few that nobody should send.
STATUSES = (
    200,
    201,
    202,
    204,
    301,
    302,
    303,
    307,
    400,
    401,
    402,
    403,
    404,
    409,
    410,
    422,
    429,
    500,
    502,
    503,
)
#: RunComfy's documented error codes.
ERROR_CODES = (400001, 400002, 400004, 403001, 404001, 422001, 500001)
REQUEST_ID = "r1"


# -- raw JSON: values json.dumps cannot write -----------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written as is: ``1e999``, ``NaN``, a 5,000-digit number, invalid UTF-8."""

    text: bytes


@dataclass(frozen=True)
class Obj:
    """A JSON object as pairs, so a key may repeat (the last one wins in Python's parser)."""

    pairs: tuple[tuple[str, Any], ...]


def encode(value: Any, ascii_only: bool = False) -> bytes:
    """``value`` as JSON text, with :class:`Raw` and :class:`Obj` written as they say."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Obj):
        items = (encode(key, ascii_only) + b": " + encode(item, ascii_only) for key, item in value.pairs)
        return b"{" + b", ".join(items) + b"}"
    if isinstance(value, (list, tuple)):
        return b"[" + b", ".join(encode(item, ascii_only) for item in value) + b"]"
    if isinstance(value, float) and value != value:
        return b"NaN"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return b"Infinity" if value > 0 else b"-Infinity"
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


SPECIAL_NUMBERS = st.sampled_from(
    [
        Raw(b"1e999"),
        Raw(b"-1e999"),
        Raw(b"NaN"),
        Raw(b"Infinity"),
        Raw(b"-Infinity"),
        Raw(b"1e308"),
        Raw(b"-0"),
        Raw(b"0.1e-400"),
        Raw(b"9" * 400),
        Raw(b"9" * 4301),  # past Python's digit limit: the whole body is not JSON then
        Raw(b"123456789012345678901234567890.5"),
    ]
)
BROKEN_TEXT = st.sampled_from([Raw(b'"\xff\xfe"'), Raw(b'"\xc3"'), Raw(b'"\\ud800"'), Raw(b'"a\x00b"')])


def padded(core: str) -> st.SearchStrategy[str]:
    """``core`` alone, inside short text, or after padding that puts a cut inside it."""
    near_a_cut = st.builds(
        lambda cut, back, pad: pad * max(0, cut - back),
        st.sampled_from(CUTS),
        st.integers(0, len(core) + 8),
        st.sampled_from(["x", " ", "é", "a b "]),
    )
    return st.builds(
        lambda before, after: before + core + after,
        st.one_of(st.just(""), st.text(max_size=12), near_a_cut),
        st.one_of(st.just(""), st.text(max_size=12), st.just("...")),
    )


TOKEN_TEXT = st.one_of(
    padded(TOKEN),
    padded(f"Bearer {TOKEN}"),
    padded(f"Authorization: Bearer {TOKEN}"),
    padded(f"https://user:{TOKEN}@model-api.runcomfy.net/v1/x?token={TOKEN}"),
    padded(f"https://model-api.runcomfy.net/{TOKEN}/out.mp4"),
    padded(f"{TOKEN}{TOKEN}"),
)
URLS = st.one_of(
    st.sampled_from(
        [
            "https://out.runcomfy.net/v.mp4",
            "https://out.runcomfy.net/v.mp4?X-Amz-Signature=5ecret",
            "http://169.254.169.254/latest/meta-data",
            "https://out.runcomfy.net/a b.mp4",
            "https://out.runcomfy.net/\n.mp4",
            "",
        ]
    ),
    st.builds(lambda n: "https://out.runcomfy.net/" + "v" * n, st.sampled_from([8150, 8167, 8168, 8300])),
    TOKEN_TEXT,
)
TEXT = st.one_of(st.text(max_size=40), TOKEN_TEXT, BROKEN_TEXT)
KEYS = st.one_of(st.text(max_size=10), st.sampled_from(["body", "loc", "msg", "message", "type"]), TOKEN_TEXT)
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    SPECIAL_NUMBERS,
)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=3),
        st.builds(Obj, st.lists(st.tuples(KEYS, children), max_size=3).map(tuple)),
    )


ANY_JSON = st.recursive(LEAVES, _containers, max_leaves=6)


def _nested(value: Any, depth: int, as_object: bool) -> Any:
    for _ in range(depth):
        value = Obj((("a", value),)) if as_object else [value]
    return value


#: Any JSON value nested right around ``MAX_JSON_DEPTH``.
DEEP_JSON = st.builds(_nested, ANY_JSON, st.integers(MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH + 2), st.booleans())


def _or_any(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Mostly plausible, so the parsers behind the first type check are reached too.
    return st.one_of(plausible, plausible, plausible, ANY_JSON)


LOCATIONS = _or_any(st.lists(st.one_of(st.sampled_from(["body", "prompt", "image_urls"]), NUMBERS, TEXT)))
PROBLEMS = st.lists(
    _or_any(
        st.builds(
            lambda loc, msg, given: Obj((("loc", loc), ("msg", msg), ("input", given))),
            st.one_of(LOCATIONS, st.none(), NUMBERS),
            TEXT,
            ANY_JSON,
        )
    ),
    max_size=3,
)
MESSAGES = _or_any(
    st.one_of(
        TEXT,
        st.builds(lambda message: Obj((("type", "server_error"), ("message", message))), TEXT),
        st.builds(lambda message: Obj((("msg", message),)), TEXT),
        PROBLEMS,
    )
)
ERROR_CODE = st.one_of(
    st.sampled_from(ERROR_CODES),
    st.sampled_from([0, "", False, True, None, "500001", 500001.0, " 400002 ", -1, 10**12, [], {}]),
    SPECIAL_NUMBERS,
    ANY_JSON,
)
TIMES = _or_any(
    st.sampled_from(
        [
            "2026-01-01T00:00:00",
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:01:00+14:00",
            "0001-01-01T00:00:00",
            "9999-12-31T23:59:59.999999-23:59",
            "yesterday",
            "",
        ]
    )
)
STATUS_WORDS = _or_any(
    st.one_of(
        st.sampled_from(
            [
                "in_queue",
                "in_progress",
                "completed",
                "succeeded",
                "failed",
                "cancelled",
                "canceled",
                "error",
                "pending",
                "COMPLETED ",
                "weird",
                "",
                "x\n2026-01-01 INFO forged",
            ]
        ),
        TOKEN_TEXT,
    )
)
REQUEST_IDS = _or_any(st.sampled_from([REQUEST_ID, REQUEST_ID, "..", "r1\nforged", "a" * 201, "../x"]))
OUTPUTS = _or_any(
    st.builds(
        lambda pairs: Obj(tuple(pairs)),
        st.lists(
            st.tuples(
                st.sampled_from(["video", "videos", "image", "images", "other"]),
                st.one_of(URLS, st.lists(URLS, max_size=3), ANY_JSON),
            ),
            max_size=4,
        ),
    )
)

#: Each field any answer of the API may carry, with what is drawn for it.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "request_id": REQUEST_IDS,
    "status": STATUS_WORDS,
    "status_url": _or_any(URLS),
    "result_url": _or_any(URLS),
    "cancel_url": _or_any(URLS),
    "queue_position": _or_any(NUMBERS),
    "output": OUTPUTS,
    "created_at": TIMES,
    "finished_at": TIMES,
    "error": MESSAGES,
    "cost": _or_any(NUMBERS),
    "outcome": _or_any(st.sampled_from(["cancelled", "canceled", "not_cancellable", ""])),
    "error_code": ERROR_CODE,
    "error_message": MESSAGES,
    "message": MESSAGES,
    "detail": _or_any(st.one_of(PROBLEMS, TEXT)),
    "model_id": _or_any(TEXT),
    "base_price_usd": _or_any(NUMBERS),
    "price_unit": _or_any(st.sampled_from(["output", "second", "Second ", "frame"])),
    "input_schema": ANY_JSON,
    "balance_usd": _or_any(NUMBERS),
    "currency": _or_any(TEXT),
}


@st.composite
def answer_objects(draw: st.DrawFn, likely: tuple[str, ...] = ()) -> Obj:
    """A JSON object with some known fields (``likely`` ones more often) and a few unknown ones."""
    names = list(likely) + draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=5))
    pairs = [(name, draw(FIELDS[name])) for name in names if draw(st.integers(0, 5)) > 0]
    pairs += draw(st.lists(st.tuples(KEYS, ANY_JSON), max_size=2))
    return Obj(tuple(draw(st.permutations(pairs))))


@functools.cache
def bodies(likely: tuple[str, ...] = ()) -> st.SearchStrategy[bytes]:
    objects = answer_objects(likely)
    return st.one_of(
        st.builds(encode, objects, st.booleans()),
        st.builds(encode, objects, st.booleans()),
        st.builds(encode, objects, st.booleans()),
        st.builds(encode, st.one_of(ANY_JSON, DEEP_JSON)),
        st.builds(lambda body, cut: body[:cut], st.builds(encode, objects), st.integers(0, 40)),
        st.binary(max_size=40),
        st.just(b""),
    )


HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            b"1e999",
            b"nan",
            b"-1",
            b"0",
            b"0.01",
            b"2",
            b"99999999999999999999",
            "\u00b2".encode(),  # a digit to str.isdigit, not to int()
            "\u0663".encode(),  # an Arabic-Indic three
            b"Wed, 21 Oct 2015 07:28:00 GMT",
            b"Fri, 31 Dec 9999 23:59:59 GMT",
            b"gzip",
            b"br",
            b"identity",
            b" IDENTITY ",
            b"\xff\xfe",
            b"application/json; charset=utf-16",
            TOKEN.encode(),
        ]
    ),
    st.binary(max_size=16).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b"")),
)
HEADERS = st.lists(
    st.tuples(
        st.sampled_from(
            [b"Retry-After", b"Content-Length", b"Content-Encoding", b"Content-Type", b"X-Echo", b"Location"]
        ),
        HEADER_VALUES,
    ),
    max_size=3,
)
REASONS = st.one_of(st.none(), st.just(b"OK"), TOKEN_TEXT.map(lambda text: text.encode()[:300]))


@dataclass(frozen=True)
class Reply:
    """An answer the transport hands back."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    reason: bytes | None = None

    def response(self, request: httpx.Request) -> httpx.Response:
        # A stream, not ``content``: httpx would decode a declared Content-Encoding on the spot.
        return httpx.Response(
            self.status,
            headers=list(self.headers),
            stream=httpx.ByteStream(self.body),
            request=request,
            extensions={} if self.reason is None else {"reason_phrase": self.reason},
        )


#: Transport failures: the first three prove the request never left; the others do not.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
FAILURES = (
    *NOT_SENT,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.LocalProtocolError,
    httpx.ProxyError,
    httpx.DecodingError,
    RuntimeError,
    ValueError,
    KeyError,
    OSError,
    RecursionError,
)


@dataclass(frozen=True)
class Failure:
    """A failure the transport raises instead of answering."""

    kind: type[Exception]
    message: str

    def raise_for(self, request: httpx.Request) -> None:
        if issubclass(self.kind, httpx.RequestError):
            raise self.kind(self.message, request=request)
        raise self.kind(self.message)

    @property
    def not_sent(self) -> bool:
        return issubclass(self.kind, NOT_SENT)


Outcome = Reply | Failure


@functools.cache
def replies(
    likely: tuple[str, ...] = (), statuses: st.SearchStrategy[int] | None = None
) -> st.SearchStrategy[Reply]:
    return st.builds(
        Reply,
        statuses or st.one_of(st.sampled_from(STATUSES), st.sampled_from(STATUSES), st.integers(100, 999)),
        bodies(likely),
        HEADERS.map(tuple),
        REASONS,
    )


FAILURES_DRAWN = st.builds(Failure, st.sampled_from(FAILURES), st.one_of(st.just("boom"), TOKEN_TEXT))


@functools.cache
def outcomes(likely: tuple[str, ...] = ()) -> st.SearchStrategy[Outcome]:
    reply = replies(likely)
    return st.one_of(reply, reply, reply, FAILURES_DRAWN)


def call_of(method: str, path: str) -> str:
    """Which API call a request is: submit, model, status, result, cancel or balance."""
    if path.startswith("/v1/models/"):
        return "submit" if method == "POST" else "model"
    return path.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class Script:
    """Hands out scripted outcomes per call; once a call's run out, it answers ``after`` (401 by
    default: a typed error retrying cannot fix, so every wait ends)."""

    by_call: dict[str, list[Outcome]] = field(default_factory=dict)
    after: Outcome = Reply(401, b'{"error_code": 400004, "error_message": "token expired"}')
    #: (call, outcome) of every request the transport saw, in order.
    sent: list[tuple[str, Outcome]] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        call = call_of(request.method, request.url.path)
        queue = self.by_call.get(call, [])
        outcome = queue.pop(0) if queue else self.after
        self.sent.append((call, outcome))
        if isinstance(outcome, Failure):
            outcome.raise_for(request)
        assert isinstance(outcome, Reply)
        return outcome.response(request)

    def transports(self) -> tuple[httpx.MockTransport, httpx.MockTransport]:
        return httpx.MockTransport(self.handler), httpx.MockTransport(self.handler)

    def outcomes_of(self, call: str) -> list[Outcome]:
        return [outcome for sent_call, outcome in self.sent if sent_call == call]


def scripted_hook(script: Script, max_retries: int = 0, **settings: Any) -> Any:
    """A hook whose sync and async clients are answered by ``script``, retrying within microseconds."""
    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
    from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings

    sync, asynchronous = script.transports()
    hook = DreaminaHook(
        transport=sync, async_transport=asynchronous, retry_backoff=0.0001, max_retry_wait=0.001
    )
    hook._settings = DreaminaSettings(
        conn_id="dreamina_default",
        base_url="https://model-api.runcomfy.test",
        token=TOKEN,
        max_retries=max_retries,
        **settings,
    )
    return hook
