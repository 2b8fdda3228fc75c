"""Hostile review: --size and --partitions values that once raised or ran away."""

from __future__ import annotations

import time

import pytest

from bootmedia.errors import UsageError
from bootmedia.layout import parse_size
from bootmedia.layout.choose import parse_numbers


@pytest.mark.parametrize("text", ["3=inf", "3=1e400", "3=-inf", "3=nan", "3=0", "3=-1G"])
def test_size_hostile_values_are_one_line(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


@pytest.mark.parametrize("text", ["1-99999999999", "99999999999", "1,2-1000000000000"])
def test_partitions_huge_numbers_refused_at_once(text: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(UsageError):
        parse_numbers(text)
    assert time.monotonic() - t0 < 1


@pytest.mark.parametrize("text", ["0", "a", "1,,a", "-1", "", ",", "1-", "1,5-2"])
def test_partitions_bad_lists(text: str) -> None:
    with pytest.raises(UsageError):
        parse_numbers(text)


def test_partitions_duplicates_collapse() -> None:
    assert parse_numbers("1,1,2-3") == (1, 2, 3)
