"""Hostile review: hostnames with a trailing newline passed the checks (re.match and '$'), and a
pattern width like {n:99999999999} was a MemoryError instead of a one-line refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootmedia.customize.names import Machine, NameRule, lookup_csv, name_problem, render
from bootmedia.errors import UsageError


@pytest.mark.parametrize("name", ["web1\n", "a.b\n", "web1\r", "web 1", "web1\x00"])
@pytest.mark.parametrize("os_kind", ["linux", "windows"])
def test_control_characters_refused(name: str, os_kind: str) -> None:
    assert name_problem(name, os_kind) is not None


def test_good_names_still_pass() -> None:
    assert name_problem("lab-pc-01.example", "linux") is None
    assert name_problem("LAB-PC-01", "windows") is None


@pytest.mark.parametrize("pattern", ["pc-{n:99999999999}", "pc-{n:300000000}", "pc-{serial:>{n}}"])
def test_huge_pattern_widths_refused(pattern: str) -> None:
    with pytest.raises(UsageError):
        render(NameRule("pattern", pattern), Machine(serial="ABC"), 5)


def test_small_widths_still_work() -> None:
    assert render(NameRule("pattern", "pc-{n:03}"), Machine(serial="ABC"), 5) == "pc-005"


def test_csv_with_a_huge_field_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "names.csv"
    f.write_text('ABC,"' + "x" * 200_000 + '"\n')
    with pytest.raises(UsageError, match="not a names CSV"):
        lookup_csv(f, Machine(serial="ABC"))
