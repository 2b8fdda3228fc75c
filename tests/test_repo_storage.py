"""Storage: the read side of a repository. Paths stay inside it; every failure is an ImageError."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootmedia.errors import ImageError
from bootmedia.repo.storage import LocalStorage, MissingFile, StorageError


def test_local_storage_reads(tmp_path: Path) -> None:
    (tmp_path / "packs").mkdir()
    (tmp_path / "packs" / "a.bmp").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "x.json").write_bytes(b"{}")
    s = LocalStorage(tmp_path)
    assert s.read_bytes("x.json") == b"{}"
    assert s.pread("packs/a.bmp", 250, 10) == bytes([250, 251, 252, 253, 254, 255, 0, 1, 2, 3])
    assert s.pread("packs/a.bmp", 1020, 100) == bytes([252, 253, 254, 255])  # short at the end
    assert s.size("packs/a.bmp") == 1024
    assert s.exists("packs/a.bmp") and not s.exists("packs/b.bmp")
    assert s.listdir("packs") == ["a.bmp"]
    assert "packs" in s.listdir("")
    s.close()


@pytest.mark.parametrize(
    "rel", ["/etc/passwd", "../outside", "images/../../outside", "a\\b", "a\x00"]
)
def test_local_storage_refuses_paths_outside(tmp_path: Path, rel: str) -> None:
    (tmp_path.parent / "outside").write_text("secret")
    s = LocalStorage(tmp_path)
    for call in (
        lambda: s.read_bytes(rel),
        lambda: s.pread(rel, 0, 1),
        lambda: s.size(rel),
        lambda: s.exists(rel),
        lambda: s.listdir(rel),
    ):
        with pytest.raises(StorageError):
            call()


def test_local_storage_failures_are_image_errors(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path)
    with pytest.raises(MissingFile, match=r"gone\.json is missing"):
        s.read_bytes("gone.json")
    with pytest.raises(MissingFile):
        s.pread("gone.bmp", 0, 1)
    (tmp_path / "dir").mkdir()
    with pytest.raises(ImageError, match="dir"):
        s.read_bytes("dir")
    (tmp_path / "big").write_bytes(bytes(100))
    with pytest.raises(ImageError, match="too big"):
        s.read_bytes("big", limit=10)
    with pytest.raises(ImageError, match="bad read"):
        s.pread("big", -1, 1)
    with pytest.raises(ImageError, match="dir"):
        s.read_bytes("dir")
