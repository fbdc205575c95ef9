"""HTTP Range: what a player asks for when it seeks, and what it gets."""

from __future__ import annotations

import pytest

from airflow_provider_dreamina.plugins.streaming import ByteRange, RangeNotSatisfiable, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("bytes=0-", ByteRange(0, 999)),
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=500-", ByteRange(500, 999)),
        ("bytes=900-5000", ByteRange(900, 999)),  # the end is clamped to the file
        ("bytes=-100", ByteRange(900, 999)),  # the last 100 bytes
        ("bytes=-5000", ByteRange(0, 999)),
        ("BYTES = 10 - 19", ByteRange(10, 19)),
        ("items=0-10", None),  # another unit: the whole file, as RFC 9110 allows
        ("bytes=0-1,5-9", None),  # several ranges: the whole file
        ("bytes=-", None),
    ],
)
def test_ranges_a_player_sends(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0", "bytes=20-10"])
def test_ranges_outside_the_file_cannot_be_satisfied(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


def test_a_range_knows_its_length() -> None:
    assert ByteRange(10, 19).length == 10
