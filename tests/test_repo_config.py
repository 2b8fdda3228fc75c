"""bootmedia-repo.json with the wrong types (issue 8, item 5): refused naming the field, and
nothing in the repository changes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bootmedia.errors import ImageError
from bootmedia.repo.store import REPO_FILE, Repository
from tests.minirepo import make_repo


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("version", True),
        ("version", "1"),
        ("version", 1.0),
        ("chunk_size", "64K"),
        ("pack_size", False),
        ("chunk_size", -65536),
    ],
)
def test_wrong_types_are_refused(tmp_path: Path, key: str, value: object) -> None:
    root, _ = make_repo(tmp_path / "repo")
    config = json.loads((root / REPO_FILE).read_text())
    config[key] = value
    (root / REPO_FILE).write_text(json.dumps(config))
    before = digest(root)
    with pytest.raises(ImageError, match=key) as err:
        Repository.open(root)
    assert "\n" not in str(err.value)
    assert digest(root) == before


def test_unknown_version_is_named(tmp_path: Path) -> None:
    root, _ = make_repo(tmp_path / "repo")
    config = json.loads((root / REPO_FILE).read_text())
    config["version"] = 7
    (root / REPO_FILE).write_text(json.dumps(config))
    with pytest.raises(ImageError, match="unknown repository format version 7"):
        Repository.open(root)


@pytest.mark.parametrize("sub", ["packs", "images", "tmp", "trash"])
def test_a_subdirectory_that_is_a_symlink_is_refused(tmp_path: Path, sub: str) -> None:
    """Item 14: a capture into a repository whose packs/ (or tmp/...) points elsewhere would
    write there. Refused at open, and the place it points to is left alone."""
    root, _ = make_repo(tmp_path / "repo")
    outside = tmp_path / "outside"
    (root / sub).rename(outside)
    (root / sub).symlink_to(outside)
    before = digest(outside)
    for write in (False, True):
        with pytest.raises(ImageError, match=f"{sub} is a symbolic link"):
            Repository.open(root, write=write)
    assert digest(outside) == before
