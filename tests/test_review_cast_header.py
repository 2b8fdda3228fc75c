"""Hostile review: a multicast stream header naming a map file "" or with a NUL byte was an
internal error (IsADirectoryError / ValueError), not the one-line 'bad map file' refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootmedia.cast.receiver import _scratch_repo
from bootmedia.cast.stream import StreamHeader
from bootmedia.errors import ImageError


@pytest.mark.parametrize("name", ["", "p1.map\x00", "..", "a/b", ".hidden", "manifest.json"])
def test_hostile_map_names_are_refused(tmp_path: Path, name: str) -> None:
    header = StreamHeader("img", b"{}", {name: b"x"}, 0, 0)
    with pytest.raises(ImageError, match="bad map file"):
        _scratch_repo(tmp_path, header)
    assert not list(tmp_path.rglob("*x00*"))
