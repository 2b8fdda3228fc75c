"""Image names end where they seem to: "$" in a regex also matches before a trailing newline,
so "img\n" passed every name check and made an image directory whose name breaks one-line
output (found by the round-2 review)."""

from __future__ import annotations

from datetime import date

import msgspec
import pytest

from bootmedia.capture.plan import suggest_name
from bootmedia.disks.model import Disk
from bootmedia.errors import UsageError
from bootmedia.repo.manifest import Name, check_image_name
from bootmedia.repo.paths import is_plain_name
from bootmedia.repo.store import NAME_RE


@pytest.mark.parametrize("name", ["img\n", "img\r\n", "golden\n", "a\nb"])
def test_a_name_with_a_newline_is_refused_everywhere(name: str) -> None:
    with pytest.raises(UsageError, match="bad image name"):
        check_image_name(name)
    assert NAME_RE.match(name) is None
    assert not is_plain_name(name)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(name, Name)


@pytest.mark.parametrize("name", ["golden", "win11-23H2_v2.1", "a" * 128])
def test_ordinary_names_still_pass(name: str) -> None:
    check_image_name(name)
    assert NAME_RE.match(name)
    assert msgspec.convert(name, Name) == name


def test_a_name_of_129_characters_is_refused() -> None:
    with pytest.raises(UsageError):
        check_image_name("a" * 129)


DAY = date(2026, 12, 2)


def _disk(model: str = "", vendor: str = "", backing_file: str = "") -> Disk:
    return Disk("sdb", "/dev/sdb", 1 << 40, model=model, vendor=vendor, backing_file=backing_file)


@pytest.mark.parametrize(
    ("disk", "want"),
    [
        (_disk(model="Samsung SSD 970 EVO Plus 1TB"), "Samsung-SSD-970-EVO-Plus-1TB-20261202"),
        (_disk(model="  WDC  WD10EZEX-08WN4A0 "), "WDC-WD10EZEX-08WN4A0-20261202"),
        (_disk(model="\x1b[31mEvil\u202e disk\n"), "Evil-disk-20261202"),
        (_disk(model="Ünïcode Disk"), "Unicode-Disk-20261202"),
        (_disk(model="x" * 90), "x" * 40 + "-20261202"),
        (_disk(backing_file="/srv/lab/newpc-1.img"), "newpc-1-20261202"),
        (_disk(vendor="Kingston"), "Kingston-20261202"),
        (_disk(model="---", vendor="...."), "disk-20261202"),
    ],
)
def test_a_captures_suggested_name_is_what_a_technician_recognises(disk: Disk, want: str) -> None:
    """The model (or a loop device's file, or the vendor) and the day, never the kernel name
    (sdb moves between boots), always a name the repository takes."""
    name = suggest_name(disk, DAY)
    assert name == want
    check_image_name(name)
    assert "sdb" not in name
    assert suggest_name(disk, DAY) == name  # stable


def test_a_taken_suggestion_gets_the_next_number() -> None:
    disk = _disk(model="Samsung SSD")
    taken = {"Samsung-SSD-20261202", "Samsung-SSD-20261202-2"}
    assert suggest_name(disk, DAY, taken) == "Samsung-SSD-20261202-3"
