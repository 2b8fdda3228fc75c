"""Image names end where they seem to: "$" in a regex also matches before a trailing newline,
so "img\n" passed every name check and made an image directory whose name breaks one-line
output (found by the round-2 review)."""

from __future__ import annotations

import msgspec
import pytest

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
